"""Coalesced counter increments on a real JetStream counter stream: one message for the increments
that meet while one is in flight, each increment's own total as if they had been sent one by one,
exact across two edges."""

from __future__ import annotations

import asyncio

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from edge.counters import Counters
from llmaas import streams, subjects
from llmaas.nats_server import NatsServer

SUBJECT = subjects.limit_counter("acme", "rpm", "202612031200")


async def opened(url: str) -> tuple[Counters, Client]:
    nc = await nats.connect(url)
    await streams.ensure(nc.jetstream(), streams.LIMITS, streams.DEFAULT)
    counters = Counters()
    counters.open(nc)
    return counters, nc


def test_increments_that_meet_share_a_message_and_each_learns_its_own_total(server: NatsServer) -> None:
    amounts = [1, 5, 2, 7, 1, 3] * 8

    async def scenario() -> tuple[list[int], int]:
        counters, nc = await opened(server.url)
        sent: list[str] = []
        watcher = await nats.connect(server.url)

        async def seen(msg: Msg) -> None:
            sent.append((msg.headers or {})["Nats-Incr"])

        await watcher.subscribe(SUBJECT, cb=seen)
        await watcher.flush()
        totals = await asyncio.gather(*(counters.add(SUBJECT, n) for n in amounts))
        await watcher.flush()
        await asyncio.sleep(0.05)  # the watcher's copies of the messages
        await counters.close()
        await nc.close()
        await watcher.close()
        return totals, len(sent)

    totals, messages = asyncio.run(scenario())
    # In the order they were made, as if one after another: each total is the running sum.
    running = [sum(amounts[: i + 1]) for i in range(len(amounts))]
    assert totals == running
    # The first went alone; the 47 made while it was in flight went together as one.
    assert messages == 2


def test_two_edges_coalescing_the_same_counter_never_hand_out_a_total_twice(server: NatsServer) -> None:
    async def scenario() -> list[int]:
        (a, na), (b, nb) = await opened(server.url), await opened(server.url)
        totals = await asyncio.gather(*(edge.add(SUBJECT, 1) for _ in range(30) for edge in (a, b)))
        await na.close()
        await nb.close()
        return totals

    totals = asyncio.run(scenario())
    assert sorted(totals) == list(range(1, 61))  # what a limit of N admits: exactly N, on any edge


def test_a_failed_batch_fails_every_increment_in_it_and_the_next_batch_still_goes(
    server: NatsServer,
) -> None:
    async def scenario() -> tuple[list[int | BaseException], int]:
        counters, nc = await opened(server.url)
        # No stream holds this subject: the server answers no one (every increment in the batch fails).
        lost = "llmaas.v1.nowhere"
        outcome = await asyncio.gather(*(counters.add(lost, 1) for _ in range(5)), return_exceptions=True)
        after = await counters.add(SUBJECT, 2)
        await nc.close()
        return outcome, after

    outcome, after = asyncio.run(scenario())
    assert all(isinstance(o, Exception) for o in outcome)
    assert after == 2
