"""The edge's side of NATS: submit jobs, route reply frames to waiting requests, cancel, watch workers.

One wildcard subscription receives the frames of every request this edge process has in flight;
the last token of the reply subject says which request a frame belongs to.
A watchdog fails, with one error frame, any request whose worker vanished, that no worker accepted
in time, or whose worker went silent; so no client ever hangs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, MaxPayloadError, NoRespondersError, OutboundBufferLimitError
from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext

from edge.metrics import EdgeMetrics
from edge.settings import EdgeSettings
from llmaas import codec, natsconn, seals, subjects
from llmaas.errors import (
    ClientClosed,
    LlmaasError,
    PayloadTooLarge,
    RemoteError,
    ServerError,
    Unavailable,
    UpstreamFailed,
)
from llmaas.fleet import Fleet
from llmaas.wire import Accepted, Cancel, Delta, Failed, Frame, Job, Screened, WireError

log = logging.getLogger(__name__)

WORKER_GRACE_S = 3.0
"""How long a stream may run on a worker the edge has not yet heard a heartbeat from."""

_NO_RESPONDERS = Failed(
    error=Unavailable(
        "No pipeline stage is consuming requests right now (guard, scheduler or worker down); retry shortly.",
        code="no_consumer",
        retry_after_s=1,
    ).to_wire()
)
_GARBLED = Failed(error=ServerError("A pipeline stage sent an unreadable frame.").to_wire())
OUT_OF_ORDER = ServerError("A worker sent frames out of order.")


class Stream:
    """The frames of one request, in arrival order; the guard's verdict apart (``screened``)."""

    __slots__ = (
        "accepted_at", "dropped_tokens", "last_frame_at", "opened_at", "queue", "request_id", "screened",
        "worker_id",
    )  # fmt: skip

    def __init__(self, request_id: str, now: float) -> None:
        self.request_id = request_id
        self.queue: asyncio.Queue[Frame] = asyncio.Queue()
        self.screened: asyncio.Future[WireError | None] = asyncio.get_running_loop().create_future()
        """The guard's verdict: None when it cleared the job, else the error that ended it."""
        self.worker_id: str | None = None
        self.opened_at = now
        self.accepted_at = now
        self.last_frame_at = now
        self.dropped_tokens = 0
        """Tokens generated but never read: their frames were dropped when the client fell behind."""

    async def next(self) -> Frame:
        return await self.queue.get()

    def settle(self, error: WireError | None) -> None:
        if not self.screened.done():
            self.screened.set_result(error)

    async def started(self) -> Accepted:
        """The worker's ``Accepted`` once the guard has cleared the job; until then nothing of the
        answer leaves. Raises RemoteError with the stage's error (the guard's block among them)."""
        first = await self.next()
        if type(first) is not Accepted:
            raise RemoteError(first.error) if isinstance(first, Failed) else OUT_OF_ORDER
        error = await self.screened
        if error is not None:
            raise RemoteError(error)
        return first


class Pipeline:
    def __init__(
        self,
        settings: EdgeSettings,
        metrics: EdgeMetrics,
        *,
        edge_id: str | None = None,
        attach: Callable[[Client], Awaitable[None]] | None = None,
        on_up: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``attach`` runs once on the first connection (retried until it succeeds); ``on_up`` after
        each reconnection."""
        self.settings = settings
        self._attach = attach
        self._on_up = on_up
        self.metrics = metrics
        self.edge_id = edge_id or secrets.token_hex(6)
        self.fleet = Fleet()
        self._nc: Client | None = None
        self._streams: dict[str, Stream] = {}
        self._orphans: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        key = settings.billing_key
        self._seal_key = key.get_secret_value().encode() if key is not None else None

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Return at once; the connection is made (and remade) in the background."""
        self._background = [asyncio.create_task(self._connect()), asyncio.create_task(self._watch())]

    async def drain(self, within_s: float) -> None:
        """Stopping: let the answers in progress finish for ``within_s``, then end the rest with an
        error the clients receive (a last SSE event, or a 503), while their connections are open."""
        deadline = time.monotonic() + within_s
        # Streams end in many places; a 50 ms look while stopping costs nothing.
        while self._streams and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if self._streams:
            log.warning(
                "%d answers still running after %.0f s: ended with an error", len(self._streams), within_s
            )
            for stream in list(self._streams.values()):
                if stream.worker_id is not None:  # nobody will read the rest: stop generating it
                    self._send_cancel(stream.worker_id, stream.request_id)
            self._fail_all(Unavailable("The edge is shutting down; retry.", retry_after_s=1))
            await asyncio.sleep(0.2)  # the responses write their last event

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        self._fail_all(Unavailable("The edge is shutting down.", retry_after_s=1))
        if self._nc is not None:
            await natsconn.close(self._nc)

    async def _connect(self) -> None:
        nc = await natsconn.connect_as(
            self.settings, f"edge:{self.edge_id}", on_down=self._on_down, on_up=self._on_up
        )
        await nc.subscribe(subjects.reply_prefix(self.edge_id) + ".*", cb=self._on_frame)
        await nc.subscribe(subjects.HEARTBEATS, cb=self._on_heartbeat)
        await nc.flush()
        self._nc = nc
        while self._attach is not None:
            try:
                await self._attach(nc)
                break
            except (NatsError, TimeoutError) as exc:
                log.warning("JetStream not ready for the edge (%s); retrying", exc)
                await asyncio.sleep(0.5)

    def _live(self) -> Client:
        """This edge's connection; raises Unavailable while NATS is unreachable."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise Unavailable("The platform's message bus is unreachable; retry shortly.", retry_after_s=1)
        return nc

    def jetstream(self) -> JetStreamContext:
        """JetStream on this edge's connection; raises Unavailable while NATS is unreachable."""
        return self._live().jetstream()

    async def ask(self, subject: str, payload: bytes, timeout_s: float, what: str) -> bytes:
        """A request/reply to a service (``what`` names it in errors); Unavailable if none answers."""
        try:
            reply = await self._live().request(subject, payload, timeout=timeout_s)
        except NoRespondersError:
            raise Unavailable(f"The {what} service is not running; retry shortly.", retry_after_s=5) from None
        except TimeoutError:
            raise Unavailable(f"The {what} service did not answer in time.", retry_after_s=5) from None
        return reply.data

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    # --- requests -----------------------------------------------------------------------------

    async def submit(self, job: Job) -> Stream:
        """Publish ``job`` into the pipeline and return the stream its frames will arrive on.

        Raises ``Unavailable`` when NATS is unreachable and ``PayloadTooLarge`` when the job
        exceeds what the NATS server accepts.
        """
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise Unavailable(
                "The platform's message bus is unreachable; retry shortly.",
                retry_after_s=self.settings.retry_after_s,
            )
        rid = job.request_id
        stream = Stream(rid, time.monotonic())
        self._streams[rid] = stream
        reply = subjects.reply(self.edge_id, rid)
        try:
            # The NATS reply too: with no guard at all, the server answers "no responders" there.
            mark = seals.seal(self._seal_key, seals.Claim.of_job(job)) if self._seal_key else ""
            payload = codec.encode(msgspec.structs.replace(job, reply=reply, seal=mark, screening=True))
            await nc.publish(subjects.GUARD, payload, reply=reply)
        except MaxPayloadError:
            self._streams.pop(rid, None)
            raise PayloadTooLarge("The request is larger than the platform accepts.") from None
        except (ConnectionClosedError, OutboundBufferLimitError):
            self._streams.pop(rid, None)
            raise Unavailable(
                "The platform's message bus is unreachable; retry shortly.",
                retry_after_s=self.settings.retry_after_s,
            ) from None
        return stream

    def finish(self, request_id: str) -> None:
        """The request ended normally (its last frame was read)."""
        self._streams.pop(request_id, None)

    def cancel(self, request_id: str) -> None:
        """The client went away: stop the worker generating for it (now, or once one accepts it)."""
        stream = self._streams.get(request_id)
        if stream is None:
            return
        self._fail(stream, ClientClosed("The client closed the connection."))
        self._stop_engine(stream)

    def _stop_engine(self, stream: Stream) -> None:
        """Nobody will read the rest of ``stream``: its worker stops generating, now or once one
        accepts it."""
        if stream.worker_id is not None:
            self._send_cancel(stream.worker_id, stream.request_id)
        else:
            self._orphans[stream.request_id] = time.monotonic() + self.settings.accept_timeout_s

    def _send_cancel(self, worker_id: str, request_id: str) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        payload = codec.encode(Cancel(request_id=request_id))
        task = asyncio.create_task(nc.publish(subjects.worker_cancel(worker_id), payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- subscriptions ------------------------------------------------------------------------

    async def _on_frame(self, msg: Msg) -> None:
        rid = subjects.request_id_of_reply(msg.subject)
        frame: Frame
        if msg.headers and msg.headers.get("Status") == "503":
            frame = _NO_RESPONDERS
        else:
            try:
                frame = codec.frame_decoder.decode(msg.data)
            except codec.DecodeError:
                frame = _GARBLED
        stream = self._streams.get(rid)
        if type(frame) is Screened:
            if stream is not None:
                self._screened(stream, frame.error)
            return
        if stream is not None and stream.worker_id is None and type(frame) is Failed:
            # A stage that gave up waiting may be answered late by the next: cancel that worker.
            self._orphans[rid] = time.monotonic() + self.settings.accept_timeout_s
        if stream is None:
            # A worker accepted a request whose client already left: tell it to stop.
            if type(frame) is Accepted and self._orphans.pop(rid, None) is not None:
                self._send_cancel(frame.worker_id, rid)
            return
        now = time.monotonic()
        if type(frame) is Accepted:
            stream.worker_id = frame.worker_id
            stream.accepted_at = now
        stream.last_frame_at = now
        if stream.queue.qsize() >= self.settings.stream_buffer_frames:
            self._overflow(stream)
            return
        stream.queue.put_nowait(frame)

    def _screened(self, stream: Stream, error: WireError | None) -> None:
        """The guard's verdict. A block ends the request with the guard's error and stops the engine
        that began on it: nothing it generated was let out, and nothing is billed."""
        if error is None:
            stream.settle(None)
            return
        self._end(stream, error)
        self._stop_engine(stream)

    def _overflow(self, stream: Stream) -> None:
        """The client reads slower than the engine writes: its answer is cancelled in the engine, and
        the frames it had not read are let go (counted, so that they are billed)."""
        while not stream.queue.empty():
            frame = stream.queue.get_nowait()
            if type(frame) is Delta:
                stream.dropped_tokens += frame.tokens
        self.metrics.slow_readers.inc()
        self._fail(stream, ClientClosed("The client read the answer too slowly; it was cancelled."))
        if stream.worker_id is not None:
            self._send_cancel(stream.worker_id, stream.request_id)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = codec.heartbeat_decoder.decode(msg.data)
        except codec.DecodeError:
            return
        if beat.worker_id == subjects.worker_of(msg.subject):  # a worker speaks only for itself
            self.fleet.observe(beat, time.monotonic())

    async def _on_down(self) -> None:
        # Frames published while we are cut off are lost for good: end those streams now, clearly.
        self.metrics.nats_connected.set(0)
        self._fail_all(Unavailable("Lost the connection to the platform's message bus.", retry_after_s=1))

    # --- watchdog -----------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watchdog_interval_s)
            self.metrics.nats_connected.set(1 if self.connected else 0)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Fail the streams that can no longer end by themselves; forget stale orphans."""
        self.fleet.expire(now)
        s = self.settings
        for stream in list(self._streams.values()):
            error: LlmaasError | None = None
            wid = stream.worker_id
            if wid is None:
                if now - stream.opened_at > s.accept_timeout_s:
                    error = Unavailable(
                        f"No worker accepted the request within {s.accept_timeout_s:g} s; retry shortly.",
                        code="timeout",
                        retry_after_s=s.retry_after_s,
                    )
            elif not self.fleet.is_alive(wid, now) and now - stream.accepted_at > WORKER_GRACE_S:
                error = UpstreamFailed(f"The worker serving this request ({wid}) stopped responding.")
            elif not stream.screened.done() and now - stream.accepted_at > s.accept_timeout_s:
                error = Unavailable(
                    f"The guard's verdict did not arrive within {s.accept_timeout_s:g} s; retry shortly.",
                    code="timeout",
                    retry_after_s=s.retry_after_s,
                )
                self._send_cancel(wid, stream.request_id)
            elif now - stream.last_frame_at > s.idle_timeout_s:
                error = UpstreamFailed(f"The worker sent nothing for {s.idle_timeout_s:g} s.", code="timeout")
                self._send_cancel(wid, stream.request_id)
            if error is not None:
                self._fail(stream, error)
        for rid in [rid for rid, deadline in self._orphans.items() if deadline < now]:
            del self._orphans[rid]

    def _fail(self, stream: Stream, error: LlmaasError) -> None:
        self._end(stream, error.to_wire())

    def _end(self, stream: Stream, error: WireError) -> None:
        """``stream`` ends with ``error``: its reader, and a wait for the verdict, hear it."""
        self._streams.pop(stream.request_id, None)
        stream.settle(error)
        stream.queue.put_nowait(Failed(error=error))

    def _fail_all(self, error: LlmaasError) -> None:
        for stream in list(self._streams.values()):
            self._fail(stream, error)
