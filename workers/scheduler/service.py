"""The scheduler service: keeps the fleet from heartbeats and forwards each job to its chosen worker.

The job's bytes are forwarded untouched (no re-encoding) with the edge's reply subject, so the
worker answers the edge directly.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from llmaas import codec, hops, natsconn, subjects
from llmaas.errors import Unavailable
from llmaas.fleet import Fleet
from llmaas.handlers import Handler, Handlers
from llmaas.metrics_server import expose
from llmaas.wire import Cancel, GenerateJob, Heartbeat, Job
from workers.scheduler.metrics import SchedulerMetrics
from workers.scheduler.placement import POLICIES, Ask, Placer
from workers.scheduler.prefixes import PrefixIndex
from workers.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

_ATTEMPTS = 3
"""Workers tried for one job when the chosen ones turn out to be gone."""


class SchedulerService:
    def __init__(self, settings: SchedulerSettings, metrics: SchedulerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.fleet = Fleet()
        self.placer = Placer(POLICIES[settings.placement_policy])
        self.prefixes = PrefixIndex()
        """Which worker holds which prefix blocks, from the workers' cache events."""
        self._nc: Client | None = None
        self._ready_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self.handlers = Handlers("scheduler", metrics.registry)
        self.handlers.add(
            Handler("heartbeat", subjects.HEARTBEATS, codec.heartbeat_decoder, self._on_heartbeat)
        )
        self.handlers.add(
            Handler("job", subjects.SCHEDULER, codec.job_decoder, self._on_job, subjects.SCHEDULER_QUEUE)
        )

    @property
    def nc(self) -> Client:
        assert self._nc is not None, "start() first"
        return self._nc

    async def start(self) -> None:
        self._nc = await natsconn.connect_as(self.settings, "scheduler")
        self._ready_at = time.monotonic() + self.settings.warmup_s
        await self.handlers.attach(self.nc)
        await self.nc.flush()
        expose(self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port)
        log.info("scheduler ready")

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await natsconn.close(self.nc)

    async def _on_heartbeat(self, beat: Heartbeat, msg: Msg) -> None:
        now = time.monotonic()
        self.fleet.observe(beat, now)
        for gone in self.fleet.expire(now):
            self._forget(gone)

    def _forget(self, worker_id: str) -> None:
        self.fleet.forget(worker_id)
        self.prefixes.forget(worker_id)
        self.placer.placed.forget(worker_id)

    async def _on_job(self, job: Job, msg: Msg) -> None:
        if not msg.reply:
            return
        data = msg.data
        if job.reply:
            await hops.took(msg)  # the guard hears at once that a scheduler has it
        else:  # an older guard: the message's reply is the edge's subject
            job = msgspec.structs.replace(job, reply=msg.reply)
            data = codec.encode(job)
        # Placement waits on the worker's word: in a task of its own, never in the next job's way.
        task = asyncio.create_task(self._place(job, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _place(self, job: Job, data: bytes) -> None:
        """On the chosen worker, which says it took the job; a worker that is gone (nobody took
        it) is forgotten and the next one chosen, at once."""
        ask = _ask(job)
        for _ in range(_ATTEMPTS):
            started = time.perf_counter()
            now = time.monotonic()
            chosen = self.placer.pick(ask, self.fleet.snapshot(now), self.prefixes)
            if chosen is None and now < self._ready_at:
                # Just started: heartbeats may not have arrived yet; answering "no worker" would be a lie.
                await asyncio.sleep(self._ready_at - now)
                chosen = self.placer.pick(ask, self.fleet.snapshot(time.monotonic()), self.prefixes)
            self.metrics.place_seconds.observe(time.perf_counter() - started)
            if chosen is None:
                self.metrics.placements.labels("no_worker").inc()
                error = Unavailable(
                    f"No worker is serving model '{job.model}' right now.",
                    code="model_unavailable",
                    param="model",
                    retry_after_s=self.settings.retry_after_s,
                )
                await hops.fail(self.nc, job.reply, error)
                return
            wid = chosen.worker.worker_id
            self.fleet.note_assigned(wid, chosen.uncached_tokens(ask))
            try:
                await hops.hand_over(
                    self.nc, subjects.worker_jobs(wid), data, self.settings.hop_timeout_s, f"worker {wid}"
                )
            except hops.NobodyThere:
                self.metrics.placements.labels("worker_gone").inc()
                log.warning("worker %s is gone (nobody took a job sent to it); placing elsewhere", wid)
                self._forget(wid)
                continue
            except hops.NotTaken as exc:
                self.metrics.placements.labels("not_taken").inc()
                # It may yet take it: it must not run an answer nobody waits for (nor bills).
                await self.nc.publish(
                    subjects.worker_cancel(wid), codec.encode(Cancel(request_id=job.request_id))
                )
                await hops.fail(self.nc, job.reply, exc)
                return
            self.metrics.placements.labels("placed").inc()
            return
        error = Unavailable("No worker took the request; retry shortly.", retry_after_s=1)
        await hops.fail(self.nc, job.reply, error)


_CHARS_PER_TOKEN = 4
"""A prompt's tokens as placement guesses them before any tokenizer ran (English text averages ~4)."""


def _ask(job: Job) -> Ask:
    if isinstance(job, GenerateJob):
        chars = len(job.prompt) + sum(len(m.content) for m in job.messages)
    else:
        chars = sum(map(len, job.inputs))
    return Ask(job.model, prompt_tokens=chars // _CHARS_PER_TOKEN)
