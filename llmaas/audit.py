"""The audit trail: admin actions and authentication failures as one hash-chained JetStream stream.

Each event carries the hash of the one before it and its own hash over its content, so an edited,
removed or inserted event breaks the chain at that point (``verify``). The stream itself denies
deletes and purges. Several edges append to the same chain: each publish states the stream sequence
it expects to follow (``Nats-Expected-Last-Sequence``); the loser of a race reads the new tail and
re-links its event, so the chain stays one line whatever the number of edges.

Retention is bounded (``streams.AUDIT``, 400 days: a year of bills can still be questioned): JetStream
drops events by age, never one in the middle. Every ``CHECKPOINT_EVERY`` events a checkpoint event
records the sequence and hash it follows. ``verify`` of a trail whose start expired checks every
event that remains, from the first one kept (whose predecessor is gone), each checkpoint against the
chain, and says how many expired and from which point the chain is anchored by a checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Literal

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

from llmaas import retry, streams, subjects

log = logging.getLogger(__name__)

STREAM = streams.AUDIT.name
GENESIS = "0" * 64
_WRONG_LAST_SEQUENCE = 10071
_QUEUE_LIMIT = 10_000
CHECKPOINT_EVERY = 1000
CHECKPOINT = "audit.checkpoint"

Outcome = Literal["ok", "denied", "failed"]


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    actor: str
    """``admin:<operator>``, ``key:<id>`` or ``anonymous``: never a secret."""
    action: str
    target: str
    outcome: Outcome
    source: str
    """The client address the request came from."""
    detail: dict[str, str] = {}
    edge: str = ""
    prev: str = GENESIS
    hash: str = ""


_encoder = msgspec.json.Encoder(order="sorted")
decoder = msgspec.json.Decoder(AuditEvent)


def seal(event: AuditEvent, prev: str) -> AuditEvent:
    """``event`` linked after the event whose hash is ``prev``, with its own hash set."""
    linked = msgspec.structs.replace(event, prev=prev, hash="")
    return msgspec.structs.replace(linked, hash=hashlib.sha256(_encoder.encode(linked)).hexdigest())


def intact(event: AuditEvent) -> bool:
    return seal(event, event.prev).hash == event.hash


class AuditLog:
    """Appends events in order; ``record`` queues (never blocks a request), ``append`` waits."""

    def __init__(
        self,
        edge_id: str,
        *,
        spec: streams.StreamSpec = streams.AUDIT,
        policy: streams.Policy = streams.DEFAULT,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self.edge_id = edge_id
        self.spec = spec
        self.policy = policy
        self.checkpoint_every = max(2, checkpoint_every)
        self._js: JetStreamContext | None = None
        self._tail: tuple[int, str] | None = None  # (stream sequence, hash) of the last event
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(_QUEUE_LIMIT)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    async def open(self, nc: Client) -> None:
        self._js = nc.jetstream()
        await streams.ensure(self._js, self.spec, self.policy)
        self._task = asyncio.create_task(self._drain())

    async def close(self, drain_s: float = 3.0) -> None:
        """Stop, after writing what is queued (for at most ``drain_s``)."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def record(self, event: AuditEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            # Only a flood of failed logins fills this; say so rather than grow without bound.
            self.dropped += 1
            log.error("audit queue full: event %s on %s dropped", event.action, event.target)

    async def append(self, event: AuditEvent) -> AuditEvent:
        """Publish ``event`` at the end of the chain and return it sealed; raises on NATS errors."""
        async with self._lock:
            sealed, seq = await self._append(event)
            if seq % self.checkpoint_every == 0:
                try:
                    await self._append(checkpoint(), checkpoint=True)
                except (NatsError, TimeoutError) as exc:  # the event is in; a later one checkpoints
                    log.warning("audit checkpoint not written (%s)", type(exc).__name__)
            return sealed

    async def _drain(self) -> None:
        while True:
            event = await self._queue.get()
            await retry.retried(
                functools.partial(self.append, event),
                on=(NatsError, TimeoutError),
                what="audit event",
                logger=log,
            )
            self._queue.task_done()

    async def _append(self, event: AuditEvent, *, checkpoint: bool = False) -> tuple[AuditEvent, int]:
        """``event`` sealed and its stream sequence; a checkpoint names the event it follows."""
        js = self._js
        if js is None:
            raise RuntimeError("AuditLog.open was not called")
        event = msgspec.structs.replace(event, edge=self.edge_id)
        while True:
            if self._tail is None:
                self._tail = await _tail(js)
            seq, prev = self._tail
            if checkpoint:
                event = msgspec.structs.replace(event, detail={"after_seq": str(seq), "after_hash": prev})
            sealed = seal(event, prev)
            try:
                ack = await js.publish(
                    subjects.AUDIT,
                    _encoder.encode(sealed),
                    stream=STREAM,
                    headers={"Nats-Expected-Last-Sequence": str(seq)},
                )
            except BadRequestError as exc:
                if exc.err_code != _WRONG_LAST_SEQUENCE:
                    raise
                self._tail = None  # another edge appended first: re-read the tail and re-link
                continue
            self._tail = (ack.seq, sealed.hash)
            return sealed, ack.seq


async def _tail(js: JetStreamContext) -> tuple[int, str]:
    info = await js.stream_info(STREAM)
    last = info.state.last_seq
    if last == 0:
        return 0, GENESIS
    msg = await js.get_msg(STREAM, last)
    return last, decoder.decode(msg.data or b"").hash


def checkpoint() -> AuditEvent:
    return event("system", CHECKPOINT, STREAM, "ok")


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    events: int
    last_hash: str
    problem: str | None = None
    """What broke and where (stream sequence), when ``ok`` is false."""
    expired: int = 0
    """Events older than the retention, gone: the check starts after them."""
    anchored_from: int | None = None
    """The sequence from which the chain is anchored: 1 (its genesis) or the first checkpoint kept."""


class ChainWalk:
    """Checks events one by one, in stream order: each present, intact and linked to the one before."""

    def __init__(self) -> None:
        self.expected_seq = 1
        self.last_hash = GENESIS
        self.count = 0
        self.expired = 0
        self.anchored_from: int | None = 1

    def resume(self, seq: int, data: bytes) -> None:
        """Start at ``seq``, the first event kept after the older ones expired: its predecessor is
        gone, so its link is taken as it is (and checked against the next checkpoint)."""
        self.expected_seq, self.expired, self.anchored_from = seq, seq - 1, None
        with contextlib.suppress(msgspec.DecodeError):
            self.last_hash = decoder.decode(data).prev

    def step(self, seq: int, data: bytes | None) -> str | None:
        """None if the event at ``seq`` is sound (``data`` None: it is missing), else the problem."""
        if seq != self.expected_seq or data is None:
            first_missing = self.expected_seq if seq != self.expected_seq else seq
            return f"event {first_missing} is missing"
        try:
            event = decoder.decode(data)
        except msgspec.DecodeError:
            return f"event {seq} is unreadable"
        if event.prev != self.last_hash:
            return f"event {seq} does not follow event {seq - 1} (its link is {event.prev[:12]}…)"
        if not intact(event):
            return f"event {seq} was altered (its content does not match its hash)"
        if event.action == CHECKPOINT:
            if event.detail != {"after_seq": str(seq - 1), "after_hash": event.prev}:
                return f"checkpoint {seq} does not match the chain before it"
            if self.anchored_from is None:
                self.anchored_from = seq
        self.expected_seq, self.last_hash, self.count = seq + 1, event.hash, self.count + 1
        return None

    def verdict(self, problem: str | None = None) -> Verdict:
        return Verdict(
            ok=problem is None,
            events=self.count,
            last_hash=self.last_hash,
            problem=problem,
            expired=self.expired,
            anchored_from=self.anchored_from,
        )


async def verify(js: JetStreamContext) -> Verdict:
    """Walk the whole stream: every sequence present, every hash right, every link to the one before."""
    walk = ChainWalk()
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        return walk.verdict()
    first = info.state.first_seq or 1
    for seq in range(first, info.state.last_seq + 1):
        try:
            data: bytes | None = (await js.get_msg(STREAM, seq)).data or b""
        except NotFoundError:
            data = None
        if seq == first > 1 and data is not None:
            walk.resume(seq, data)
        problem = walk.step(seq, data)
        if problem is not None:
            return walk.verdict(problem)
    return walk.verdict()


def event(
    actor: str,
    action: str,
    target: str,
    outcome: Outcome,
    *,
    source: str = "",
    detail: Mapping[str, str] | None = None,
) -> AuditEvent:
    return AuditEvent(
        at=time.time(),
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        source=source,
        detail=dict(detail or {}),
    )
