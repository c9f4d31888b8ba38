"""The audit trail on a real JetStream: bounded retention that `verify` still checks end to end."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import nats

from llmaas import audit, streams
from llmaas.nats_server import NatsServer


def test_expired_events_leave_a_chain_that_verifies_from_a_checkpoint(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, port=-1)
    server.start()

    async def scenario() -> tuple[audit.Verdict, audit.Verdict, int]:
        nc = await nats.connect(server.url)
        try:
            short = dataclasses.replace(streams.AUDIT, max_age_s=1.5)
            trail = audit.AuditLog("e1", spec=short, checkpoint_every=4)
            await trail.open(nc)
            for i in range(6):
                await trail.append(audit.event("admin", "tenant.create", f"old{i}", "ok"))
            whole = await audit.verify(nc.jetstream())
            await asyncio.sleep(2.0)  # the first seven (six and a checkpoint) age out
            for i in range(6):
                await trail.append(audit.event("admin", "tenant.create", f"new{i}", "ok"))
            info = await nc.jetstream().stream_info(audit.STREAM)
            after = await audit.verify(nc.jetstream())
            await trail.close()
            return whole, after, info.state.first_seq
        finally:
            await nc.close()

    try:
        whole, after, first = asyncio.run(scenario())
    finally:
        server.stop()
    assert whole.ok and whole.events == 7 and whole.expired == 0 and whole.anchored_from == 1
    assert first == 8
    # 8 new0, 9 checkpoint after 8, 10-12 new1-3, 13 checkpoint after 12, 14-15 new4-5
    assert after.ok, after.problem
    assert after.expired == 7 and after.events == 8 and after.anchored_from == 9
