"""Encoders and typed decoders for the wire contract, built once (msgpack on the wire)."""

from __future__ import annotations

import msgspec

from llmaas.wire import CacheEvents, Cancel, Failed, Frame, Heartbeat, Job, Progress, Query, Rows

encoder = msgspec.msgpack.Encoder()
encode = encoder.encode

job_decoder: msgspec.msgpack.Decoder[Job] = msgspec.msgpack.Decoder(Job)
frame_decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)
heartbeat_decoder = msgspec.msgpack.Decoder(Heartbeat)
cancel_decoder = msgspec.msgpack.Decoder(Cancel)
cache_events_decoder = msgspec.msgpack.Decoder(CacheEvents)
progress_decoder = msgspec.msgpack.Decoder(Progress)
query_decoder: msgspec.msgpack.Decoder[Query] = msgspec.msgpack.Decoder(Query)
rows_decoder: msgspec.msgpack.Decoder[Rows | Failed] = msgspec.msgpack.Decoder(Rows | Failed)

DecodeError = msgspec.DecodeError
