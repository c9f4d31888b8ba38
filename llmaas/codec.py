"""Encoders and typed decoders for the wire contract, built once (msgpack on the wire)."""

from __future__ import annotations

import msgspec

from llmaas.wire import Cancel, Frame, Heartbeat, Job

encoder = msgspec.msgpack.Encoder()
encode = encoder.encode

job_decoder: msgspec.msgpack.Decoder[Job] = msgspec.msgpack.Decoder(Job)
frame_decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)
heartbeat_decoder = msgspec.msgpack.Decoder(Heartbeat)
cancel_decoder = msgspec.msgpack.Decoder(Cancel)

DecodeError = msgspec.DecodeError
