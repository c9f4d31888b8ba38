"""The worker service: one subscription for its jobs, one for cancels, and a heartbeat loop.

Each job runs in its own task; a cancel (client gone) cancels that task, which closes the engine's
iterator and so stops generation in the engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from llmaas import codec, hops, natsconn, seals, subjects
from llmaas.errors import LlmaasError, ServerError, Unavailable
from llmaas.handlers import Handler, Handlers
from llmaas.metrics_server import expose
from llmaas.wire import (
    Accepted,
    Cancel,
    Done,
    EmbedJob,
    Failed,
    GenerateJob,
    Heartbeat,
    Job,
    Usage,
    WorkRecord,
)
from workers.engines.base import Engine
from workers.worker.metrics import WorkerMetrics
from workers.worker.settings import WorkerSettings
from workers.worker.signals import Signals

log = logging.getLogger(__name__)

DEFERRED = "batch_deferred"
"""A batch job refused for want of batch seats: its line is put back, to run later."""
PREEMPTED = "batch_preempted"
"""A batch job stopped for interactive work: its line is put back, unbilled."""


@dataclass
class _Done:
    """What one job produced so far: the engine's usage at the end, else the tokens streamed."""

    usage: Usage | None = None
    generated: int = 0
    finish_reason: str = ""


class WorkerService:
    def __init__(self, settings: WorkerSettings, engine: Engine, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        metrics.watch_engine(engine.load)
        self.worker_id = settings.worker_id
        self._nc: Client | None = None
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._batch: dict[str, None] = {}
        """Batch jobs running, oldest first (the youngest yields first)."""
        self._preempted: set[str] = set()
        self._records: set[asyncio.Task[None]] = set()
        self._records_failing = False
        self.handlers = Handlers("worker", metrics.registry)
        self.handlers.add(
            Handler("job", subjects.worker_jobs(self.worker_id), codec.job_decoder, self._on_job)
        )
        self.handlers.add(
            Handler("cancel", subjects.worker_cancel(self.worker_id), codec.cancel_decoder, self._on_cancel)
        )
        self._signals: Signals | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._leaving = False
        self._started_at = time.time()
        self.failed = asyncio.Event()
        """Set when the engine has died: the process stops and exits non-zero (see runtime)."""

    @property
    def nc(self) -> Client:
        assert self._nc is not None, "start() first"
        return self._nc

    async def start(self) -> None:
        await self.engine.start()
        self._nc = await natsconn.connect_as(self.settings, f"worker:{self.worker_id}")
        self._signals = Signals(self.nc, self.worker_id, self.engine.models[0])
        self._signals.start()
        self.engine.watch_cache(self._signals.cache)
        await self.handlers.attach(self.nc)
        await self.nc.flush()
        self._heartbeat_task = asyncio.create_task(self._heartbeats())
        expose(self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port)
        log.info("worker %s serving %s (engine %s)", self.worker_id, self.engine.models, self.engine.name)

    async def stop(self) -> None:
        """Leave the pool, let running jobs finish for ``drain_timeout_s``, fail the rest, disconnect."""
        self._leaving = True
        await self._beat()
        if self._jobs:
            log.info("draining %d jobs", len(self._jobs))
            await asyncio.wait(list(self._jobs.values()), timeout=self.settings.drain_timeout_s)
        for task in list(self._jobs.values()):
            task.cancel()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        if self._jobs:  # cancelled just now: their records follow
            await asyncio.wait(list(self._jobs.values()), timeout=1)
        if self._records:
            await asyncio.wait(set(self._records), timeout=5)
        if self._signals is not None:
            await self._signals.stop()
        await natsconn.close(self.nc)
        await self.engine.stop()

    # --- handlers -----------------------------------------------------------------------------

    async def _on_job(self, job: Job, msg: Msg) -> None:
        if not (msg.reply or job.reply):
            log.warning("job without a reply subject dropped")
            return
        if job.reply:
            await hops.took(msg)  # the scheduler hears at once that this worker has it
        to = hops.frames_to(job, msg)
        if self._leaving:
            error = Unavailable("The worker is shutting down; retry.", retry_after_s=1)
            await hops.fail(self.nc, to, error)
            return
        if not self._make_room(job):
            self.metrics.batch_yielded.labels("refused").inc()
            error = Unavailable("This worker's batch seats are taken; the line runs later.", code=DEFERRED)
            await hops.fail(self.nc, to, error)
            return
        self._jobs[job.request_id] = asyncio.create_task(self._run(job, to))

    def _make_room(self, job: Job) -> bool:
        """Batch work below interactive work: a batch job only within the batch share of the
        capacity; an interactive job that finds the worker full stops the youngest batch job."""
        capacity = self.engine.load().capacity
        if isinstance(job, GenerateJob) and job.priority > 0:
            share = self.settings.batch_share
            if len(self._batch) >= (max(1, int(capacity * share)) if share else 0):
                return False
            self._batch[job.request_id] = None
            self.metrics.batch_running.set(len(self._batch))
            return True
        if len(self._jobs) >= capacity and self._batch:
            youngest = next(reversed(self._batch))
            if (task := self._jobs.get(youngest)) is not None:
                self._preempted.add(youngest)
                task.cancel()
        return True

    async def _on_cancel(self, cancel: Cancel, msg: Msg) -> None:
        task = self._jobs.get(cancel.request_id)
        if task is not None:
            task.cancel()

    # --- jobs ---------------------------------------------------------------------------------

    async def _run(self, job: Job, reply: str) -> None:
        publish, encode = self.nc.publish, codec.encode
        arrived = time.perf_counter()
        outcome = "ok"
        done = _Done()
        self.metrics.in_flight.inc()
        try:
            self.engine.check(job)
            await publish(reply, encode(Accepted(worker_id=self.worker_id)))
            if isinstance(job, EmbedJob):
                result = await self.engine.embed(job)
                done.usage = result.usage
                self.metrics.tokens.labels(job.model, "prompt").inc(result.usage.prompt_tokens)
                await publish(reply, encode(result))
            else:
                await self._generate(job, reply, arrived, done)
        except asyncio.CancelledError:
            outcome = "cancelled"
            if job.request_id in self._preempted:
                self.metrics.batch_yielded.labels("preempted").inc()
                error = Unavailable("Stopped for interactive work; the line runs later.", code=PREEMPTED)
                await publish(reply, encode(Failed(error=error.to_wire())))
            elif self._leaving:
                error = Unavailable("The worker shut down before the answer was complete.")
                await publish(reply, encode(Failed(error=error.to_wire())))
        except LlmaasError as exc:
            outcome = "error"
            self.metrics.errors.labels(exc.code or "none").inc()
            await publish(reply, encode(Failed(error=exc.to_wire())))
        except Exception:
            outcome = "error"
            log.exception("engine failed on %s", job.request_id)
            self.metrics.errors.labels("engine_error").inc()
            failure = ServerError("The engine failed while serving this request.", code="engine_error")
            await publish(reply, encode(Failed(error=failure.to_wire())))
            self._check_engine()
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(job.model, outcome).inc()
            self._jobs.pop(job.request_id, None)
            if job.request_id in self._batch:
                del self._batch[job.request_id]
                self.metrics.batch_running.set(len(self._batch))
            self._preempted.discard(job.request_id)
            if self._signals is not None:
                self._signals.ended(job.request_id)
            if job.seal and (done.usage is not None or done.generated):
                self._record(job, done)

    def _record(self, job: Job, done: _Done) -> None:
        """The work done for a sealed job, to LLMAAS_WORK (off the answer's path): metering bills
        it only if the job's edge never does (it died mid-answer)."""
        usage = done.usage or Usage(prompt_tokens=0, completion_tokens=done.generated)
        claim = seals.Claim.of_job(job)  # exactly what the edge sealed, as metering will check it
        record = WorkRecord(
            request_id=claim.request_id,
            at=time.time(),
            tenant=claim.tenant,
            token_id=claim.token_id,
            model=claim.model,
            endpoint=job.kind if isinstance(job, GenerateJob) else "embedding",
            max_tokens=claim.max_tokens,
            seal=job.seal,
            worker=self.worker_id,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cached_tokens=usage.cached_tokens,
            finish_reason=done.finish_reason,
        )

        async def send() -> None:
            try:
                await self.nc.jetstream().publish(
                    subjects.work(self.worker_id),
                    msgspec.json.encode(record),
                    timeout=5,
                    headers={"Nats-Msg-Id": job.request_id},
                )
                self._records_failing = False
            except (NatsError, TimeoutError) as exc:
                # Said once per outage: without metering (or its stream) every job would say it.
                if not self._records_failing:
                    log.warning("records of work done not stored (%s); billing falls back on the edges'",
                                type(exc).__name__)  # fmt: skip
                self._records_failing = True

        task = asyncio.create_task(send())
        self._records.add(task)
        task.add_done_callback(self._records.discard)

    async def _generate(self, job: GenerateJob, reply: str, arrived: float, done: _Done) -> None:
        publish, encode = self.nc.publish, codec.encode
        completion = self.metrics.tokens.labels(job.model, "completion")
        first, counted = True, 0
        async for frame in self.engine.generate(job):
            if first:
                self.metrics.ttft.labels(job.model).observe(time.perf_counter() - arrived)
                first = False
                if self._signals is not None:
                    self._signals.started(job.request_id)
                    await self._signals.publish_cache()
            if isinstance(frame, Done):
                self.metrics.tokens.labels(job.model, "prompt").inc(frame.usage.prompt_tokens)
                completion.inc(max(0, frame.usage.completion_tokens - counted))
                done.usage, done.finish_reason = frame.usage, frame.finish_reason
            else:
                # Counted as they stream, so that an aborted answer still counts what it generated.
                completion.inc(frame.tokens)
                counted += frame.tokens
                done.generated = counted
            await publish(reply, encode(frame))

    # --- heartbeats ---------------------------------------------------------------------------

    async def _beat(self) -> None:
        if not self.nc.is_connected:
            return
        load = self.engine.load()
        beat = Heartbeat(
            worker_id=self.worker_id,
            engine=self.engine.name,
            models=self.engine.models,
            running=load.running,
            waiting=load.waiting,
            capacity=load.capacity,
            started_at=self._started_at,
            interval_s=self.settings.heartbeat_interval_s,
            leaving=self._leaving,
            kv_cache_usage=load.kv_cache_usage,
            queued_prefill_tokens=load.queued_prefill_tokens,
            perf=load.perf,
        )
        await self.nc.publish(subjects.heartbeat(self.worker_id), codec.encode(beat))

    def _check_engine(self) -> None:
        """An engine that died cannot recover in this process: leave the pool and let it restart us."""
        if not self.failed.is_set() and not self.engine.healthy():
            log.error("the %s engine died: leaving the pool", self.engine.name)
            self.failed.set()

    async def _heartbeats(self) -> None:
        while True:
            self._check_engine()
            try:
                await self._beat()
            except NatsError as exc:
                # NATS is reconnecting: the next beat goes out once it is back.
                log.debug("heartbeat not sent: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.heartbeat_interval_s)
