"""Batches over the NATS door (llmaas.nats_door, edge/door): a tenant's program with nothing but
nats-py and its API key, on the real pipeline (two edges answering the door, guard, scheduler,
synthetic workers, metering, JetStream). The README's example client is the client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import openai
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from tests.conftest import CHAT
from tests.e2e.test_batches import ATTACK, ended, jsonl, lines_of, request, sdk, start, usage_rows
from tests.stack import Stack

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("door"))
    try:
        s.guard()
        s.scheduler()
        s.worker("w1", "--tokens-per-s", "0")
        s.worker("w2", "--tokens-per-s", "0")
        s.worker("slow", "--chat-model", "slow-chat", "--tokens-per-s", "20", "--capacity", "64")
        s.metering()
        fast = {"LLMAAS_BATCH_SWEEP_S": "0.2", "LLMAAS_BATCH_ACK_WAIT_S": "3", "LLMAAS_BATCH_SEATS": "8"}
        s.edge(*s.door_args(), name="edge-b", env=fast)
        s.edge(*s.door_args(), env=fast)
        s.wait_for_model(CHAT)
        s.wait_for_model("slow-chat")
        yield s
    finally:
        s.close()


def key_id(key: str) -> str:
    return key.removeprefix("sk-llmaas-").split("_")[0]


async def connect(s: Stack, key: str, **options: Any) -> Client:
    assert s.door is not None
    return await nats.connect(
        s.door.url, token=key, inbox_prefix=f"_INBOX_{key_id(key)}", allow_reconnect=False, **options
    )


async def ask(nc: Client, key: str, what: str, payload: Any = b"", within_s: float = 10) -> tuple[int, Any]:
    """A door request: the answer's status and its JSON."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    answer = await nc.request(f"llmaas.door.{key_id(key)}.{what}", data, timeout=within_s)
    status = int((answer.headers or {}).get("Llmaas-Status", "200"))
    return status, json.loads(answer.data)


def readme_client(tmp_path: Path) -> Path:
    text = README.read_text()
    found = re.search(r"<!-- example: nats_batch.py -->\n```python\n(.*?)```", text, re.DOTALL)
    assert found, "the README's NATS door example is gone"
    path = tmp_path / "nats_batch.py"
    path.write_text(found.group(1))
    return path


def test_the_readme_client_runs_a_batch_seen_and_billed_as_over_http(fleet: Stack, tmp_path: Path) -> None:
    s = fleet
    assert s.door is not None
    key = s.new_key("door-a")
    rows = [request(i, max_tokens=8) for i in range(39)] + [request(39, ATTACK)]
    (tmp_path / "requests.jsonl").write_bytes(jsonl(rows))
    done = subprocess.run(
        [sys.executable, str(readme_client(tmp_path)), "requests.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"LLMAAS_API_KEY": key, "LLMAAS_DOOR_URL": s.door.url, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    batch = json.loads(done.stdout.splitlines()[-1])
    assert batch["status"] == "completed" and batch["received_lines"] == 40
    assert batch["request_counts"] == {"total": 40, "completed": 39, "failed": 1}
    assert "in_progress" in done.stderr and "completed" in done.stderr  # the events arrived
    outputs = [
        json.loads(line) for line in (tmp_path / f"{batch['id']}_output.jsonl").read_text().splitlines()
    ]
    errors = [json.loads(line) for line in (tmp_path / f"{batch['id']}_error.jsonl").read_text().splitlines()]
    assert sorted(r["custom_id"] for r in outputs + errors) == sorted(r["custom_id"] for r in rows)
    assert [e["response"]["body"]["error"]["code"] for e in errors] == ["prompt_rejected"]
    # The same batch over HTTP, with the openai SDK: its input file is the lines sent, in order.
    client = sdk(s, key)
    seen = client.batches.retrieve(batch["id"])
    assert seen.status == "completed" and seen.request_counts is not None
    assert seen.request_counts.completed == 39
    sent = client.files.content(seen.input_file_id).read()
    assert sent == (tmp_path / "requests.jsonl").read_bytes()
    assert lines_of(client, seen.output_file_id) == outputs
    # Billed as an HTTP batch: one usage row per line, at the batch price, with its batch_id.
    billed = usage_rows(s, batch["id"], 40)
    assert len({r["request_id"] for r in billed}) == 40 and all(r["batch"] for r in billed)
    answered = sum(line["response"]["body"]["usage"]["completion_tokens"] for line in outputs)
    assert sum(r["completion_tokens"] for r in billed if r["status"] == "ok") == answered


def test_a_batch_made_over_http_is_seen_followed_and_cancelled_over_nats(fleet: Stack) -> None:
    s = fleet
    key = s.new_key("door-b")
    client = sdk(s, key)

    async def run() -> None:
        nc = await connect(s, key)
        events: list[dict[str, Any]] = []
        completed = asyncio.Event()

        async def event(msg: Msg) -> None:
            events.append(json.loads(msg.data))
            if events[-1]["status"] == "completed":
                completed.set()

        await nc.subscribe(f"llmaas.events.{key_id(key)}.batches.*", cb=event)
        await nc.flush()
        made = await asyncio.to_thread(start, client, [request(i, max_tokens=4) for i in range(5)])
        done = await asyncio.to_thread(ended, client, made.id)
        status, shown = await ask(nc, key, f"batches.{made.id}")
        assert status == 200
        for field in ("status", "input_file_id", "output_file_id", "created_at", "completed_at"):
            assert shown[field] == getattr(done, field)
        assert shown["request_counts"] == done.request_counts.model_dump() and "receiving" not in shown
        status, listing = await ask(nc, key, "batches.list", {"limit": 1})
        assert status == 200 and [b["id"] for b in listing["data"]] == [made.id]
        await asyncio.wait_for(completed.wait(), 5)
        assert {e["id"] for e in events} == {made.id}
        assert [e["status"] for e in events][-1] == "completed"
        # Running over HTTP, cancelled over NATS: the HTTP door sees it end cancelled.
        rows = [request(i, model="slow-chat", max_tokens=20) for i in range(20)]
        running = await asyncio.to_thread(start, client, rows)
        for _ in range(400):
            if (await ask(nc, key, f"batches.{running.id}"))[1]["status"] == "in_progress":
                break
            await asyncio.sleep(0.05)
        status, cancelling = await ask(nc, key, f"batches.{running.id}.cancel")
        assert status == 200 and cancelling["status"] == "cancelling"
        cancelled = await asyncio.to_thread(ended, client, running.id, 30)
        assert cancelled.status == "cancelled"
        await nc.close()

    asyncio.run(run())


def test_door_batches_refuse_what_a_file_would_not_hold(fleet: Stack) -> None:
    s = fleet
    key = s.new_key("door-c")

    async def run() -> None:
        nc = await connect(s, key)
        status, batch = await ask(nc, key, "batches.create", {"endpoint": "/v1/chat/completions"})
        assert status == 200 and batch["status"] == "validating" and batch["receiving"] is True
        bid = batch["id"]
        assert (await ask(nc, key, f"batches.{bid}.seal"))[1]["error"]["code"] == "empty_batch"
        bad = jsonl([request(0), {**request(1), "method": "GET"}, request(0)])
        status, taken = await ask(nc, key, f"batches.{bid}.lines", bad)
        assert status == 200 and taken["received_lines"] == 3
        status, _ = await ask(nc, key, f"batches.{bid}.seal")
        assert status == 200
        status, again = await ask(nc, key, f"batches.{bid}.lines", jsonl([request(9)]))
        assert status == 400 and again["error"]["code"] == "batch_sealed"
        deadline = time.monotonic() + 20
        while (shown := (await ask(nc, key, f"batches.{bid}"))[1])["status"] == "validating":
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(0.1)
        # Checked as a file is: the whole batch fails, each bad line named by its place.
        assert shown["status"] == "failed"
        assert {(e["line"], e["code"]) for e in shown["errors"]["data"]} == {
            (2, "invalid_method"),
            (3, "duplicate_custom_id"),
        }
        status, unknown = await ask(nc, key, "batches.batch_0000000000000000.lines", jsonl([request(0)]))
        assert status == 404 and unknown["error"]["param"] == "batch_id"
        status, wrong = await ask(nc, key, "batches.create", {"endpoint": "/v1/audio/speech"})
        assert status == 400 and wrong["error"]["param"] == "endpoint"
        assert (await ask(nc, key, "admin.tenants"))[0] == 404
        # A batch not sealed is cancelled at once; the tenant's open batches are bounded.
        status, open_one = await ask(nc, key, "batches.create", {"endpoint": "/v1/chat/completions"})
        status, gone = await ask(nc, key, f"batches.{open_one['id']}.cancel")
        assert status == 200 and gone["status"] == "cancelled" and gone["receiving"] is False
        made = [await ask(nc, key, "batches.create", {"endpoint": "/v1/completions"}) for _ in range(11)]
        assert [m[0] for m in made] == [200] * 10 + [429]
        assert made[-1][1]["error"]["type"] == "requests"
        await nc.close()

    asyncio.run(run())


def test_tenants_are_kept_apart_and_off_the_bus_on_the_door(fleet: Stack) -> None:
    s = fleet
    assert s.door is not None
    mine, theirs = s.new_key("door-d"), s.new_key("door-e")

    async def run() -> None:
        problems: list[Exception] = []

        async def error(exc: Exception) -> None:
            problems.append(exc)

        other = await connect(s, theirs)
        status, batch = await ask(other, theirs, "batches.create", {"endpoint": "/v1/chat/completions"})
        assert status == 200
        nc = await connect(s, mine, error_cb=error)
        # Its own subjects: another tenant's batch is not found there.
        assert (await ask(nc, mine, f"batches.{batch['id']}"))[0] == 404
        assert (await ask(nc, mine, f"batches.{batch['id']}.lines", jsonl([request(0)])))[0] == 404
        # Another key's subjects, events and inbox, the bus's subjects and JetStream: refused.
        await nc.publish(f"llmaas.door.{key_id(theirs)}.batches.{batch['id']}.cancel", b"")
        await nc.subscribe(f"llmaas.events.{key_id(theirs)}.>")
        await nc.subscribe(f"_INBOX_{key_id(theirs)}.>")
        await nc.subscribe(">")
        await nc.publish("llmaas.v1.guard", b"{}")
        await nc.flush()
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await nc.request("$JS.API.INFO", b"", timeout=1)
        await asyncio.sleep(0.3)
        refused = " ".join(str(p) for p in problems).lower()
        for subject in (
            f"llmaas.door.{key_id(theirs)}.batches.{batch['id']}.cancel",
            f"llmaas.events.{key_id(theirs)}.>",
            f"_inbox_{key_id(theirs)}.>",
            '">"',
            "llmaas.v1.guard",
            "$js.api.info",
        ):
            assert subject in refused, refused
        assert refused.count("permissions violation") == 6, refused
        assert (await ask(other, theirs, f"batches.{batch['id']}"))[1]["status"] == "validating"
        await nc.close()
        await other.close()
        # No key, a wrong one, a made-up one: not connected at all.
        assert s.door is not None
        for token in (None, mine[:-2] + "xx", "sk-llmaas-000000000000_" + "a" * 40):
            with pytest.raises(nats.errors.Error):
                await nats.connect(s.door.url, token=token, allow_reconnect=False, max_reconnect_attempts=0)

    asyncio.run(run())


def test_a_revoked_key_is_disconnected_and_cannot_come_back(fleet: Stack) -> None:
    s = fleet
    assert s.door is not None
    key = s.new_key("door-f")

    async def run() -> float:
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        nc = await connect(s, key, closed_cb=on_closed)
        assert (await ask(nc, key, "batches.list"))[0] == 200
        started = time.monotonic()
        await asyncio.to_thread(s.admin, "POST", f"/keys/{key_id(key)}/revoke")
        await asyncio.wait_for(closed.wait(), 5)
        took = time.monotonic() - started
        with pytest.raises(nats.errors.Error):
            await connect(s, key, max_reconnect_attempts=0)
        return took

    took = asyncio.run(run())
    print(f"revoked key disconnected {took * 1000:.0f} ms after the revocation was answered")


def test_a_door_batch_survives_the_edge_that_took_its_lines(fleet: Stack) -> None:
    """Last: it kills an edge. The lines are in JetStream once answered: sealed on the other edge,
    the batch runs whole."""
    s = fleet
    key = s.new_key("door-g")
    rows = [request(i, max_tokens=4) for i in range(30)]

    async def run() -> dict[str, Any]:
        nc = await connect(s, key)
        status, batch = await ask(nc, key, "batches.create", {"endpoint": "/v1/chat/completions"})
        made: dict[str, Any] = batch
        for i in range(0, 30, 3):  # ten messages: the two edges each take some
            assert (await ask(nc, key, f"batches.{batch['id']}.lines", jsonl(rows[i : i + 3])))[0] == 200
        edge = s.procs["edge-b"]
        edge.send_signal(signal.SIGKILL)
        edge.wait()
        # Until the door's server has seen the dead edge's connection close, a request may still be
        # handed to its subscription and go unanswered: a client asks again, as this one does with
        # a read before the seal (seen in CI on a loaded machine).
        for _ in range(20):
            with contextlib.suppress(nats.errors.TimeoutError):
                await ask(nc, key, f"batches.{batch['id']}", within_s=1)
                break
        status, sealed = await ask(nc, key, f"batches.{batch['id']}.seal")
        assert status == 200 and sealed["received_lines"] == 30
        await nc.close()
        return made

    batch = asyncio.run(run())
    client = openai.OpenAI(base_url=f"{s.base_url}/v1", api_key=key, max_retries=0)
    done = ended(client, batch["id"])
    assert done.status == "completed" and done.request_counts.completed == 30
    assert sorted(r["custom_id"] for r in lines_of(client, done.output_file_id)) == sorted(
        r["custom_id"] for r in rows
    )
    assert httpx.get(f"{s.base_url}/health", timeout=2).status_code == 200
