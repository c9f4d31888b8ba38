"""JetStream to ClickHouse: one durable pull consumer per event stream, batched by size and time.

A batch is acknowledged only after its rows are stored (and, for usage, its rollups recomputed):
a consumer stopped or killed at any point leaves the batch unacknowledged, and JetStream delivers
it again after ``ack_wait``. Delivered again, its ids already stored are skipped, and the rollups
of everything it touches are recomputed, so every event counts once. An event that cannot be
decoded is terminated (never redelivered) and counted: it would block the stream forever. One whose
row our code fails to make (a bug) is set aside: counted, logged, and tried again every few minutes,
never deleted and never in the way of the others. Only the store's failures hold a batch back.

The workers' records of sealed jobs (LLMAAS_WORK) go into the usage table too, as ``orphaned``
rows, but only ``metering_orphan_grace_s`` after the work ended (JetStream redelivers a record
not due yet when it is) and only for requests no usage event billed: the check for ids already
stored and the insert are one step on the writer's thread, so the edge's event and the worker's
record cannot both be stored. A record whose seal does not match is never billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from llmaas import audit, seals, streams, usage
from llmaas.wire import SecurityEvent, UsageEvent, WorkRecord
from metering.metrics import MeteringMetrics
from metering.rows import AUDIT_COLUMNS, SECURITY_COLUMNS, USAGE_COLUMNS, Pricer, audit_row, security_row
from metering.settings import MeteringSettings
from metering.store import Store

log = logging.getLogger(__name__)
_SWEEP_S = 0.05
"""How long the second pull of a batch waits when nothing came meanwhile."""
_SET_ASIDE_S = 300.0
"""How long an event whose row we could not make waits before it is tried again (a fix deployed)."""
_security_decoder = msgspec.json.Decoder(SecurityEvent)
_work_decoder = msgspec.json.Decoder(WorkRecord)


class Unbillable(Exception):
    """An event that decodes but must never be stored (a work record no edge sealed)."""


@dataclass(frozen=True)
class Decoded:
    id: Any
    """The event's unique id in its table (request id, or the audit stream sequence)."""
    row: list[Any]
    touched: tuple[str, str, dt.datetime] | None = None
    """(tenant, model, finished at) for the usage rollups."""


@dataclass(frozen=True)
class Sink:
    name: str
    stream: streams.StreamSpec
    table: str
    columns: tuple[str, ...]
    id_column: str
    decode: Callable[[Msg], Decoded]
    wait: Callable[[Msg], float] | None = None
    """Seconds before an event may be stored (a worker's record waits for its edge's event)."""


def sinks(pricer: Pricer, settings: MeteringSettings) -> list[Sink]:
    key = settings.billing_key.get_secret_value().encode() if settings.billing_key else None
    grace = settings.metering_orphan_grace_s

    def usage_event(msg: Msg) -> Decoded:
        e = usage.decoder.decode(msg.data)
        row = pricer.usage_row(e)
        return Decoded(e.request_id, row, (e.tenant, e.model, row[1]))

    def audit_event(msg: Msg) -> Decoded:
        return Decoded(
            msg.metadata.sequence.stream,
            audit_row(msg.metadata.sequence.stream, audit.decoder.decode(msg.data)),
        )

    def work_record(msg: Msg) -> Decoded:
        r = _work_decoder.decode(msg.data)
        if key is None or not seals.intact(key, r.seal, seals.Claim.of_record(r)):
            raise Unbillable(f"the record of {r.request_id} from {r.worker} is not sealed by an edge")
        model = pricer.catalog.get(r.model)
        context = model.context_length if model is not None and model.context_length else None
        # Within what the seal vouches for: a worker cannot bill more than the job allowed.
        completion = min(r.completion_tokens, r.max_tokens) if r.max_tokens else r.completion_tokens
        prompt = min(r.prompt_tokens, context) if context else r.prompt_tokens
        event = UsageEvent(
            request_id=r.request_id,
            at=r.at,
            tenant=r.tenant,
            token_id=r.token_id,
            model=r.model,
            endpoint=r.endpoint,
            status="orphaned",
            http_status=0,
            finish_reason=r.finish_reason,
            worker=r.worker,
            prompt_tokens=prompt,
            completion_tokens=completion,
            reasoning_tokens=min(r.reasoning_tokens, completion),
            cached_tokens=min(r.cached_tokens, prompt),
        )
        row = pricer.usage_row(event)
        return Decoded(event.request_id, row, (event.tenant, event.model, row[1]))

    def work_wait(msg: Msg) -> float:
        # From when the stream stored the record (no decoding, and not the worker's to say).
        return msg.metadata.timestamp.timestamp() + grace - time.time()

    def security_event(msg: Msg) -> Decoded:
        e = _security_decoder.decode(msg.data)
        return Decoded(e.request_id, security_row(e))

    return [
        Sink("usage", streams.USAGE, "usage", USAGE_COLUMNS, "request_id", usage_event),
        Sink("audit", streams.AUDIT, "audit", AUDIT_COLUMNS, "seq", audit_event),
        Sink("security", streams.SECURITY, "security_events", SECURITY_COLUMNS, "request_id", security_event),
        Sink("work", streams.WORK, "usage", USAGE_COLUMNS, "request_id", work_record, work_wait),
    ]


class Consumer:
    """Copies one stream into its table until cancelled."""

    def __init__(
        self,
        js: JetStreamContext,
        store: Store,
        sink: Sink,
        settings: MeteringSettings,
        metrics: MeteringMetrics,
    ) -> None:
        self.js = js
        self.store = store
        self.sink = sink
        self.settings = settings
        self.metrics = metrics
        metrics.start(sink.name)

    async def run(self) -> None:
        s = self.settings
        config = ConsumerConfig(
            durable_name=f"metering-{self.sink.name}",
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=s.metering_ack_wait_s,
            max_ack_pending=max(2 * s.metering_batch_size, 1000),
        )
        stream = self.sink.stream
        sub = await self.js.pull_subscribe(
            stream.subjects[0], durable=config.durable_name, stream=stream.name, config=config
        )
        failures = 0
        messages: list[Msg] = []
        try:
            while True:
                messages = await self._next_batch(sub)
                if messages:
                    failures = await self._handle(messages, failures)
                messages = []
        finally:
            # Stopping: what is held goes back at once (not after ack_wait), for the next consumer;
            # and the subscription goes, so that closing the connection does not wait on it.
            await asyncio.gather(*(m.nak() for m in messages), return_exceptions=True)
            with contextlib.suppress(NatsError, TimeoutError):
                await sub.unsubscribe()

    async def _handle(self, messages: list[Msg], failures: int) -> int:
        """Store one batch and acknowledge it, or hand it back for later; the failures in a row."""
        if self.sink.wait is not None:
            messages = await self._due(messages, self.sink.wait)
            if not messages:
                return failures
        readable = await self._decode(messages)
        if not readable:
            return failures
        messages = [msg for msg, _ in readable]
        keepalive = asyncio.create_task(self._in_progress(messages))
        try:
            try:
                await self._store([event for _, event in readable])
            finally:
                keepalive.cancel()
        except Exception as exc:  # ClickHouse down or refusing: keep the events, retry later
            failures += 1
            # Capped low: once the store is back (a disk fixed), events flow again within seconds.
            delay = min(0.5 * 2 ** min(failures, 6), 5.0)
            name, count = self.sink.name, len(messages)
            log.error("%s: %d event(s) not stored (%s); retrying in %.1f s", name, count, exc, delay)
            self.metrics.store_failures.labels(self.sink.name).inc()
            await asyncio.gather(*(m.nak(delay=delay) for m in messages), return_exceptions=True)
            await asyncio.sleep(delay)
            return failures
        # Acknowledged only now: until here a crash means "deliver again", never "lost".
        await asyncio.gather(*(m.ack() for m in messages), return_exceptions=True)
        return 0

    async def _due(self, messages: list[Msg], wait: Callable[[Msg], float]) -> list[Msg]:
        """The messages that may be stored now; the others handed back until they may."""
        due: list[tuple[Msg, float]] = []
        later: list[tuple[Msg, float]] = []
        for msg in messages:
            left = wait(msg)
            (later if left > 0 else due).append((msg, left))
        await asyncio.gather(*(m.nak(delay=left) for m, left in later), return_exceptions=True)
        return [m for m, _ in due]

    async def _in_progress(self, messages: list[Msg]) -> None:
        """While a slow insert runs, tell JetStream the batch is being worked on: ``ack_wait`` can
        then be short, so that a crashed consumer's batch is delivered again within seconds."""
        while True:
            await asyncio.sleep(self.settings.metering_ack_wait_s / 3)
            await asyncio.gather(*(m.in_progress() for m in messages), return_exceptions=True)

    async def _next_batch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """Up to ``metering_batch_size`` events: those that arrive within ``metering_batch_wait_s``
        of the first. Two pulls a batch: one that waits for the first event, one for what came
        meanwhile (a pull returns what is there at once, so pulling again and again through the
        window cost a JetStream request per few events, in this process and in nats-server)."""
        size, wait = self.settings.metering_batch_size, self.settings.metering_batch_wait_s
        out: list[Msg] = []
        while not out:
            out = await self._pull(sub, size, wait)
        deadline = time.monotonic() + wait
        while len(out) < size and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(left)
            more = await self._pull(sub, size - len(out), _SWEEP_S)
            if not more:
                break
            out += more
        return out

    async def _pull(self, sub: JetStreamContext.PullSubscription, count: int, within: float) -> list[Msg]:
        """What the stream has for us within ``within`` s (nothing on a timeout or a NATS hiccup)."""
        try:
            return await sub.fetch(count, timeout=within)
        except TimeoutError:
            return []
        except NatsError as exc:  # NATS reconnecting: what we hold is still unacknowledged
            log.warning("%s: fetch failed (%s)", self.sink.name, type(exc).__name__)
            await asyncio.sleep(0.5)
            return []

    async def _decode(self, messages: list[Msg]) -> list[tuple[Msg, Decoded]]:
        """The messages whose rows could be made, with them; the others dealt with one by one, so
        that neither an unreadable event nor a bug of ours in making one event's row stalls the
        stream (only the store's failures hold a batch back)."""
        readable: list[tuple[Msg, Decoded]] = []
        for msg in messages:
            try:
                readable.append((msg, self.sink.decode(msg)))
            except (msgspec.DecodeError, Unbillable) as exc:  # the event's fault: never storable
                log.error("%s: unreadable event terminated (%s)", self.sink.name, exc)
                self.metrics.unreadable.labels(self.sink.name).inc()
                await msg.term()
            except Exception:  # ours: kept in the stream, and tried again (slowly) until fixed
                log.exception("%s: event not stored: its row could not be made", self.sink.name)
                self.metrics.set_aside.labels(self.sink.name).inc()
                await msg.nak(delay=_SET_ASIDE_S)
        return readable

    async def _store(self, events: list[Decoded]) -> None:
        started = time.perf_counter()
        decoded: dict[Any, Decoded] = {}
        for d in events:
            decoded.setdefault(d.id, d)  # the same event twice in one batch: once
        store, sink = self.store, self.sink
        rows = {key: d.row for key, d in decoded.items()}
        known = await store.run(store.insert_new, sink.table, sink.id_column, sink.columns, rows)
        fresh = [row for key, row in rows.items() if key not in known]
        if self.settings.metering_fault == "crash_after_insert" and sink.name == "usage" and fresh:
            log.error("fault injection: exiting after storing %d rows, before acknowledging", len(fresh))
            os._exit(137)
        touched = [d.touched for d in decoded.values() if d.touched is not None]
        if touched:
            await store.run(store.recompute_rollups, touched)
            oldest = min(at for _, _, at in touched).replace(tzinfo=dt.UTC).timestamp()
            self.metrics.lag.labels(sink.name).set(max(0.0, time.time() - oldest))
        self.metrics.stored.labels(sink.name).inc(len(fresh))
        self.metrics.duplicates.labels(sink.name).inc(len(events) - len(fresh))
        self.metrics.batch_seconds.labels(sink.name).observe(time.perf_counter() - started)
        log.debug("%s: %d stored, %d already there", sink.name, len(fresh), len(known))
