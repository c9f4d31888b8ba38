"""The guard service: a queue-group consumer that screens each job and forwards what passes.

A blocked job is answered on its reply subject with a 400, never reaches the scheduler, and is
published as a security event. A tenant an administrator exempted (``guard_enabled`` false in the
tenant directory, which every replica follows) is forwarded unscreened.

nats-py hands a subscription's messages to its callback one at a time; the behaviour layer waits on
the history store, so each job is screened in its own task (at most ``guard_concurrency`` at once;
the callback waits for a free slot, which leaves the backlog to NATS). Each tenant gets a bounded
share of those slots and of the bytes they hold (``guard.shares``), and long texts are screened in
slices that let other jobs run between them (``guard.screening``), so one tenant's huge prompts
delay neither another tenant's screening nor the history store's round trips.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from guard import events
from guard.history import HistoryUnavailable, KvHistory
from guard.layers.learned import LearnedLayer
from guard.metrics import GuardMetrics
from guard.scoring import BatchScorer
from guard.screening import ALLOW, Screener, Verdict, user_texts
from guard.settings import GuardSettings
from guard.shares import TenantShares
from llmaas import codec, hops, natsconn, streams, subjects
from llmaas.directory import Directory
from llmaas.errors import InvalidRequest, RateLimited
from llmaas.handlers import Handler, Handlers
from llmaas.metrics_server import expose
from llmaas.outbox import Outbox
from llmaas.wire import Job, Screened, SecurityEvent

log = logging.getLogger(__name__)

_CLEARED = Screened()
_LEARNED = LearnedLayer.name
_EVENTS_QUEUED = 10_000  # blocked prompts held while the stream is away: bounded memory


class GuardService:
    def __init__(
        self,
        settings: GuardSettings,
        screener: Screener,
        metrics: GuardMetrics,
        history: KvHistory | None = None,
        learned: LearnedLayer | None = None,
    ) -> None:
        """``history`` is the behaviour layer's store, attached to NATS at start."""
        self.settings = settings
        self.screener = screener
        self.learned = learned
        self._scorer = BatchScorer(learned) if learned is not None else None
        self.metrics = metrics
        self.history = history
        self.guard_id = secrets.token_hex(4)
        self.directory = Directory()
        self._nc: Client | None = None
        self._slots = asyncio.Semaphore(settings.guard_concurrency)
        self.shares = TenantShares(
            running=settings.guard_tenant_concurrency,
            waiting=settings.guard_tenant_waiting,
            max_bytes=settings.guard_tenant_max_bytes,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        # A blocked prompt's event waits here, not in its job's slot, through a stream election.
        self.events: Outbox[SecurityEvent] = Outbox(
            streams.SECURITY,
            events.publish,
            "security event",
            max_queued=_EVENTS_QUEUED,
            on_lost=metrics.errors.labels("event_not_recorded").inc,  # (0 from the start: alerted on)
        )
        self.handlers = Handlers("guard", metrics.registry)
        self.handlers.add(
            Handler(
                "job",
                subjects.GUARD,
                codec.job_decoder,
                self._on_job,
                subjects.GUARD_QUEUE,
                self._undecodable,
            )
        )

    @property
    def nc(self) -> Client:
        assert self._nc is not None, "start() first"
        return self._nc

    async def start(self) -> None:
        self._nc = await natsconn.connect_as(self.settings, "guard", on_up=self._on_up)
        js = self.nc.jetstream()
        await self.events.open(self.nc, streams.Policy.of(self.settings))
        if self.history is not None:
            await self.history.attach(js)
        await self.directory.open(self.nc, streams.Policy.of(self.settings), keys=False)
        if self._scorer is not None:  # its weights (~1 s), read before the first job rather than on it
            self._scorer.start()
            await self._scorer.warm()
        await self.handlers.attach(self.nc)
        await self.nc.flush()
        expose(self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port)
        names = self.screener.names + (["learned"] if self.learned is not None else [])
        log.info("guard %s ready (layers: %s)", self.guard_id, ", ".join(names) or "none")

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self.events.close()
        await self.directory.close()
        await natsconn.close(self.nc)
        if self._scorer is not None:
            await self._scorer.stop()

    async def _on_up(self) -> None:
        self.directory.resync()
        if self.history is not None:
            try:
                await self.history.attach(self.nc.jetstream())
            except (NatsError, TimeoutError) as exc:  # each prompt then fails open and says so
                log.error("prompt history bucket not restored (%s)", type(exc).__name__)

    async def _on_job(self, job: Job, msg: Msg) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(job, msg))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("screening failed", exc_info=task.exception())

    async def _undecodable(self, msg: Msg) -> None:
        self.metrics.errors.labels("undecodable").inc()
        if msg.reply:
            error = InvalidRequest("The job could not be decoded.", code="invalid_job")
            await hops.fail(self.nc, msg.reply, error)

    async def _handle(self, job: Job, msg: Msg) -> None:
        to = hops.frames_to(job, msg)
        if not to:
            self.metrics.errors.labels("no_reply").inc()
            return
        tenant = self.directory.tenant(job.caller.tenant) if job.caller.tenant else None
        if tenant is not None and not tenant.guard_enabled:
            self.metrics.screened.labels("exempt").inc()
            if await self._forward(job, msg, to):
                await self._clear(job, to)
            return
        owner = job.caller.tenant or ""
        # The edge holds the answer until the verdict (``screening``): a long text, whose rules cost
        # milliseconds, goes on to the engine at once and is screened while it prefills; a short
        # one is screened first (a fraction of a millisecond), so that a blocked one never starts.
        texts = user_texts(job)
        ahead = job.screening and sum(map(len, texts)) > self.settings.guard_series_chars
        if ahead and not await self._forward(job, msg, to):
            return
        try:
            async with self.shares.turn(owner, len(msg.data)):
                verdict = await self._screen(job)
        except RateLimited as exc:
            self.metrics.errors.labels("tenant_share_full").inc()
            await (self._publish(to, Screened(error=exc.to_wire())) if ahead else hops.fail(self.nc, to, exc))
            return
        # Signals alone (a quoted order, a role-play...) are weighed by the model where it can judge;
        # such a job waits here for the score (an engine sees it only if the model clears it).
        if self.learned is not None and self.learned.weighs(verdict, texts):
            if job.screening and not ahead and not verdict.blocked:  # the model's time beside the engine's
                if not await self._forward(job, msg, to):
                    return
                ahead = True
            threshold = tenant.guard_threshold if tenant is not None else None
            verdict = await self._score(texts, owner, len(msg.data), threshold, verdict)
        if ahead:
            await self._conclude(job, to, verdict)
            return
        if verdict.blocked:
            await self._block(job, verdict, to)
            return
        self.metrics.screened.labels("allowed").inc()
        if await self._forward(job, msg, to):
            await self._clear(job, to)

    async def _conclude(self, job: Job, to: str, verdict: Verdict) -> None:
        """The verdict on a job already forwarded."""
        if verdict.blocked:
            await self._block(job, verdict, to)
        else:
            self.metrics.screened.labels("allowed").inc()
            await self._clear(job, to)

    async def _block(self, job: Job, verdict: Verdict, to: str) -> None:
        """Ends the job with a 400 that says what decided (the frame a screening edge waits for, or
        a plain failure), and records the security event."""
        self.metrics.screened.labels("blocked").inc()
        for rule in ("model",) if verdict.layer == _LEARNED else verdict.rules:
            self.metrics.blocked.labels(verdict.layer, rule).inc()
        error = InvalidRequest(
            f"The prompt was rejected by the platform's prompt security policy "
            f"({verdict.layer}: {', '.join(verdict.reasons)}).",
            code="prompt_rejected",
        )
        if job.screening:
            await self._publish(to, Screened(error=error.to_wire()))
        else:
            await hops.fail(self.nc, to, error)
        self._record(job, verdict)

    async def _clear(self, job: Job, to: str) -> None:
        if job.screening:
            await self._publish(to, _CLEARED)

    async def _publish(self, to: str, frame: Screened) -> None:
        try:
            await self.nc.publish(to, codec.encode(frame))
        except NatsError as exc:  # the edge's watchdog ends the request: it never hangs
            self.metrics.errors.labels("verdict_not_sent").inc()
            log.warning("verdict not sent (%s)", type(exc).__name__)

    async def _score(
        self, texts: list[str], owner: str, size: int, threshold: float | None, ruled: Verdict
    ) -> Verdict:
        """The verdict with the learned layer's score, computed in the guard's scoring thread
        (``guard.scoring``), within the tenant's share of this replica (a tenant's flood waits
        behind its own jobs); ``ruled``: what the rule layers said (ALLOW, or signals to weigh)."""
        learned, scorer = self.learned, self._scorer
        assert learned is not None and scorer is not None
        started = time.perf_counter()
        try:
            async with self.shares.turn(owner, size):
                score = await scorer.score(texts, owner)
        except RateLimited:
            # A screening job is already on its way: a full share skips the model rather than
            # refuse work the rules let through (signals then block as they would without a
            # model); the metric says so.
            self.metrics.errors.labels("learned_skipped").inc()
            return ruled
        self.metrics.score_seconds.observe(time.perf_counter() - started)
        threshold = threshold if threshold is not None else self.settings.guard_threshold
        verdict = learned.decide(ruled, score, threshold, self.settings.guard_signal_bar)
        if ruled.blocked:
            self.metrics.weighed.labels("blocked" if verdict.blocked else "cleared").inc()
        return verdict

    async def _forward(self, job: Job, msg: Msg, to: str) -> bool:
        """To a scheduler, which says it took the job; if none does, the edge hears it at once."""
        data = msg.data if job.reply else codec.encode(msgspec.structs.replace(job, reply=to))
        try:
            await hops.hand_over(self.nc, subjects.SCHEDULER, data, self.settings.hop_timeout_s, "scheduler")
        except (hops.NobodyThere, hops.NotTaken) as exc:
            gone = isinstance(exc, hops.NobodyThere)
            self.metrics.errors.labels("no_scheduler" if gone else "scheduler_timeout").inc()
            await hops.fail(self.nc, to, exc)
            return False
        return True

    async def _screen(self, job: Job) -> Verdict:
        started = time.perf_counter()
        try:
            verdict = await self.screener.screen(job)
        except HistoryUnavailable as exc:
            # The stateless layers passed it; without its history the behaviour layer cannot judge.
            # Failing open keeps the platform serving through a NATS hiccup; the metric shows it.
            log.warning("prompt history unavailable (%s); behaviour layer skipped", exc)
            self.metrics.errors.labels("history_unavailable").inc()
            verdict = ALLOW
        self.metrics.screen_seconds.observe(time.perf_counter() - started)
        return verdict

    def _record(self, job: Job, verdict: Verdict) -> None:
        self.events.record(events.event_of(job, user_texts(job), verdict, self.guard_id))
