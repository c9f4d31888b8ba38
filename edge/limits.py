"""Tier limits, exact across edge replicas: shared counters in a JetStream counter stream.

Every limit is one counter per tenant and fixed UTC window (requests this minute, output tokens this
hour and today, nano-euros this month) or per key (requests in flight). Admission adds the request's
share to each counter atomically on the server (``Nats-Incr``) and reads the new totals from the acks:
if any total passed its limit, the request is refused and its shares are taken back. The server
orders the increments, so N edges admit exactly as many requests as one would: with a limit of 60,
the 61st increment anywhere sees 61. Output tokens are reserved with ``max_tokens`` (or a default) and
settled with the real usage when the request ends; a refused request costs nothing.

A refusal caused by another request's share that is about to be taken back is possible in a burst at
the very edge of a limit (never an admission beyond it).

Requests in flight are leases, so that an edge killed mid-request cannot lock a key out: time is cut
in lease periods (``lease_s``, 30 s) and a key's in-flight count is one counter per period. A request
counts in the period it was admitted in; halfway through each period every edge adds its requests
still running to the next one (one increment per key), and a request admitted after that point adds
itself to both. A request that ends takes itself back from the periods it holds. Whatever a dead
edge held is counted in no period two periods later (``LLMAAS_LEASES`` then drops the old counters).

Increments go through ``edge.counters``: those of one counter that meet while one is in flight go
as one message, each still learning its own total (a busy tenant's requests share round trips).
Settlements are retried for up to ``_SETTLE_RETRY_S`` while NATS is away, each message with its own
id, so that a retried increment whose first ack was lost is applied once (the stream's duplicate
window).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from edge.counters import Counters, increment
from llmaas import retry, streams, subjects
from llmaas.errors import QuotaExceeded, RateLimited, Unavailable
from llmaas.pricing import NANO, PriceList
from llmaas.tenants import ApiKey, Tenant
from llmaas.tiers import Tier
from llmaas.wire import Usage

log = logging.getLogger(__name__)

_SETTLE_RETRY_S = 100.0
_SETTLE_BACKOFF = retry.Backoff(0.25, 2.0, 8.0)
"""Within the limits stream's duplicate window (120 s), so that a retry is never applied twice."""


@dataclass(frozen=True)
class _Counter:
    subject: str
    amount: int
    limit: int
    measure: str  # requests, tokens, budget, concurrency
    resets_at: float  # epoch seconds; 0 for concurrency


@dataclass
class Grant:
    """What admission took, to settle when the request ends, and the headers to send with it."""

    tenant: str
    reserved_tokens: int
    reserved_nano: int
    counters: list[_Counter]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    settled: bool = False
    lease: _Lease | None = None
    batch: bool = False
    """A batch line's: settled at the batch price."""


@dataclass(eq=False)  # one lease, one request: kept in a set by identity
class _Lease:
    """The lease periods in which a request is counted as in flight for its key."""

    tenant: str
    key_id: str
    periods: set[int]

    def subject(self, period: int) -> str:
        return subjects.lease_counter(self.tenant, self.key_id, period)


class Limiter:
    def __init__(self, prices: PriceList, lease_s: float = 30.0) -> None:
        self.prices = prices
        self.lease_s = lease_s
        self._id = secrets.token_hex(6)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._leased: set[_Lease] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._counters = Counters()
        self._settlements = Counters(durable=_SETTLE_BACKOFF, within_s=_SETTLE_RETRY_S)

    async def open(self, nc: Client, policy: streams.Policy = streams.DEFAULT, *, renew: bool = True) -> None:
        """``renew=False``: the caller carries leases over itself (``renew``), as tests do."""
        self._nc = nc
        self._js = nc.jetstream()
        self._counters.open(nc)
        self._settlements.open(nc)
        await asyncio.gather(
            streams.ensure(self._js, streams.LIMITS, policy), streams.ensure(self._js, streams.LEASES, policy)
        )
        if renew:
            self._renewer = asyncio.create_task(self._renew_forever())

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        await asyncio.gather(self._counters.close(), self._settlements.close())

    @property
    def in_flight(self) -> int:
        """Requests holding a lease on this edge."""
        return len(self._leased)

    def period(self, now: float) -> int:
        return int(now // self.lease_s)

    def _late(self, now: float) -> bool:
        """Past the point in its period where running requests were carried into the next one."""
        return now % self.lease_s >= self.lease_s / 2

    async def admit(
        self, tenant: Tenant, key: ApiKey, tier: Tier, max_tokens: int, now: float, *, batch: bool = False
    ) -> Grant:
        """Take this request's share of every limit, or raise RateLimited / QuotaExceeded.

        A batch line (``batch``) takes its share of the monthly budget only, at the batch price: the
        requests per minute, the interactive output-token windows and the keys' requests in flight
        are the interactive traffic's.

        Raises Unavailable when the counters cannot be reached: limits are never skipped silently.
        """
        reserve = max_tokens
        price = self.prices.at(dt.datetime.fromtimestamp(now, dt.UTC).date())
        reserve_nano = price.cost_nano(0, reserve, batch=batch)
        period = self.period(now)
        counters = _counters(
            tenant.name, key.id, tier, reserve=reserve, reserve_nano=reserve_nano, now=now, period=period
        )
        if batch:
            counters = [c for c in counters if c.measure == "budget"]
        grant = Grant(
            tenant=tenant.name,
            reserved_tokens=reserve,
            reserved_nano=reserve_nano,
            counters=counters,
            batch=batch,
        )
        if not counters:
            return grant
        changes = [(c.subject, c.amount) for c in counters]
        if tier.concurrent_per_key is not None and not batch:
            grant.lease = _Lease(tenant.name, key.id, {period})
            if self._late(now):  # the running ones were carried over already: join them
                grant.lease.periods.add(period + 1)
                changes.append((grant.lease.subject(period + 1), 1))
        totals = await self._counted(changes)
        grant.headers = _headers(counters, totals[: len(counters)], now)
        over = [c for c, total in zip(counters, totals, strict=False) if total > c.limit]
        if over:
            # Taken back before the refusal is sent, so the caller's next request sees the window as is.
            await self._spawn(self._counted([(s, -n) for s, n in changes]))
            grant.settled = True
            refusal = _refusal(over, reserve, now)
            refusal.headers = tuple(grant.headers)
            raise refusal
        if grant.lease is not None:
            self._leased.add(grant.lease)
        return grant

    def share(self, subject: str, tokens: int, now: float) -> Grant:
        """A batch line's part of its batch's reservation (made by ``admit`` when the batch started,
        on the budget counter ``subject``; "" if its tier has no budget): nothing is taken now, and
        settling it replaces that part by what the line cost."""
        price = self.prices.at(dt.datetime.fromtimestamp(now, dt.UTC).date())
        nano = price.cost_nano(0, tokens, batch=True)
        counters = [_Counter(subject, nano, 0, "budget", 0.0)] if subject else []
        return Grant(tenant="", reserved_tokens=tokens, reserved_nano=nano, counters=counters, batch=True)

    async def release(self, subject: str, nano: int, once: str) -> None:
        """Give back ``nano`` of a batch's reservation (its lines that never ran), once per ``once``."""
        if subject and nano:
            await self._retried(subject, -nano, once)

    async def budget_left(self, tenant: Tenant, tier: Tier, now: float) -> int | None:
        """Nano-euros left of the tenant's monthly budget (None: its tier has none)."""
        if tier.monthly_budget_eur is None:
            return None
        (counter,) = [
            c
            for c in _counters(tenant.name, "", tier, reserve=0, reserve_nano=0, now=now, period=0)
            if c.measure == "budget"
        ]
        (spent,) = await self._counted([(counter.subject, 0)])
        return counter.limit - spent

    def settle(
        self,
        grant: Grant,
        usage: Usage | None,
        generated_tokens: int,
        *,
        batch: bool = False,
        now: float | None = None,
    ) -> asyncio.Task[None] | None:
        """Replace the reservation by what the request really used, once; the work runs in a task
        that callers may await (answers sent after it see their own usage in the next request)."""
        if grant.settled:
            return None
        grant.settled = True
        if usage is None:  # it broke off: what was generated is what it used
            usage = Usage(prompt_tokens=0, completion_tokens=generated_tokens)
        price = self.prices.at(dt.datetime.now(dt.UTC).date())
        cost = price.cost_nano(
            usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens, batch=batch or grant.batch
        )
        changes: list[tuple[str, int]] = []
        for c in grant.counters:
            if c.measure == "tokens":
                changes.append((c.subject, usage.completion_tokens - grant.reserved_tokens))
            elif c.measure == "budget":
                changes.append((c.subject, cost - grant.reserved_nano))
        if grant.lease is not None:
            self._leased.discard(grant.lease)
            current = self.period(time.time() if now is None else now)
            changes += [(grant.lease.subject(p), -1) for p in grant.lease.periods if p >= current]
        changes = [(s, n) for s, n in changes if n]
        if not changes:
            return None
        return self._spawn(self._settle(changes))

    async def _settle(self, changes: list[tuple[str, int]]) -> list[int]:
        return await asyncio.gather(*(self._settlements.add(s, n) for s, n in changes))

    async def _counted(self, changes: list[tuple[str, int]]) -> list[int]:
        """Each change's total after it, all at once (each counter's in a shared message)."""
        return await asyncio.gather(*(self._counters.add(s, n) for s, n in changes))

    async def _retried(self, subject: str, amount: int, msg_id: str) -> int:
        """One increment, retried while NATS is away (for ``_SETTLE_RETRY_S``); applied once."""

        async def add() -> int:
            return (await self._add([(subject, amount)], msg_id=msg_id))[0]

        return await retry.retried(add, on=Unavailable, backoff=_SETTLE_BACKOFF, within_s=_SETTLE_RETRY_S)

    async def renew(self, now: float) -> None:
        """Carry the requests still running into the next lease period (one increment per key)."""
        period = self.period(now)
        moving = [lease for lease in self._leased if period + 1 not in lease.periods]
        per_key = Counter((lease.tenant, lease.key_id) for lease in moving)
        if not per_key:
            return
        changes = [(subjects.lease_counter(t, k, period + 1), n) for (t, k), n in per_key.items()]
        await asyncio.gather(*(self._add([(s, n)], msg_id=f"{self._id}:{s}") for s, n in changes))
        for lease in moving:
            lease.periods = {p for p in lease.periods if p >= period} | {period + 1}

    async def _renew_forever(self) -> None:
        while True:
            now = time.time()
            period = self.period(now)
            if not self._late(now):
                await asyncio.sleep((period + 0.5) * self.lease_s - now)
                continue
            try:
                await self.renew(now)
            except Unavailable:
                # Retried until the period ends: past it, the requests still count where they were.
                log.warning("requests in flight not carried over (NATS unreachable); retrying")
                await asyncio.sleep(min(1.0, self.lease_s / 10))
                continue
            await asyncio.sleep(max(0.0, (period + 1.5) * self.lease_s - time.time()))

    async def _add(self, changes: list[tuple[str, int]], msg_id: str | None = None) -> list[int]:
        """Each change sent alone, not coalesced (``msg_id``: renewals and releases, applied once)."""
        js, nc = self._js, self._nc
        if js is None or nc is None:
            raise RuntimeError("Limiter.open was not called")
        return await asyncio.gather(*(increment(nc, js, s, n, msg_id) for s, n in changes))

    def _spawn(self, work: Coroutine[Any, Any, list[int]]) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await work
            except Unavailable:
                log.error("a limit counter could not be settled (NATS unreachable); it stays conservative")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _windows(now: float) -> dict[str, tuple[str, float]]:
    """Each window's name and the epoch second it ends."""
    minute = dt.datetime.fromtimestamp(now, dt.UTC).replace(second=0, microsecond=0)
    hour = minute.replace(minute=0)
    day = hour.replace(hour=0)
    month = day.replace(day=1)
    next_month = (month + dt.timedelta(days=32)).replace(day=1)
    return {
        "rpm": (minute.strftime("%Y%m%d%H%M"), (minute + dt.timedelta(minutes=1)).timestamp()),
        "tokens_hour": (hour.strftime("%Y%m%d%H"), (hour + dt.timedelta(hours=1)).timestamp()),
        "tokens_day": (day.strftime("%Y%m%d"), (day + dt.timedelta(days=1)).timestamp()),
        "budget_month": (month.strftime("%Y%m"), next_month.timestamp()),
    }


def _counters(
    tenant: str, key_id: str, tier: Tier, *, reserve: int, reserve_nano: int, now: float, period: int
) -> list[_Counter]:
    w = _windows(now)

    def counter(measure: str, amount: int, limit: int, kind: str) -> _Counter:
        window, resets = w[measure]
        return _Counter(subjects.limit_counter(tenant, measure, window), amount, limit, kind, resets)

    out: list[_Counter] = []
    if tier.requests_per_minute is not None:
        out.append(counter("rpm", 1, tier.requests_per_minute, "requests"))
    if tier.output_tokens_per_hour is not None:
        out.append(counter("tokens_hour", reserve, tier.output_tokens_per_hour, "tokens"))
    if tier.output_tokens_per_day is not None:
        out.append(counter("tokens_day", reserve, tier.output_tokens_per_day, "tokens"))
    if tier.monthly_budget_eur is not None:
        budget = round(tier.monthly_budget_eur * NANO)
        out.append(counter("budget_month", reserve_nano, budget, "budget"))
    if tier.concurrent_per_key is not None:
        subject = subjects.lease_counter(tenant, key_id, period)
        out.append(_Counter(subject, 1, tier.concurrent_per_key, "concurrency", 0.0))
    return out


def _refusal(over: list[_Counter], reserve: int, now: float) -> QuotaExceeded | RateLimited:
    kinds = {c.measure: c for c in over}
    if "budget" in kinds:
        return QuotaExceeded(
            "You exceeded this month's budget for your tier; raise the tier or wait for next month.",
        )
    if "requests" in kinds:
        c = kinds["requests"]
        return RateLimited(
            f"Rate limit reached for requests per minute: limit {c.limit}. Please try again in "
            f"{_duration(c.resets_at - now)}.",
            type_="requests",
            retry_after_s=c.resets_at - now,
        )
    if "tokens" in kinds:
        c = min((c for c in over if c.measure == "tokens"), key=lambda c: c.resets_at)
        window = "hour" if "tokens_hour" in c.subject else "day"
        return RateLimited(
            f"Rate limit reached for output tokens per {window}: limit {c.limit}, this request reserves "
            f"{reserve} (its max_tokens). Please try again in {_duration(c.resets_at - now)}, or ask "
            "for fewer tokens.",
            type_="tokens",
            retry_after_s=c.resets_at - now,
        )
    c = kinds["concurrency"]
    return RateLimited(
        f"Too many concurrent requests for this API key: limit {c.limit}. Retry when one has finished.",
        type_="requests",
        retry_after_s=1,
    )


def _headers(counters: list[_Counter], totals: list[int], now: float) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers: requests per minute, and the tighter of the token windows."""
    headers: list[tuple[bytes, bytes]] = []
    tokens: tuple[int, int, float] | None = None  # limit, remaining, resets_at
    for c, total in zip(counters, totals, strict=True):
        remaining = max(0, c.limit - total)
        if c.measure == "requests":
            headers += [
                (b"x-ratelimit-limit-requests", str(c.limit).encode()),
                (b"x-ratelimit-remaining-requests", str(remaining).encode()),
                (b"x-ratelimit-reset-requests", _duration(c.resets_at - now).encode()),
            ]
        elif c.measure == "tokens" and (tokens is None or remaining < tokens[1]):
            tokens = (c.limit, remaining, c.resets_at)
    if tokens is not None:
        headers += [
            (b"x-ratelimit-limit-tokens", str(tokens[0]).encode()),
            (b"x-ratelimit-remaining-tokens", str(tokens[1]).encode()),
            (b"x-ratelimit-reset-tokens", _duration(tokens[2] - now).encode()),
        ]
    return headers


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``1h2m3s``, ``250ms``."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    total = math.ceil(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"
