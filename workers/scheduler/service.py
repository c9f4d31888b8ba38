"""The scheduler service: keeps the fleet from heartbeats and forwards each job to its chosen worker.

The job's bytes are forwarded untouched (no re-encoding) with the edge's reply subject, so the
worker answers the edge directly.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.client import Client
from nats.aio.msg import Msg

from llmaas import codec, natsconn, subjects
from llmaas.errors import Unavailable
from llmaas.fleet import Fleet
from llmaas.metrics_server import expose
from llmaas.wire import Failed
from workers.scheduler.metrics import SchedulerMetrics
from workers.scheduler.placement import pick
from workers.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)


class SchedulerService:
    def __init__(self, settings: SchedulerSettings, metrics: SchedulerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.fleet = Fleet()
        self._nc: Client | None = None
        self._ready_at = 0.0

    @property
    def nc(self) -> Client:
        assert self._nc is not None, "start() first"
        return self._nc

    async def start(self) -> None:
        self._nc = await natsconn.connect_as(self.settings, "scheduler")
        self._ready_at = time.monotonic() + self.settings.warmup_s
        await self.nc.subscribe(subjects.HEARTBEATS, cb=self._on_heartbeat)
        await self.nc.subscribe(subjects.SCHEDULER, queue=subjects.SCHEDULER_QUEUE, cb=self._on_job)
        await self.nc.flush()
        expose(self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port)
        log.info("scheduler ready")

    async def stop(self) -> None:
        await natsconn.close(self.nc)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = codec.heartbeat_decoder.decode(msg.data)
        except codec.DecodeError:
            return
        now = time.monotonic()
        self.fleet.observe(beat, now)
        self.fleet.expire(now)

    async def _on_job(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            job = codec.job_decoder.decode(msg.data)
        except codec.DecodeError:
            log.warning("undecodable job dropped")
            return
        started = time.perf_counter()
        now = time.monotonic()
        worker = pick(job.model, self.fleet.snapshot(now))
        if worker is None and now < self._ready_at:
            # Just started: heartbeats may not have arrived yet; answering "no worker" would be a lie.
            await asyncio.sleep(self._ready_at - now)
            now = time.monotonic()
            worker = pick(job.model, self.fleet.snapshot(now))
        self.metrics.place_seconds.observe(time.perf_counter() - started)
        if worker is None:
            self.metrics.placements.labels("no_worker").inc()
            error = Unavailable(
                f"No worker is serving model '{job.model}' right now.",
                code="model_unavailable",
                param="model",
                retry_after_s=self.settings.retry_after_s,
            )
            await self.nc.publish(msg.reply, codec.encode(Failed(error=error.to_wire())))
            return
        self.fleet.note_assigned(worker.worker_id)
        self.metrics.placements.labels("placed").inc()
        await self.nc.publish(subjects.worker_jobs(worker.worker_id), msg.data, reply=msg.reply)
