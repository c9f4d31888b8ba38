"""The outbox on a real nats-server: events recorded while their stream is gone (what a client sees
during a stream's leader election: no responders, at once) are stored once each when it is back,
in order; a full outbox counts what it drops."""

from __future__ import annotations

import asyncio
import time

import nats
from nats.js.api import DeliverPolicy

from guard import events
from llmaas import streams, subjects
from llmaas.nats_server import NatsServer
from llmaas.outbox import Outbox
from llmaas.wire import SecurityEvent


def _event(n: int) -> SecurityEvent:
    return SecurityEvent(
        request_id=f"req-{n}", at=time.time(), tenant="acme", token_id="k1", model="m", layer="patterns",
        rules=["override"], prompt_sha256="0" * 64, guard="g1",
    )  # fmt: skip


def test_events_recorded_while_the_stream_is_away_are_stored_once_each_when_it_is_back(
    server: NatsServer,
) -> None:
    async def scenario() -> tuple[list[str], int]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        lost: list[int] = []
        outbox = Outbox(streams.SECURITY, events.publish, "security event", on_lost=lost.append)
        await outbox.open(nc)
        outbox.record(_event(0))
        await asyncio.sleep(0.2)
        await js.delete_stream(streams.SECURITY.name)  # every publish now fails at once
        for n in range(1, 6):
            outbox.record(_event(n))
        await asyncio.sleep(1.0)  # several failed rounds, over the four the guard used to allow
        await streams.ensure(js, streams.SECURITY)
        await outbox.close(timeout_s=10)
        sub = await js.subscribe(subjects.SECURITY, deliver_policy=DeliverPolicy.ALL)
        stored: list[str] = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except TimeoutError:
                break
            stored.append(events.decoder.decode(msg.data).request_id)
        await nc.close()
        return stored, sum(lost)

    stored, lost = asyncio.run(scenario())
    assert lost == 0
    assert stored == [f"req-{n}" for n in range(1, 6)]  # the first went with the deleted stream


def test_a_full_outbox_counts_what_it_drops() -> None:
    lost: list[int] = []
    outbox = Outbox(streams.SECURITY, events.publish, "security event", max_queued=2, on_lost=lost.append)
    for n in range(5):
        outbox.record(_event(n))
    assert outbox.queued == 2
    assert sum(lost) == 3
