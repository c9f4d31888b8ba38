"""Requests in flight as leases, on a real JetStream: exact while edges live, released by themselves
when an edge dies, and settlements that survive a NATS outage applied once."""

from __future__ import annotations

import asyncio
import json

import nats

from edge.limits import Limiter
from llmaas import streams
from llmaas.errors import RateLimited
from llmaas.nats_server import NatsServer
from llmaas.pricing import PriceList
from llmaas.tenants import ApiKey, Tenant
from llmaas.tiers import Tier
from llmaas.wire import Usage

LEASE_S = 10.0
PAIR = Tier(title="two in flight", concurrent_per_key=2)
TENANT = Tenant(name="acme", tier="pair", created_at=0)
KEY = ApiKey(id="k1", tenant="acme", name="k", secret_sha256="0" * 64, created_at=0)
T0 = 1_800_000_000.0  # the start of a lease period (a multiple of LEASE_S)


async def limiter(url: str) -> Limiter:
    """An edge's limiter whose leases the test carries over itself (at the times it chooses)."""
    lim = Limiter(PriceList.load(), lease_s=LEASE_S)
    await lim.open(await nats.connect(url), renew=False)
    return lim


async def admitted(lim: Limiter, now: float) -> bool:
    try:
        await lim.admit(TENANT, KEY, PAIR, 10, now)
    except RateLimited:
        return False
    return True


def test_a_dead_edges_requests_are_released_two_periods_later(server: NatsServer) -> None:
    async def scenario() -> list[bool]:
        dying, living = await limiter(server.url), await limiter(server.url)
        seen = [await admitted(dying, T0 + 1), await admitted(dying, T0 + 2), await admitted(living, T0 + 3)]
        await dying.renew(T0 + 6)  # halfway: the dying edge's two carried into the next period
        seen.append(await admitted(living, T0 + 12))  # still two in flight: refused
        # The edge dies (no more renewals, no settlement). One period later its leases are gone.
        seen.append(await admitted(living, T0 + 21))
        seen.append(await admitted(living, T0 + 22))
        seen.append(await admitted(living, T0 + 23))  # the two it holds now are its own
        return seen

    assert asyncio.run(scenario()) == [True, True, False, False, True, True, False]


def test_live_requests_keep_counting_across_periods(server: NatsServer) -> None:
    async def scenario() -> list[bool]:
        a, b = await limiter(server.url), await limiter(server.url)
        seen = [await admitted(a, T0 + 1), await admitted(b, T0 + 7)]  # b's: after the halfway point
        await a.renew(T0 + 5)
        await b.renew(T0 + 5.5)  # b's own request was carried when admitted: nothing more to do
        for later in (T0 + 11, T0 + 14):
            seen.append(await admitted(a, later))
        await a.renew(T0 + 15)
        await b.renew(T0 + 15)
        seen.append(await admitted(b, T0 + 21))
        return seen

    assert asyncio.run(scenario()) == [True, True, False, False, False]


def test_an_ended_request_gives_its_place_back(server: NatsServer) -> None:
    async def scenario() -> list[bool]:
        lim = await limiter(server.url)
        first = await lim.admit(TENANT, KEY, PAIR, 10, T0 + 1)
        await lim.admit(TENANT, KEY, PAIR, 10, T0 + 2)
        seen = [await admitted(lim, T0 + 3)]
        task = lim.settle(first, Usage(prompt_tokens=1, completion_tokens=1), 1, now=T0 + 4)
        assert task is not None
        await task
        seen.append(await admitted(lim, T0 + 4))
        return seen

    assert asyncio.run(scenario()) == [False, True]


def test_a_settlement_made_while_nats_is_away_is_applied_once_it_is_back(
    server: NatsServer,
) -> None:
    async def scenario() -> tuple[int, int]:
        lim = await limiter(server.url)
        tokens = Tier(title="tokens", output_tokens_per_hour=1000)
        grant = await lim.admit(TENANT, KEY, tokens, 500, T0 + 1)
        server.stop()
        task = lim.settle(grant, Usage(prompt_tokens=1, completion_tokens=100), 100)
        await asyncio.sleep(1.0)  # retried meanwhile
        server.start()
        assert task is not None
        await asyncio.wait_for(task, 30)
        # What the window holds now: the 100 used, not the 500 reserved.
        js = (await nats.connect(server.url)).jetstream()
        last = await js.get_last_msg(streams.LIMITS.name, grant.counters[0].subject)
        return int(json.loads(last.data or b"{}")["val"]), lim.in_flight

    used, in_flight = asyncio.run(scenario())
    assert used == 100 and in_flight == 0
