"""The guard service: a queue-group consumer that screens each job and forwards what passes.

A blocked job is answered on its reply subject with a 400 and never reaches the scheduler.
"""

from __future__ import annotations

import logging
import time

from nats.aio.client import Client
from nats.aio.msg import Msg

from guard.metrics import GuardMetrics
from guard.screening import Screener
from guard.settings import GuardSettings
from llmaas import codec, natsconn, subjects
from llmaas.errors import InvalidRequest
from llmaas.metrics_server import expose
from llmaas.wire import Failed

log = logging.getLogger(__name__)


class GuardService:
    def __init__(self, settings: GuardSettings, screener: Screener, metrics: GuardMetrics) -> None:
        self.settings = settings
        self.screener = screener
        self.metrics = metrics
        self._nc: Client | None = None

    @property
    def nc(self) -> Client:
        assert self._nc is not None, "start() first"
        return self._nc

    async def start(self) -> None:
        self._nc = await natsconn.connect(self.settings.nats_url, "guard")
        await self.nc.subscribe(subjects.GUARD, queue=subjects.GUARD_QUEUE, cb=self._on_job)
        await self.nc.flush()
        expose(self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port)
        log.info("guard ready (%d layers)", len(self.screener.layers))

    async def stop(self) -> None:
        await natsconn.close(self.nc)

    async def _on_job(self, msg: Msg) -> None:
        if not msg.reply:
            self.metrics.errors.labels("no_reply").inc()
            return
        try:
            job = codec.job_decoder.decode(msg.data)
        except codec.DecodeError:
            self.metrics.errors.labels("undecodable").inc()
            error = InvalidRequest("The job could not be decoded.", code="invalid_job")
            await self.nc.publish(msg.reply, codec.encode(Failed(error=error.to_wire())))
            return
        started = time.perf_counter()
        verdict = self.screener.screen(job)
        self.metrics.screen_seconds.observe(time.perf_counter() - started)
        if verdict.blocked:
            self.metrics.screened.labels("blocked").inc()
            error = InvalidRequest(
                f"The prompt was rejected by the platform's prompt security policy "
                f"({verdict.layer}: {', '.join(verdict.rules)}).",
                code="prompt_rejected",
            )
            await self.nc.publish(msg.reply, codec.encode(Failed(error=error.to_wire())))
            return
        self.metrics.screened.labels("allowed").inc()
        await self.nc.publish(subjects.SCHEDULER, msg.data, reply=msg.reply)
