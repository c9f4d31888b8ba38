"""The guard consumer on a real NATS: a blocked job is answered 400 and never reaches the scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import nats
import pytest

from guard.metrics import GuardMetrics
from guard.screening import Screener, Verdict
from guard.service import GuardService
from guard.settings import GuardSettings
from llmaas import codec, subjects
from llmaas.nats_server import NatsServer
from llmaas.wire import ChatMessage, Failed, GenerateJob, Job


class BlockWord:
    """A stand-in detection layer: blocks any job whose text contains a word."""

    name = "test"

    def __init__(self, word: str) -> None:
        self.word = word

    def check(self, texts: Sequence[str], job: Job) -> Verdict:
        hit = any(self.word in t for t in texts)
        return Verdict(blocked=hit, layer=self.name, rules=("word",) if hit else ())


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    server = NatsServer(tmp_path, port=-1)
    yield server.start()
    server.stop()


def job(rid: str, *texts: str) -> GenerateJob:
    return GenerateJob(
        request_id=rid,
        model="m",
        kind="chat",
        created=0,
        messages=[ChatMessage(role="user", content=t) for t in texts],
    )


async def test_guard_forwards_clean_jobs_and_answers_blocked_ones(nats_url: str) -> None:
    services = [
        GuardService(GuardSettings(nats_url=nats_url), Screener((BlockWord("forbidden"),)), GuardMetrics())
        for _ in range(2)
    ]
    for service in services:
        await service.start()
    nc = await nats.connect(nats_url)
    try:
        scheduled: asyncio.Queue[bytes] = asyncio.Queue()
        replies: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_scheduled(msg: nats.aio.msg.Msg) -> None:
            await scheduled.put(msg.data)

        async def on_reply(msg: nats.aio.msg.Msg) -> None:
            await replies.put(msg.data)

        await nc.subscribe(subjects.SCHEDULER, cb=on_scheduled)
        await nc.subscribe("test.reply", cb=on_reply)
        await nc.flush()
        clean = [job(f"ok{i}", "hello", "world") for i in range(10)]
        for j in clean:
            await nc.publish(subjects.GUARD, codec.encode(j), reply="test.reply")
        # The second message hides the attack: every message is screened, not only the last.
        await nc.publish(subjects.GUARD, codec.encode(job("bad", "forbidden", "fine")), reply="test.reply")
        forwarded = [codec.job_decoder.decode(await asyncio.wait_for(scheduled.get(), 5)) for _ in clean]
        assert sorted(j.request_id for j in forwarded) == sorted(j.request_id for j in clean)
        frame = codec.frame_decoder.decode(await asyncio.wait_for(replies.get(), 5))
        assert isinstance(frame, Failed)
        assert frame.error.status == 400 and frame.error.code == "prompt_rejected"
        await nc.flush()
        assert scheduled.empty()
        # Queue group: the ten clean jobs were shared by the two guards, not each handled twice.
        counts = [
            s.metrics.registry.get_sample_value("llmaas_guard_screened_total", {"verdict": "allowed"}) or 0
            for s in services
        ]
        assert sum(counts) == 10
    finally:
        await nc.close()
        for service in services:
            await service.stop()
