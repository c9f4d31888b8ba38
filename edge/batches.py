"""The batch engine. Every edge runs it beside its HTTP routes: a batch's lines are requests like
any other (the same schemas, key checks, guard, scheduler and workers), only their caller is a
stream instead of a connection. Nothing of a batch lives in an edge: its record, lines and results
are in JetStream (``llmaas.batches``), so any edge can carry on what another began.

A batch goes: ``validating`` (its input file read twice: every line checked, then, only if all
are good, each published to the lines stream) → ``in_progress`` (runners on every edge take lines,
one batch's then the next's, at most ``batch_seats`` at a time per edge) → ``finalizing`` once
every line is acknowledged (the results written into an output and an error file) → ``completed``.
``cancelling`` → ``cancelled`` and, past its window, ``expired`` end the same way, the lines not run
then ending as ``batch_cancelled`` / ``batch_expired`` errors: every input line lands in exactly one
of the two files.

Validation and finalization are turns an edge takes on the record by compare-and-set, with a lease:
an edge that dies holding one lets it lapse, and the sweeper of another takes it up. A line is
acknowledged only after its result is stored and its usage published; one that ran on an edge that
died is delivered again and finds its result, if it got that far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from edge import body, exchange, rendering
from edge.errors import error_body
from edge.gate import Gate
from edge.jobs import chat_job, completion_job, embed_job
from edge.keys import Principal, caller
from edge.metrics import EdgeMetrics
from edge.pipeline import Pipeline, Stream
from edge.rendering import ChatRenderer, Renderer, TextRenderer
from edge.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from edge.settings import EdgeSettings
from edge.uploads import MAX_REQUESTS, FileDesk
from edge.usage import Tally
from llmaas import batches, files, retry, streams, usage
from llmaas.batches import BatchRecord, Counts, Line, LineError, LineResult
from llmaas.errors import (
    ClientClosed,
    InvalidRequest,
    LlmaasError,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from llmaas.wire import GenerateJob, Job

log = logging.getLogger(__name__)

_LEASE_S = 120.0
"""How long an edge holds a batch's validation or finalization before another may take it up."""
_LISTED_ERRORS = 100
_PIECE = 128 * 1024
"""What a file being written hands to the object store at once (its chunk size)."""
_CHUNK = "Llmaas-Chunk"
"""The header numbering a door batch's message of lines (its place in the record's count)."""
_ENQUEUE_WINDOW = 256
"""Lines published at once while enqueueing (each awaits its JetStream acknowledgement)."""


class _Retry(Exception):
    """The platform could not serve the line now (no worker, a stage down): run it again later."""


class _Deferred(_Retry):
    """A worker put the line back for interactive work (no batch seat, or preempted): it runs later,
    however many times that takes."""


_YIELDED = {"batch_deferred": "deferred", "batch_preempted": "preempted"}
"""The workers' codes for a batch job put back (workers.worker.service)."""


class BatchEngine:
    def __init__(
        self,
        *,
        edge_id: str,
        settings: EdgeSettings,
        gate: Gate,
        pipeline: Pipeline,
        desk: FileDesk,
        metrics: EdgeMetrics,
    ) -> None:
        self.edge_id = edge_id
        self.settings = settings
        self.gate = gate
        self.pipeline = pipeline
        self.desk = desk
        self.metrics = metrics
        self._js: JetStreamContext | None = None
        self._records: KeyValue | None = None
        self._results: KeyValue | None = None
        self._known: dict[str, tuple[BatchRecord, int]] = {}
        """Every batch record, by key, with its revision: kept by a watch of the bucket."""
        self._wake = asyncio.Event()
        self._busy: set[str] = set()
        """Batches this edge is validating or finalizing now."""
        self._running: dict[str, set[str]] = {}
        """Request ids of the lines this edge runs now, by batch key."""
        self._done: dict[str, list[int]] = {}
        """Lines ended here since the record was last told: [completed, failed] by batch key."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._runner: asyncio.Task[None] | None = None
        self._subscriptions: dict[str, JetStreamContext.PullSubscription] = {}
        """The pull subscription of each running batch's consumer, by batch key."""
        self.on_change: Callable[[BatchRecord], None] | None = None
        """Called with each record this edge changes (the NATS door publishes it as progress)."""

    # --- lifecycle -------------------------------------------------------------------------------

    async def open(self, nc: Client) -> None:
        js = self._js = nc.jetstream()
        policy = streams.Policy.of(self.settings)
        await streams.ensure(js, streams.BATCH_LINES, policy)
        await streams.ensure(js, streams.BATCH_INTAKE, policy)
        self._records = await streams.ensure_bucket(js, streams.BATCHES, policy)
        self._results = await streams.ensure_bucket(js, streams.BATCH_RESULTS, policy)
        self._loops = [asyncio.create_task(self._watch()), asyncio.create_task(self._sweep_forever())]
        if self.settings.batch_seats:
            self._runner = asyncio.create_task(self._run_forever())
            self._loops.append(self._runner)

    def pause(self) -> None:
        """Take no more lines (the edge is stopping): what runs ends with the edge's drain, and a
        line it cuts short is handed back, to run on another edge."""
        if self._runner is not None:
            self._runner.cancel()

    async def close(self) -> None:
        for task in (*self._loops, *self._tasks):
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        for sub in self._subscriptions.values():  # before the connection drains them
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.unsubscribe(), 1.0)
        self._subscriptions.clear()

    @property
    def records(self) -> KeyValue:
        if self._records is None:
            raise Unavailable("Batches are not reachable yet; retry shortly.", retry_after_s=1)
        return self._records

    # --- the doors' side -------------------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
    ) -> BatchRecord:
        """A batch of an uploaded file's lines (both doors)."""
        self._check_new(principal.tenant.name, endpoint, completion_window, metadata)
        await self._check_budget(principal)
        record = await self.desk.store.record(principal.tenant.name, input_file_id)
        if record is None or record.purpose != "batch":
            raise NotFound(f"No such File object: {input_file_id[:64]}", param="input_file_id")
        return await self._new(principal, endpoint, completion_window, metadata, input_file_id=input_file_id)

    async def open_batch(
        self,
        principal: Principal,
        *,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
    ) -> BatchRecord:
        """A batch whose lines come as messages (the NATS door), validated once sealed."""
        self._check_new(principal.tenant.name, endpoint, completion_window, metadata)
        await self._check_budget(principal)
        return await self._new(principal, endpoint, completion_window, metadata, input_file_id=None)

    async def _check_budget(self, principal: Principal) -> None:
        """A tenant whose month's budget is spent cannot start a batch (429 insufficient_quota); one
        with some left learns whether the batch fits when it starts (then it fails if not)."""
        p = principal
        left = await self.gate.limiter.budget_left(p.tenant, p.tier, time.time())
        if left is not None and left <= 0:
            raise QuotaExceeded(
                "This month's budget of your tier is spent: no batch can start until the next month "
                "or a higher tier."
            )

    def _check_new(
        self, tenant: str, endpoint: str, completion_window: str, metadata: dict[str, str] | None
    ) -> None:
        if endpoint not in batches.ENDPOINTS:
            raise InvalidRequest(
                f"Invalid 'endpoint' {endpoint[:64]!r}: use {' or '.join(batches.ENDPOINTS)}.",
                param="endpoint",
            )
        if completion_window not in batches.WINDOWS:
            raise InvalidRequest(
                f"Invalid 'completion_window' {completion_window[:16]!r}: use '24h'.",
                param="completion_window",
            )
        _check_metadata(metadata)
        if len(self.of_tenant(tenant, active=True)) >= self.settings.batches_per_tenant:
            raise RateLimited(
                f"This tenant has {self.settings.batches_per_tenant} batches running, the most at once: "
                "wait for one to end.",
                type_="requests",
                retry_after_s=60,
            )

    async def _new(
        self,
        principal: Principal,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        *,
        input_file_id: str | None,
    ) -> BatchRecord:
        tenant = principal.tenant.name
        now = int(time.time())
        window = self.settings.batch_window_s or batches.WINDOWS[completion_window]
        batch_id = batches.new_id()
        door = input_file_id is None
        input_file_id = batches.input_file_id(batch_id) if input_file_id is None else input_file_id
        batch = BatchRecord(
            id=batch_id,
            tenant=tenant,
            token_id=principal.key.id,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            status="validating",
            created_at=now,
            expires_at=now + int(window),
            metadata=metadata,
            owner="" if door else self.edge_id,
            owned_until=0.0 if door else time.time() + _LEASE_S,
            door=door,
            receiving=door,
        )
        key = batches.key(tenant, batch.id)
        revision = await self.records.create(key, msgspec.json.encode(batch))
        self._known[key] = (batch, revision)
        self._told(batch)
        if not door:
            self._spawn(key, self._validate(key))
        return batch

    async def receive(self, tenant: str, batch_id: str, data: bytes) -> BatchRecord:
        """Take a message of a door batch's lines (one or more JSONL lines): counted in its record
        first (the chunk's number), then stored, so that a seal leaves out exactly the chunks it was
        not told of. The lines are checked when the batch is sealed, as a file's are."""
        assert self._js is not None
        key = batches.key(tenant, batch_id)
        lines = [line for line in data.split(b"\n") if line.strip()]
        if not lines:
            raise InvalidRequest("This message holds no line.", code="empty_message")
        size = sum(len(line) + 1 for line in lines)

        def take(r: BatchRecord) -> BatchRecord:
            if not r.receiving:
                made = "sealed" if r.door else "made of a file"
                raise InvalidRequest(
                    f"The batch {batch_id} takes no more lines: it is {made}.",
                    code="batch_sealed",
                    param="batch_id",
                )
            if r.received_lines + len(lines) > MAX_REQUESTS:
                raise InvalidRequest(
                    f"A batch holds at most {MAX_REQUESTS} requests.", code="too_many_requests"
                )
            if r.received_bytes + size > self.settings.files_max_bytes:
                raise PayloadTooLarge(
                    f"A batch's lines add up to at most {self.settings.files_max_bytes} bytes.",
                    code="batch_too_large",
                )
            return msgspec.structs.replace(
                r,
                received_chunks=r.received_chunks + 1,
                received_lines=r.received_lines + len(lines),
                received_bytes=r.received_bytes + size,
            )

        record = await self._change(await self._existing(key, batch_id), take)
        chunk = record.received_chunks
        headers = {"Nats-Msg-Id": f"{batch_id}:{chunk}", _CHUNK: str(chunk)}
        await self._js.publish(
            batches.intake_subject(tenant, batch_id), b"\n".join(lines) + b"\n", headers=headers
        )
        return record

    async def seal(self, tenant: str, batch_id: str) -> BatchRecord:
        """No more lines: the door batch's input file is written and it is validated as any other."""
        key = await self._existing(batches.key(tenant, batch_id), batch_id)

        def sealed(r: BatchRecord) -> BatchRecord:
            if not r.receiving:
                raise InvalidRequest(
                    f"The batch {batch_id} is not taking lines (it is {r.status}).",
                    code="batch_sealed",
                    param="batch_id",
                )
            if not r.received_lines:
                raise InvalidRequest("Send the batch's lines before sealing it.", code="empty_batch")
            lease = time.time() + _LEASE_S
            return msgspec.structs.replace(r, receiving=False, owner=self.edge_id, owned_until=lease)

        record = await self._change(key, sealed)
        self._spawn(key, self._validate(key))
        return record

    async def _existing(self, key: str, batch_id: str) -> str:
        """``key``, once it names a batch of the tenant; NotFound if not."""
        if not batches.is_batch_id(batch_id) or await self._record(key) is None:
            raise NotFound(f"No such Batch object: {batch_id[:64]}", param="batch_id")
        return key

    async def _record(self, key: str) -> BatchRecord | None:
        try:
            entry = await self.records.get(key)
        except KeyNotFoundError:
            return None
        return batches.record_decoder.decode(entry.value) if entry.value else None

    async def get(self, tenant: str, batch_id: str) -> BatchRecord | None:
        if not batches.is_batch_id(batch_id):
            return None
        key = batches.key(tenant, batch_id)
        record = await self._record(key)
        return None if record is None else self._with_progress(key, record)

    def of_tenant(self, tenant: str, *, active: bool = False) -> list[BatchRecord]:
        """The tenant's batches, newest first (as this edge's copy has them)."""
        found = [
            self._with_progress(k, r)
            for k, (r, _) in self._known.items()
            if r.tenant == tenant and (not active or r.status in batches.ACTIVE)
        ]
        return sorted(found, key=lambda r: (r.created_at, r.id), reverse=True)

    async def cancel(self, tenant: str, batch_id: str) -> BatchRecord:
        if await self.get(tenant, batch_id) is None:
            raise NotFound(f"No such Batch object: {batch_id[:64]}", param="batch_id")
        now = int(time.time())
        unsealed = False

        def cancelling(record: BatchRecord) -> BatchRecord | None:
            nonlocal unsealed
            unsealed = record.receiving
            if record.receiving:  # nothing ran: it ends at once
                return msgspec.structs.replace(
                    record, status="cancelled", receiving=False, cancelling_at=now, cancelled_at=now
                )
            if record.status not in ("validating", "in_progress"):
                return None
            return msgspec.structs.replace(record, status="cancelling", cancelling_at=now)

        changed = await self._change(batches.key(tenant, batch_id), cancelling)
        if unsealed:
            await self._purge_intake(changed)
            return changed
        if changed.status in ("completed", "failed", "expired", "cancelled"):
            raise InvalidRequest(
                f"Cannot cancel a batch that is {changed.status}.", param="batch_id", code="batch_not_active"
            )
        self._stop_running(batches.key(tenant, batch_id))
        return changed

    def _with_progress(self, key: str, record: BatchRecord) -> BatchRecord:
        """Counts while it runs: the record's, and what this edge finished since it last told it."""
        done = self._done.get(key)
        if not done or record.status not in ("in_progress", "cancelling"):
            return record
        counts = record.request_counts
        return msgspec.structs.replace(
            record,
            request_counts=Counts(counts.total, counts.completed + done[0], counts.failed + done[1]),
        )

    # --- records ---------------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            try:
                watcher = await self.records.watch(">")
                async for entry in watcher:
                    if entry is None:
                        continue
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        self._known.pop(entry.key, None)
                        continue
                    record = batches.record_decoder.decode(entry.value)
                    self._known[entry.key] = (record, entry.revision or 0)
                    if record.status == "cancelling":
                        self._stop_running(entry.key)
                    self._wake.set()
            except (NatsError, TimeoutError) as exc:
                log.warning("the batches' watch stopped (%s); watching again", type(exc).__name__)
                await asyncio.sleep(1)

    async def _change(self, key: str, change: Callable[[BatchRecord], BatchRecord | None]) -> BatchRecord:
        """The record after ``change`` (None: leave it), applied by compare-and-set, retried on a race."""

        async def attempt() -> BatchRecord:
            entry = await self.records.get(key)
            assert entry.value is not None
            current = batches.record_decoder.decode(entry.value)
            new = change(current)
            if new is None:
                return current
            revision = await self.records.update(key, msgspec.json.encode(new), last=entry.revision)
            self._known[key] = (new, revision)
            self._told(new)
            return new

        return await retry.retried(attempt, on=KeyWrongLastSequenceError, backoff=retry.AT_ONCE)

    def _told(self, record: BatchRecord) -> None:
        """Whoever follows the batch (the NATS door's progress events) hears of its change."""
        if self.on_change is not None:
            self.on_change(record)

    def _turn(self, statuses: tuple[str, ...]) -> Callable[[BatchRecord], BatchRecord | None]:
        """Take the validation or finalization of a batch in one of ``statuses`` unless another edge
        holds it."""
        now = time.time()

        def take(record: BatchRecord) -> BatchRecord | None:
            held = record.owner and record.owner != self.edge_id and record.owned_until > now
            if record.status not in statuses or held:
                return None
            return msgspec.structs.replace(record, owner=self.edge_id, owned_until=now + _LEASE_S)

        return take

    def _spawn(self, key: str, work: Any) -> None:
        if key in self._busy:
            work.close()
            return
        self._busy.add(key)

        async def run() -> None:
            try:
                await work
            except (NatsError, TimeoutError, LlmaasError, OSError) as exc:
                log.warning("batch %s: %s (%s); the sweeper takes it up again", key, type(exc).__name__, exc)
            except Exception:
                log.exception("batch %s failed; the sweeper takes it up again", key)
            finally:
                self._busy.discard(key)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- validation ------------------------------------------------------------------------------

    async def _validate(self, key: str) -> None:
        record = await self._change(key, self._turn(("validating",)))
        if record.owner != self.edge_id or record.status != "validating" or record.receiving:
            return
        if record.door and await self.desk.store.record(record.tenant, record.input_file_id) is None:
            await self._write_intake(record)
        errors, total, reserve = await self._check_lines(record)
        now = int(time.time())
        if not errors and not _reserved(record):
            try:
                record = await self._reserve_budget(key, record, reserve)
            except (QuotaExceeded, Unauthenticated) as exc:
                errors = [LineError(code=exc.code or exc.type, message=exc.message)]
        if errors:
            await self._change(
                key,
                lambda r: msgspec.structs.replace(r, status="failed", failed_at=now, errors=errors, owner=""),
            )
            if record.door:
                await self._purge_intake(record)
            return
        await self._enqueue(record)
        assert self._js is not None
        subject = batches.lines_subject(record.tenant, record.id)
        await self._js.add_consumer(
            streams.BATCH_LINES.name,
            ConsumerConfig(
                durable_name=batches.consumer(record.id),
                filter_subject=subject,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.settings.batch_ack_wait_s,
                max_ack_pending=max(64, 4 * self.settings.batch_seats),
            ),
        )

        def started(r: BatchRecord) -> BatchRecord | None:
            if r.status == "cancelling":  # cancelled while it was being validated: its lines end so
                return msgspec.structs.replace(r, request_counts=Counts(total=total), owner="")
            if r.status != "validating":
                return None
            return msgspec.structs.replace(
                r, status="in_progress", in_progress_at=now, request_counts=Counts(total=total), owner=""
            )

        await self._change(key, started)
        self._wake.set()
        if record.door:
            await self._purge_intake(record)

    async def _write_intake(self, record: BatchRecord) -> None:
        """A sealed door batch's lines into its input file, in the order they were stored, each
        counted chunk once (a chunk stored twice, or not counted before the seal, is left out)."""
        assert self._js is not None
        subject = batches.intake_subject(record.tenant, record.id)
        writer = _FileWriter(
            self.desk.store, record.tenant, record.input_file_id, f"{record.id}_input.jsonl", "batch"
        )
        taken: set[int] = set()
        seq = 1
        while len(taken) < record.received_chunks:
            try:
                msg = await self._js.get_msg(streams.BATCH_INTAKE.name, seq=seq, subject=subject, next=True)
            except NotFoundError:
                break  # a counted chunk that was never stored: its sender was told it failed
            seq = (msg.seq or seq) + 1
            chunk = int((msg.headers or {}).get(_CHUNK, "0"))
            if 0 < chunk <= record.received_chunks and chunk not in taken:
                taken.add(chunk)
                await writer.write(msg.data or b"")
        await writer.close(keep_empty=True)  # no line stored at all: an empty file, failed as one

    async def _purge_intake(self, record: BatchRecord) -> None:
        assert self._js is not None
        with contextlib.suppress(NatsError, TimeoutError):
            await self._js.purge_stream(
                streams.BATCH_INTAKE.name, subject=batches.intake_subject(record.tenant, record.id)
            )

    async def _lines(self, record: BatchRecord) -> AsyncIterator[tuple[int, bytes]]:
        """The input file's non-empty lines with their 1-based line numbers."""
        number, partial = 0, b""
        async for chunk in self.desk.store.read(record.tenant, record.input_file_id):
            pieces = (partial + chunk).split(b"\n")
            partial = pieces.pop()
            for piece in pieces:
                number += 1
                if piece.strip():
                    yield number, piece
        if partial.strip():
            yield number + 1, partial

    async def _check_lines(self, record: BatchRecord) -> tuple[list[LineError], int, int]:
        """Every line checked as OpenAI checks a batch's input: the errors (the first hundred), how
        many requests there are, and the output tokens they may produce together."""
        errors: list[LineError] = []
        seen: set[str] = set()
        total = reserve = 0
        async for number, raw in self._lines(record):
            total += 1
            checked = _checked_line(raw, record.endpoint, seen)
            if not isinstance(checked, LineError):
                reserve += self._reserve(record, checked["body"])
            elif len(errors) < _LISTED_ERRORS:
                errors.append(msgspec.structs.replace(checked, line=number))
            else:
                break
        if total > MAX_REQUESTS:
            errors.append(
                LineError(code="too_many_requests", message=f"A batch holds at most {MAX_REQUESTS} requests.")
            )
        if not total:
            errors.append(LineError(code="empty_file", message="The input file holds no request."))
        return errors, total, reserve

    def _reserve(self, record: BatchRecord, request: dict[str, Any]) -> int:
        """The output tokens one line may produce (its part of the batch's reservation)."""
        if batches.ENDPOINTS[record.endpoint] == "embedding":
            return 0
        asked = request.get("max_completion_tokens", request.get("max_tokens"))
        valid = isinstance(asked, int) and not isinstance(asked, bool) and asked >= 0
        return self.gate.models.reserve_for(str(request.get("model")), asked if valid else None)

    async def _reserve_budget(self, key: str, record: BatchRecord, tokens: int) -> BatchRecord:
        """The budget its lines may cost, taken at the batch price as it starts (QuotaExceeded if it
        does not fit): each line then settles its part, and the end gives back what never ran."""
        p = self.gate.keys.acting_for(record.token_id)
        grant = await self.gate.limiter.admit(p.tenant, p.key, p.tier, tokens, time.time(), batch=True)
        subject = next((c.subject for c in grant.counters if c.measure == "budget"), "")
        return await self._change(
            key,
            lambda r: msgspec.structs.replace(
                r, reserved_budget=subject, reserved_tokens=tokens, reserved_nano=grant.reserved_nano
            ),
        )

    async def _enqueue(self, record: BatchRecord) -> None:
        """Each line into the lines stream, once (ids ``<batch>:<n>``: a validation retried after a
        crash publishes again what the stream already has, and it keeps one)."""
        assert self._js is not None
        js = self._js
        subject = batches.lines_subject(record.tenant, record.id)
        pending: list[Any] = []
        n = 0
        async for _, raw in self._lines(record):
            line = msgspec.json.decode(raw)
            message = Line(
                tenant=record.tenant,
                batch=record.id,
                number=n,
                custom_id=line["custom_id"],
                body=msgspec.Raw(msgspec.json.encode(line["body"])),
                reserve=self._reserve(record, line["body"]),
            )
            headers = {"Nats-Msg-Id": f"{record.id}:{n}"}
            pending.append(js.publish(subject, msgspec.json.encode(message), headers=headers))
            n += 1
            if len(pending) >= _ENQUEUE_WINDOW:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)

    # --- running lines ---------------------------------------------------------------------------

    async def _run_forever(self) -> None:
        seats = asyncio.Semaphore(self.settings.batch_seats)
        subscriptions = self._subscriptions
        turn = 0
        while True:
            running = sorted(
                k for k, (r, _) in self._known.items() if r.status in ("in_progress", "cancelling")
            )
            for gone in set(subscriptions) - set(running):
                with contextlib.suppress(Exception):
                    await subscriptions.pop(gone).unsubscribe()
            took = 0
            turn += 1
            for key in running[turn % max(1, len(running)) :] + running[: turn % max(1, len(running))]:
                await seats.acquire()
                try:
                    msgs = await self._take(key, subscriptions)
                except (NatsError, TimeoutError):
                    msgs = []
                if not msgs:
                    seats.release()
                    continue
                took += 1
                task = asyncio.create_task(self._run_line(key, msgs[0]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(lambda _: seats.release())
            if not took:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.5)

    async def _take(self, key: str, subscriptions: dict[str, JetStreamContext.PullSubscription]) -> list[Msg]:
        assert self._js is not None
        record, _ = self._known[key]
        sub = subscriptions.get(key)
        if sub is None:
            try:
                sub = await self._js.pull_subscribe_bind(
                    batches.consumer(record.id), streams.BATCH_LINES.name
                )
            except NotFoundError:
                return []  # its consumer is made at the end of its validation
            subscriptions[key] = sub
        try:
            return await sub.fetch(1, timeout=0.05)
        except TimeoutError:
            return []

    async def _run_line(self, key: str, msg: Msg) -> None:
        assert self._results is not None and self._js is not None
        line = batches.line_decoder.decode(msg.data)
        result_key = batches.result_key(line.tenant, line.batch, line.number)
        try:
            result = await self._stored(result_key)
            if result is None:
                result = await self._outcome(key, line, msg)
                if result is None:
                    return  # handed back for later
                if result.usage is None:  # it cost nothing: its part of the reservation goes back
                    result = msgspec.structs.replace(result, unsettled=line.reserve)
                try:
                    await self._results.create(result_key, msgspec.json.encode(result))
                except KeyWrongLastSequenceError:  # another run of the line got there first
                    result = await self._stored(result_key) or result
            if result.usage is not None:
                await usage.publish(self._js, result.usage)  # metering keeps one row per request id
            await msg.ack()
        except (NatsError, TimeoutError) as exc:
            log.warning("batch line %s: %s; it comes back after its ack wait", result_key, type(exc).__name__)
            return
        done = self._done.setdefault(key, [0, 0])
        done[0 if result.succeeded else 1] += 1
        self.metrics.batch_lines.labels("completed" if result.succeeded else "failed").inc()
        self._wake.set()

    async def _stored(self, result_key: str) -> LineResult | None:
        assert self._results is not None
        try:
            entry = await self._results.get(result_key)
        except KeyNotFoundError:
            return None
        return batches.result_decoder.decode(entry.value) if entry.value else None

    async def _outcome(self, key: str, line: Line, msg: Msg) -> LineResult | None:
        """The line's result, or None when it was handed back to be run again later."""
        record, _ = self._known[key]
        request_id = batches.request_id(line.batch, line.number)
        if record.status == "cancelling":
            return _ended(
                line, request_id, "batch_cancelled", "The batch was cancelled before this request ran."
            )
        if record.expiring:
            return _ended(line, request_id, "batch_expired", "The batch expired before this request ran.")
        running = self._running.setdefault(key, set())
        running.add(request_id)
        beat = asyncio.create_task(_keep_taken(msg, self.settings.batch_ack_wait_s / 3))
        try:
            result = await self._answer(record, line, request_id)
        except _Deferred:
            await msg.nak(delay=1.0)
            return None
        except Exception as exc:  # the platform's failure, not the line's: run it again
            if not isinstance(exc, _Retry):
                log.exception("batch line %s failed unexpectedly", request_id)
            self.metrics.batch_lines.labels("retried").inc()
            attempts = msg.metadata.num_delivered or 1
            if attempts < self.settings.batch_line_attempts:
                await msg.nak(delay=min(30.0, 2.0**attempts))
                return None
            failure = Unavailable(f"The platform could not serve this request in {attempts} attempts.")
            result = _refused(line, request_id, failure)
        finally:
            beat.cancel()
            running.discard(request_id)
        if self._known.get(key, (record, 0))[0].status == "cancelling":  # whatever it became
            return _ended(line, request_id, "batch_cancelled", "The batch was cancelled while this ran.")
        return result

    async def _answer(self, record: BatchRecord, line: Line, request_id: str) -> LineResult:
        """Run one line as the request it is; a refusal is its result (a 4xx in the error file)."""
        try:
            principal = self.gate.keys.acting_for(record.token_id)
            job, answer = self._job(record, line, principal, request_id)
        except LlmaasError as exc:
            return _refused(line, request_id, exc)
        tally = Tally(None, self.gate.limiter, self.edge_id, job, batch_id=record.id)
        shared = _reserved(record)
        try:
            if shared:  # its part of what the batch reserved when it started
                tally.grant = self.gate.limiter.share(record.reserved_budget, line.reserve, time.time())
            else:  # a batch started before batches reserved their budget: the line reserves its own
                reserve = (job.sampling.max_tokens or 0) if isinstance(job, GenerateJob) else 0
                p = principal
                tally.grant = await self.gate.limiter.admit(
                    p.tenant, p.key, p.tier, reserve, time.time(), batch=True
                )
            frames = await self.pipeline.submit(job)
            try:
                tally.worker = (await frames.started()).worker_id
                body_out = await answer(frames, tally)
            finally:
                self.pipeline.finish(request_id)
        except LlmaasError as exc:
            again = exc.code in _YIELDED or (exc.status >= 500 and not isinstance(exc, ClientClosed))
            if again and shared and tally.grant is not None:
                tally.grant.settled = True  # it runs again: its part stays reserved for that run
            tally.failed(exc)
            tally.close()  # settles in the background: the line's outcome does not wait for it
            if exc.code in _YIELDED:
                self.metrics.batch_lines.labels(_YIELDED[exc.code]).inc()
                raise _Deferred from exc
            if exc.status >= 500 and not isinstance(exc, ClientClosed):
                raise _Retry from exc
            event = tally.event() if tally.grant is not None else None
            return _refused(line, request_id, exc, usage=event)
        settling = tally.close()
        if settling is not None:
            await settling
        return LineResult(
            custom_id=line.custom_id,
            request_id=request_id,
            status_code=200,
            body=msgspec.Raw(body_out),
            usage=tally.event(),
        )

    def _job(
        self, record: BatchRecord, line: Line, principal: Principal, request_id: str
    ) -> tuple[Job, Callable[[Stream, Tally], Awaitable[bytes]]]:
        """The line's job, and how its answer's body is made from its frames (after ``Accepted``)."""
        created = int(time.time())
        raw = bytes(line.body)
        who = caller(principal)
        kind = batches.ENDPOINTS[record.endpoint]
        if kind == "embedding":
            embed = body.validate(raw, EmbeddingRequest)
            model, _ = self.gate.models.answering(principal, embed.model)

            async def vectors(frames: Stream, tally: Tally) -> bytes:
                result = rendering.embeddings_of(await frames.next())
                tally.usage = result.usage
                self.metrics.tokens.labels(model, "prompt").inc(result.usage.prompt_tokens)
                return rendering.embedding_list(result, model, embed.encoding_format)

            return embed_job(embed, model, request_id, created, who), vectors
        renderer: Renderer
        if kind == "chat":
            chat = body.validate(raw, ChatCompletionRequest)
            _no_stream(chat.stream)
            model, _ = self.gate.models.answering(principal, chat.model)
            job = chat_job(chat, model, request_id, created, who)
            renderer = ChatRenderer(request_id, model, created, False)
        else:
            text = body.validate(raw, CompletionRequest)
            _no_stream(text.stream)
            model, _ = self.gate.models.answering(principal, text.model)
            job = completion_job(text, model, request_id, created, who)
            renderer = TextRenderer(request_id, model, created, False)
        job = msgspec.structs.replace(self.gate.models.bounded(job), priority=1)  # below interactive work

        async def whole(frames: Stream, tally: Tally) -> bytes:
            collected, done = await exchange.collect(self.metrics, job, frames, tally)
            return renderer.whole(collected, done.finish_reason, done.usage)

        return job, whole

    def _stop_running(self, key: str) -> None:
        """A cancelled batch's lines running here stop generating (they end as cancelled)."""
        for request_id in list(self._running.get(key, ())):
            self.pipeline.cancel(request_id)

    # --- looking after batches -------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.batch_sweep_s)
            try:
                await self._sweep()
            except (NatsError, TimeoutError, LlmaasError) as exc:
                log.warning("batch sweep: %s", type(exc).__name__)

    async def _sweep(self) -> None:
        now = time.time()
        statuses: Counter[str] = Counter(r.status for r, _ in self._known.values())
        for status in batches.STATUSES:
            self.metrics.batches.labels(status).set(statuses.get(status, 0))
        self.metrics.batch_lines_running.set(sum(len(ids) for ids in self._running.values()))
        queued = 0
        for key, (record, _) in list(self._known.items()):
            if key in self._busy:
                continue
            lapsed = not record.owner or record.owned_until < now
            if record.receiving:
                if now >= record.expires_at:  # never sealed in its window: it ends with no line run
                    await self._expire_unsealed(key)
                continue
            if record.status == "validating" and lapsed:
                self._spawn(key, self._validate(key))
            elif record.status == "finalizing" and lapsed:
                self._spawn(key, self._finalize(key))
            elif record.status in ("in_progress", "cancelling"):
                await self._tell(key)
                if record.status == "in_progress" and not record.expiring and now >= record.expires_at:
                    await self._change(key, lambda r: msgspec.structs.replace(r, expiring=True))
                waiting = await self._waiting(record)
                queued += waiting or 0
                if record.request_counts.total and waiting == 0:
                    self._spawn(key, self._finalize(key))
        self.metrics.batch_lines_queued.set(queued)

    async def _expire_unsealed(self, key: str) -> None:
        at = int(time.time())

        def expired(r: BatchRecord) -> BatchRecord | None:
            if not r.receiving:
                return None
            return msgspec.structs.replace(r, status="expired", receiving=False, expired_at=at)

        record = await self._change(key, expired)
        if record.expired_at == at:
            await self._purge_intake(record)

    async def _tell(self, key: str) -> None:
        """What this edge finished goes into the record's counts (the final counts come from the
        results themselves)."""
        done = self._done.pop(key, None)
        if not done or not any(done):
            return
        completed, failed = done

        def add(r: BatchRecord) -> BatchRecord:
            c = r.request_counts
            return msgspec.structs.replace(
                r, request_counts=Counts(c.total, c.completed + completed, c.failed + failed)
            )

        await self._change(key, add)

    async def _waiting(self, record: BatchRecord) -> int | None:
        """The batch's lines not acknowledged yet (queued or running); None before it has a consumer."""
        assert self._js is not None
        try:
            info = await self._js.consumer_info(streams.BATCH_LINES.name, batches.consumer(record.id))
        except NotFoundError:
            return None
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

    async def _finalize(self, key: str) -> None:
        """The results into the output and error files; the batch ends."""

        def finalizing(r: BatchRecord) -> BatchRecord | None:
            taken = self._turn(("in_progress", "cancelling", "finalizing"))(r)
            if taken is None or taken.status != "in_progress":
                return taken
            return msgspec.structs.replace(taken, status="finalizing", finalizing_at=int(time.time()))

        record = await self._change(key, finalizing)
        if record.owner != self.edge_id:
            return
        counts, output, error, unsettled = await self._write_files(record)
        if record.reserved_tokens:
            back = record.reserved_nano * unsettled // record.reserved_tokens
            await self.gate.limiter.release(record.reserved_budget, back, once=f"{record.id}:release")
        now = int(time.time())
        cancelled = record.status == "cancelling"

        def ended(r: BatchRecord) -> BatchRecord:
            common = {
                "request_counts": counts,
                "output_file_id": output,
                "error_file_id": error,
                "owner": "",
                "finalizing_at": r.finalizing_at or now,
            }
            if cancelled:
                return msgspec.structs.replace(r, status="cancelled", cancelled_at=now, **common)
            if r.expiring:
                return msgspec.structs.replace(r, status="expired", expired_at=now, **common)
            return msgspec.structs.replace(r, status="completed", completed_at=now, **common)

        await self._change(key, ended)
        assert self._js is not None
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(streams.BATCH_LINES.name, batches.consumer(record.id))

    async def _write_files(self, record: BatchRecord) -> tuple[Counts, str | None, str | None, int]:
        """Each line's result, in the order of the input, into the output or the error file; and
        the reserved output tokens of the lines that cost nothing."""
        outputs = _result_file(self.desk.store, record, "output")
        errors = _result_file(self.desk.store, record, "error")
        completed = failed = unsettled = 0
        total = record.request_counts.total
        for start in range(0, total, _ENQUEUE_WINDOW):
            numbers = range(start, min(total, start + _ENQUEUE_WINDOW))
            keys = [batches.result_key(record.tenant, record.id, n) for n in numbers]
            found = await asyncio.gather(*(self._stored(k) for k in keys))
            for number, stored in zip(numbers, found, strict=True):
                result = stored
                if result is None:  # acknowledged without a result: it cannot be, but say so if it is
                    log.error("batch %s: line %d has no result", record.id, number)
                    result = LineResult(
                        custom_id="",
                        request_id=batches.request_id(record.id, number),
                        error=LineError(code="missing_result", message="This request's result was lost."),
                    )
                unsettled += result.unsettled
                line_id = f"batch_req_{number}_{record.id.removeprefix('batch_')}"
                if result.succeeded:
                    completed += 1
                    await outputs.write(result.output_line(line_id) + b"\n")
                else:
                    failed += 1
                    await errors.write(result.output_line(line_id) + b"\n")
        return Counts(total, completed, failed), await outputs.close(), await errors.close(), unsettled


class _FileWriter:
    """A file streamed into the files' store as its bytes come: a batch's result files, a door
    batch's input file. Its id is fixed by the batch: written again after a crash, it is the same file."""

    def __init__(self, store: files.Files, tenant: str, file_id: str, filename: str, purpose: str) -> None:
        self.store = store
        self.tenant = tenant
        self.file_id = file_id
        self.filename = filename
        self.purpose = purpose
        self.size = 0
        self._pipe: files.Pipe | None = None
        self._put: asyncio.Task[Any] | None = None
        self._held = bytearray()

    async def write(self, data: bytes) -> None:
        """Take ``data`` (a line, say): handed on in pieces of the store's chunk size, not line by line."""
        self.size += len(data)
        self._held += data
        if len(self._held) >= _PIECE:
            await self._flush()

    async def _flush(self) -> None:
        if not self._held:
            return
        if self._pipe is None:
            self._pipe = files.Pipe()
            name = files.object_name(self.tenant, self.file_id)
            self._put = asyncio.create_task(self.store.objects.put(name, self._pipe))  # type: ignore[arg-type]
        await self._pipe.write_chunk(bytes(self._held))
        self._held.clear()

    def _record(self) -> files.FileRecord:
        now = int(time.time())
        return files.FileRecord(
            id=self.file_id,
            bytes=self.size,
            created_at=now,
            expires_at=now + int(streams.FILES.ttl_s),
            filename=self.filename,
            purpose=self.purpose,
        )

    async def close(self, *, keep_empty: bool = False) -> str | None:
        """The file's id, once stored; None if nothing was written (no file, unless ``keep_empty``)."""
        await self._flush()
        if self._pipe is None or self._put is None:
            if not keep_empty:
                return None
            await self.store.objects.put(files.object_name(self.tenant, self.file_id), b"")
        else:
            self._pipe.end()
            await self._put
        await self.store.put(self.tenant, self._record())
        return self.file_id


def _result_file(store: files.Files, record: BatchRecord, kind: Literal["output", "error"]) -> _FileWriter:
    file_id = batches.output_file_id(record.id, kind)
    return _FileWriter(store, record.tenant, file_id, f"{record.id}_{kind}.jsonl", "batch_output")


async def _keep_taken(msg: Msg, every_s: float) -> None:
    """Tell JetStream the line is being worked on, so that only a dead edge's lines come back."""
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(NatsError, TimeoutError):
            await msg.in_progress()


def _no_stream(stream: bool | None) -> None:
    if stream:
        raise InvalidRequest("'stream' is not supported in a batch.", param="stream")


def _checked_line(raw: bytes, endpoint: str, seen: set[str]) -> dict[str, Any] | LineError:
    """The line, decoded, if it is a request the batch can run; else what is wrong with it."""
    try:
        line = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return LineError(code="invalid_json_line", message="This line is not valid JSON.")
    if not isinstance(line, dict):
        return LineError(code="invalid_json_line", message="This line is not a JSON object.")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(code="missing_required_parameter", message="Missing 'custom_id'.", param="custom_id")
    if custom_id in seen:
        return LineError(
            code="duplicate_custom_id",
            message=f"The custom_id {custom_id[:64]!r} is used more than once.",
            param="custom_id",
        )
    seen.add(custom_id)
    if line.get("method") != "POST":
        return LineError(code="invalid_method", message="The 'method' must be 'POST'.", param="method")
    if line.get("url") != endpoint:
        return LineError(
            code="mismatched_url", message=f"The 'url' must be the batch's endpoint, {endpoint}.", param="url"
        )
    if not isinstance(line.get("body"), dict) or not isinstance(line["body"].get("model"), str):
        return LineError(
            code="invalid_body", message="The 'body' must be a request object with a 'model'.", param="body"
        )
    return line


def _reserved(record: BatchRecord) -> bool:
    """Whether the batch took its budget when it started (its lines then take their parts)."""
    return bool(record.reserved_budget or record.reserved_tokens)


def _ended(line: Line, request_id: str, code: str, message: str) -> LineResult:
    return LineResult(
        custom_id=line.custom_id, request_id=request_id, error=LineError(code=code, message=message)
    )


def _refused(line: Line, request_id: str, exc: LlmaasError, usage: Any = None) -> LineResult:
    envelope = error_body(exc.message, exc.type, exc.param, exc.code)
    return LineResult(
        custom_id=line.custom_id,
        request_id=request_id,
        status_code=exc.status,
        body=msgspec.Raw(envelope),
        usage=usage,
    )


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > batches.MAX_METADATA:
        raise InvalidRequest(f"'metadata' holds at most {batches.MAX_METADATA} pairs.", param="metadata")
    for name, value in metadata.items():
        if len(name) > 64 or not isinstance(value, str) or len(value) > 512:
            raise InvalidRequest(
                "'metadata' keys are at most 64 characters, values strings of at most 512.", param="metadata"
            )
