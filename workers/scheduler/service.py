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

from llmaas import blocks, codec, hops, natsconn, subjects
from llmaas.errors import Unavailable
from llmaas.fleet import Fleet
from llmaas.handlers import Handler, Handlers
from llmaas.metrics_server import expose
from llmaas.wire import CacheEvents, Cancel, EmbedJob, Heartbeat, Job, Progress
from workers.scheduler.metrics import SchedulerMetrics
from workers.scheduler.placement import POLICIES, Ask, Placer, weighted
from workers.scheduler.prefixes import PrefixIndex
from workers.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

_ATTEMPTS = 3
"""Workers tried for one job when the chosen ones turn out to be gone."""

_PLACED_MAX = 100_000
"""Jobs remembered until their worker says they ended; beyond, the oldest are let go (their ends
were lost): heartbeats still carry the load."""


class SchedulerService:
    def __init__(self, settings: SchedulerSettings, metrics: SchedulerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.fleet = Fleet()
        self.placer = Placer(weighted(POLICIES[settings.placement_policy], settings.placement_weights))
        self.prefixes = PrefixIndex()
        """Which worker holds which prefix blocks, from the workers' cache events."""
        self._placed: dict[str, tuple[str, int]] = {}
        """Request id -> (worker, prompt tokens expected to be computed) until its first token,
        then (worker, 0) until it ends: this replica's own count between heartbeats."""
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
        self.handlers.add(
            Handler("cache", subjects.CACHE_EVENTS, codec.cache_events_decoder, self._on_cache_events)
        )
        self.handlers.add(Handler("progress", subjects.PROGRESS, codec.progress_decoder, self._on_progress))

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
        if beat.worker_id != subjects.worker_of(msg.subject):
            return  # a worker speaks only for itself (its identity may publish on its own subject only)
        now = time.monotonic()
        self.fleet.observe(beat, now)
        for gone in self.fleet.expire(now):
            self._forget(gone)

    def _forget(self, worker_id: str) -> None:
        self.fleet.forget(worker_id)
        self.prefixes.forget(worker_id)
        self.placer.placed.forget(worker_id)
        for request_id in [r for r, (w, _) in self._placed.items() if w == worker_id]:
            del self._placed[request_id]

    async def _on_cache_events(self, events: CacheEvents, msg: Msg) -> None:
        worker = subjects.worker_of(msg.subject)
        if events.removed:
            self.prefixes.removed(worker, events.model, events.removed)
        if events.stored and self.fleet.is_alive(worker, time.monotonic()):
            self.prefixes.stored(worker, events.model, events.stored)

    async def _on_progress(self, progress: Progress, msg: Msg) -> None:
        """First tokens and ends of jobs; only those this replica placed count (each replica counts
        its own placements, and every replica hears the same heartbeats)."""
        worker = subjects.worker_of(msg.subject)
        for request_id in progress.started:
            placed = self._placed.get(request_id)
            if placed is not None and placed[0] == worker:
                self.fleet.note_first_token(worker, placed[1])
                self._placed[request_id] = (worker, 0)
        for request_id in progress.ended:
            placed = self._placed.get(request_id)
            if placed is not None and placed[0] == worker:
                del self._placed[request_id]
                self.fleet.note_first_token(worker, placed[1])  # an embedding has no first token
                self.fleet.note_ended(worker)

    def _count(self, request_id: str, worker: str, prefill_tokens: int) -> None:
        self.fleet.note_assigned(worker, prefill_tokens)
        self._placed[request_id] = (worker, prefill_tokens)
        if len(self._placed) > _PLACED_MAX:
            del self._placed[next(iter(self._placed))]

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
        ask = _ask(job, self.placer.policy.prefixes != "none")
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
            self._count(job.request_id, wid, chosen.uncached_tokens(ask))
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


def _ask(job: Job, with_blocks: bool) -> Ask:
    """What placement knows of a job: its prompt's length and (for a policy that uses them) the
    ids of its blocks, as the simulated engine and the index name them."""
    if isinstance(job, EmbedJob):
        return Ask(job.model, prompt_tokens=sum(map(len, job.inputs)) // blocks.CHARS_PER_TOKEN)
    ids = blocks.of_job(job) if with_blocks else ()
    return Ask(job.model, blocks=ids, prompt_tokens=blocks.prompt_tokens(job))
