"""Handlers in memory: the declared decode → handle path, and a service's handling (the
scheduler's) driven with a stand-in client, no NATS server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from prometheus_client import CollectorRegistry

from llmaas import codec, subjects
from llmaas.handlers import Handler, Handlers
from llmaas.wire import Cancel, Failed, GenerateJob, Heartbeat
from workers.scheduler.metrics import SchedulerMetrics
from workers.scheduler.service import SchedulerService
from workers.scheduler.settings import SchedulerSettings


class Bus:
    """Records what is published; answers requests as ``answers`` says (an exception, or bytes)."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.asked: list[str] = []
        self.answers = answers or {}

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "", headers: Any = None) -> None:
        self.published.append((subject, payload))

    # nats-py's own signature, timeout included.
    async def request(self, subject: str, payload: bytes = b"", timeout: float = 1.0, **_: Any) -> Msg:  # noqa: ASYNC109
        self.asked.append(subject)
        answer = self.answers.get(subject, b"")
        if isinstance(answer, Exception):
            raise answer
        return Msg(_client=self, subject=subject, data=answer)  # type: ignore[arg-type]


def message(bus: Bus, subject: str, data: bytes, reply: str = "") -> Msg:
    return Msg(_client=bus, subject=subject, reply=reply, data=data)  # type: ignore[arg-type]


def test_a_handler_gets_the_decoded_value_and_an_undecodable_message_is_refused() -> None:
    got: list[Cancel] = []
    refused: list[bytes] = []

    async def handle(cancel: Cancel, msg: Msg) -> None:
        got.append(cancel)

    async def refuse(msg: Msg) -> None:
        refused.append(msg.data)

    handlers = Handlers("test", CollectorRegistry())
    h = Handler("cancel", "x", codec.cancel_decoder, handle, refuse=refuse)
    bus = Bus()
    asyncio.run(handlers.receive(h, message(bus, "x", codec.encode(Cancel(request_id="r1")))))
    asyncio.run(handlers.receive(h, message(bus, "x", b"\xc1 not msgpack")))
    assert got == [Cancel(request_id="r1")] and refused == [b"\xc1 not msgpack"]
    assert handlers.messages.labels("cancel", "undecodable")._value.get() == 1


def beat(worker_id: str) -> Heartbeat:
    return Heartbeat(
        worker_id=worker_id, engine="synthetic", models=["m"], running=0, waiting=0, capacity=8,
        started_at=0.0, interval_s=60.0,
    )  # fmt: skip


def test_the_scheduler_skips_a_gone_worker_and_says_taken_to_the_guard() -> None:
    """w-gone has no subscriber any more (no responders): the job goes to w-live at once."""

    async def scenario() -> tuple[Bus, SchedulerService]:
        bus = Bus({subjects.worker_jobs("w-gone"): NoRespondersError()})
        svc = SchedulerService(SchedulerSettings(warmup_s=0), SchedulerMetrics())
        svc._nc = bus  # type: ignore[assignment]
        jobs = svc.handlers.handlers[1]
        now = time.monotonic()
        svc.fleet.observe(beat("w-gone"), now)
        svc.fleet.observe(msgspec.structs.replace(beat("w-live"), running=3), now)  # busier: chosen second
        job = GenerateJob(request_id="r1", model="m", kind="chat", created=0, reply="_INBOX.llmaas.e.r1")
        await svc.handlers.receive(
            jobs, message(bus, subjects.SCHEDULER, codec.encode(job), "_INBOX_guard.1")
        )
        await asyncio.gather(*svc._tasks)
        return bus, svc

    bus, svc = asyncio.run(scenario())
    assert bus.asked == [subjects.worker_jobs("w-gone"), subjects.worker_jobs("w-live")]
    assert ("_INBOX_guard.1", b"") in bus.published  # taken, said to the guard
    assert not [s for s, _ in bus.published if s == "_INBOX.llmaas.e.r1"]  # nothing failed back
    assert not svc.fleet.is_alive("w-gone", time.monotonic())


def test_the_scheduler_fails_a_job_no_worker_takes() -> None:
    async def scenario() -> Bus:
        bus = Bus({subjects.worker_jobs("w1"): NoRespondersError()})
        svc = SchedulerService(SchedulerSettings(warmup_s=0), SchedulerMetrics())
        svc._nc = bus  # type: ignore[assignment]
        svc.fleet.observe(beat("w1"), time.monotonic())
        job = GenerateJob(request_id="r1", model="m", kind="chat", created=0, reply="_INBOX.llmaas.e.r1")
        await svc.handlers.receive(
            svc.handlers.handlers[1], message(bus, subjects.SCHEDULER, codec.encode(job), "_INBOX_guard.1")
        )
        await asyncio.gather(*svc._tasks)
        return bus

    bus = asyncio.run(scenario())
    [(_, frame)] = [(s, p) for s, p in bus.published if s == "_INBOX.llmaas.e.r1"]
    failed = codec.frame_decoder.decode(frame)
    assert isinstance(failed, Failed) and failed.error.code == "model_unavailable"
