"""The bus as a hostile process on the same network sees it: no identity, no connection; a worker's
own identity can neither inject a job, read a prompt, bill, nor read a tenant; each service is held
to its role (a real nats-server with the identities `llmaas up` makes, the real components)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from llmaas import identities, streams, subjects
from tests.conftest import CHAT
from tests.stack import Stack


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("bus"))
    s.violations_expected = True  # this module's attacks are refused, and logged as such
    try:
        s.guard()
        s.scheduler()
        s.worker("w-target", "--tokens-per-s", "0")
        s.worker("w-rogue", "--tokens-per-s", "0")
        s.metering()
        s.edge()
        s.wait_for_model(CHAT)
        yield s
    finally:
        s.close()


class Identity:
    """A NATS client as one identity, with the server's refusals collected."""

    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors

    async def refused(self, what: str, timeout_s: float = 5.0) -> None:
        """Wait until the server has refused ``what`` (a subject) to this client."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        quoted = f'"{what}"'.lower()  # nats-py reports the server's words in lower case
        while not any(quoted in e.lower() for e in self.errors):
            assert asyncio.get_running_loop().time() < deadline, f"no refusal of {what}: {self.errors}"
            await asyncio.sleep(0.02)


async def connect(stack: Stack, name: str) -> Identity:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    options: dict[str, Any] = stack.nats.connect_options(name)
    nc = await nats.connect(stack.nats.url, error_cb=on_error, allow_reconnect=False, **options)
    return Identity(nc, errors)


async def probe(operator: Client, subject: str) -> list[bytes]:
    """Every payload published on ``subject`` from now on, as the operator sees it."""
    seen: list[bytes] = []

    async def on(msg: Msg) -> None:
        seen.append(msg.data)

    await operator.subscribe(subject, cb=on)
    await operator.flush()
    return seen


async def attempt(nc: Client, *subjects_: str, payload: bytes) -> None:
    for subject in subjects_:
        await nc.publish(subject, payload)
    await nc.flush()


def test_nobody_connects_without_an_identity_the_server_knows(bus: Stack, tmp_path: Path) -> None:
    stranger = identities.mint(tmp_path, "edge")  # a valid nkey, but not one the server was given

    async def scenario() -> None:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(bus.nats.url, allow_reconnect=False, max_reconnect_attempts=0)
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(
                bus.nats.url, allow_reconnect=False, max_reconnect_attempts=0, nkeys_seed=str(stranger)
            )

    asyncio.run(scenario())


def test_a_workers_identity_cannot_inject_jobs_or_read_prompts(bus: Stack) -> None:
    marker = f"injected-{uuid.uuid4().hex}".encode()
    secret = f"the tenant's secret {uuid.uuid4().hex}"
    targets = (
        subjects.worker_jobs("w-target"),  # straight to another worker, past keys, limits and guard
        subjects.GUARD,  # as if from the edge
        subjects.SCHEDULER,  # as if screened
        subjects.heartbeat("w-target"),  # posing as another worker
    )

    async def scenario() -> tuple[dict[str, list[bytes]], list[bytes]]:
        operator = (await connect(bus, identities.OPERATOR)).nc
        seen = {t: await probe(operator, t) for t in targets}
        rogue = await connect(bus, identities.worker("w-rogue"))
        await attempt(rogue.nc, *targets, payload=marker)
        # Reading: everything, every edge's answers, other services' replies, the prompts.
        read: list[bytes] = []

        async def on(msg: Msg) -> None:
            read.append(msg.data)

        for wanted in (">", f"{subjects.reply_prefix('*')}.*", "_INBOX.>", subjects.GUARD):
            await rogue.nc.subscribe(wanted, cb=on)
        for refused in (*targets, ">", "_INBOX.>"):
            await rogue.refused(refused)
        async with httpx.AsyncClient(base_url=bus.base_url, headers=bus.auth, timeout=20) as http:
            body = {"model": CHAT, "messages": [{"role": "user", "content": secret}], "max_tokens": 4}
            answer = await http.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        # The probes work: the same publishes from the operator arrive.
        await attempt(operator, *targets, payload=b"control")
        await asyncio.sleep(0.2)
        await rogue.nc.close()
        await operator.close()
        return seen, read

    seen, read = asyncio.run(scenario())
    for target in targets:
        assert marker not in seen[target], f"{target} took a rogue worker's message"
        assert b"control" in seen[target], f"the probe of {target} saw nothing at all"
    assert not any(secret.encode() in data for data in read)


def test_a_workers_identity_neither_bills_nor_reads_a_tenant(bus: Stack) -> None:
    async def scenario() -> tuple[int, int]:
        operator = (await connect(bus, identities.OPERATOR)).nc
        before = (await operator.jetstream().stream_info(streams.USAGE.name)).state.messages
        rogue = await connect(bus, identities.worker("w-rogue"))
        js = rogue.nc.jetstream(timeout=1)
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await js.publish(subjects.USAGE, b'{"request_id": "forged"}', timeout=1)
        for bucket in (streams.KEYS, streams.TENANTS):
            with pytest.raises((nats.errors.Error, TimeoutError)):
                await (await js.key_value(bucket.bucket)).get("acme")
        await rogue.refused(subjects.USAGE)
        await rogue.refused(f"$JS.API.STREAM.INFO.{streams.KEYS.stream}")
        after = (await operator.jetstream().stream_info(streams.USAGE.name)).state.messages
        await rogue.nc.close()
        await operator.close()
        return before, after

    before, after = asyncio.run(scenario())
    assert after == before


def test_each_service_is_held_to_its_role(bus: Stack) -> None:
    async def scenario() -> None:
        operator = (await connect(bus, identities.OPERATOR)).nc
        guarded = await probe(operator, subjects.GUARD)
        # Tenant input comes in through the edge only: the scheduler may not pose as it.
        scheduler = await connect(bus, "scheduler")
        await attempt(scheduler.nc, subjects.GUARD, payload=b"from the scheduler")
        await scheduler.refused(subjects.GUARD)
        # The guard follows the tenants' switches but never sees a key's hash.
        guard = await connect(bus, "guard")
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await (await guard.nc.jetstream(timeout=1).key_value(streams.KEYS.bucket)).get("any")
        await guard.refused(f"$JS.API.STREAM.INFO.{streams.KEYS.stream}")
        # Metering reads the usage stream; deleting it is nobody's right but the operator's.
        metering = await connect(bus, "metering")
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await metering.nc.jetstream(timeout=1).delete_stream(streams.USAGE.name)
        await metering.refused(f"$JS.API.STREAM.DELETE.{streams.USAGE.name}")
        # An edge reads edges' answers, not the replies metering sends to another service's inbox.
        edge = await connect(bus, "edge")
        others = identities.inbox_prefix(identities.public_key(bus.nats.grant("metering"))) + ".>"
        await edge.nc.subscribe(others)
        await edge.refused(others)
        # It purges the files' chunks (deleted uploads), and no other stream.
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await edge.nc.jetstream(timeout=1).purge_stream(streams.USAGE.name)
        await edge.refused(f"$JS.API.STREAM.PURGE.{streams.USAGE.name}")
        await operator.jetstream().stream_info(streams.USAGE.name)  # still there
        assert guarded == []
        for client in (scheduler, guard, metering, edge):
            await client.nc.close()
        await operator.close()

    asyncio.run(scenario())
