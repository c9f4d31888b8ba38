"""`llmaas up`: the whole stack from one command, serving, then stopping cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import nats.errors
import openai
import pytest

from llmaas import identities
from tests.conftest import CHAT
from tests.stack import cli, free_port, key_from, wait_until


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


async def anonymous(url: str) -> None:
    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
    await nc.close()


def nats_port(data_dir: Path) -> int:
    ports = next((data_dir / "nats").glob("nats-server_*.ports"))
    return int(json.loads(ports.read_text())["nats"][0].rsplit(":", 1)[1])


async def door_lists(port: int, key: str) -> None:
    key_id = key.removeprefix("sk-llmaas-").split("_")[0]
    nc = await nats.connect(f"nats://127.0.0.1:{port}", token=key, inbox_prefix=f"_INBOX_{key_id}")
    answer = await nc.request(f"llmaas.door.{key_id}.batches.list", b"", timeout=5)
    assert json.loads(answer.data) == {"object": "list", "data": [], "has_more": False}
    await nc.close()


TENANT = "tenant-at-rest-5e0c1f9a"
PROMPT = "a prompt that must never reach a disk 9d1b7c42"


def test_up_serves_and_stops_cleanly_on_ctrl_c(open_dir: Path) -> None:
    tmp_path = open_dir  # a data dir the account metering becomes can reach
    port = free_port()
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmaas",
            "up",
            "--port",
            str(port),
            "--nats-port",
            "-1",
            "--nats-door-port",
            "-1",
            "--data-dir",
            str(tmp_path),
            "--engine",
            "synthetic",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LLMAAS_API_KEY": "sk-llmaas-from-the-operators-shell"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: (tmp_path / "up.log").read_text().count("ready: ") == 1, 60, "llmaas up to be ready"
        )
        # The first start made an admin token, private to its owner, shown once on the terminal.
        token_file = tmp_path / "admin-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert (tmp_path / "up.log").read_text().count(token) == 1
        # An operator creates a tenant and a key with the CLI, which finds the token in the data dir.
        where = ["--url", url, "--data-dir", str(tmp_path)]
        cli("tenants", "create", TENANT, "--tier", "tier1", *where)
        key = key_from(cli("keys", "create", "--tenant", TENANT, *where))
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        answer = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": PROMPT}])
        assert answer.choices[0].message.content
        assert "intact: 2 events" in cli("audit", "verify", *where)
        assert (tmp_path / "jetstream").is_dir()
        # The NATS door answers the tenant's key (its own nats-server, on the edge's address).
        asyncio.run(door_lists(nats_port(tmp_path / "door"), key))

        # Metered into the embedded chDB in the data dir, and reported to the operator.
        def reported() -> bool:
            try:
                return cli("usage", "--since", "1h", *where).splitlines()[-1].split()[0] == "1"
            except AssertionError:  # 503 while the metering service starts
                return False

        wait_until(reported, 30, "the request in `llmaas usage`")
        assert (tmp_path / "clickhouse").is_dir()
        children = [int(p) for p in Path(f"/proc/{up.pid}/task/{up.pid}/children").read_text().split()]
        assert len(children) == 7  # nats-server, the door's, edge, guard, scheduler, metering, worker
        # Secrets reach only the child that needs them: the admin token the edge, none the shell's key.
        environments = {pid: Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in children}
        holders = [
            pid for pid, env in environments.items() if any(v.startswith(b"LLMAAS_ADMIN_TOKEN=") for v in env)
        ]
        assert len(holders) == 1 and b"edge" in Path(f"/proc/{holders[0]}/cmdline").read_bytes()
        assert not any(
            b"sk-llmaas-from-the-operators-shell" in b"".join(env) for env in environments.values()
        )
        # Metering, where tenants' SQL runs, gave up root: it cannot read the admin token, the other
        # services' seeds and keys, or their environments.
        (metering,) = [pid for pid in children if b"metering" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        lines = Path(f"/proc/{metering}/status").read_text().splitlines()
        status = dict(line.split(":", 1) for line in lines)
        assert status["Uid"].split() == ["65534"] * 4 and status["Gid"].split() == ["65534"] * 4
        assert status["Groups"].split() == []
        assert "metering runs as root" not in (tmp_path / "up.log").read_text()
        assert {p.stat().st_uid for p in (tmp_path / "clickhouse").rglob("*")} == {65534}
        # chDB's files are its owner's only.
        exposed = [
            p for p in (tmp_path / "clickhouse").rglob("*") if not p.is_symlink() and p.stat().st_mode & 0o077
        ]
        assert not exposed, exposed[:5]
        # Each child its own NATS identity: seeds private to the owner, only public keys in the
        # server's configuration, nobody admitted without one, and no right missing.
        seeds = sorted((tmp_path / "nats" / "identities").glob("*.nk"))
        assert {p.stem for p in seeds} >= {"edge", "guard", "scheduler", "metering", "worker-w0"}
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in seeds)
        config = (tmp_path / "nats" / "nats-server.conf").read_text()
        assert not any(p.read_text().strip() in config for p in seeds)
        assert all(f"nkey: {identities.public_key(p)}" in config for p in seeds)
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            asyncio.run(anonymous(f"nats://127.0.0.1:{nats_port(tmp_path)}"))
        assert "Permissions Violation" not in (tmp_path / "nats" / "nats-server.log").read_text()
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
        # At rest: no prompt anywhere in the data dir, and what is stored (the tenant's name is in its
        # record, its audit events, its usage rows) is stored encrypted, JetStream's and chDB's both.
        on_disk = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "up.log"]
        assert not [p for p in on_disk if PROMPT.encode() in p.read_bytes()]
        assert not [p for p in on_disk if TENANT.encode() in p.read_bytes()]
        assert (tmp_path / "nats" / "jetstream.key").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "clickhouse.key").stat().st_mode & 0o777 == 0o600
        assert not any(pid_alive(pid) for pid in children)
        with pytest.raises(httpx.TransportError):  # the edge no longer answers after Ctrl-C
            httpx.get(f"{url}/health", timeout=1)
    finally:
        if up.poll() is None:
            up.kill()
        log.close()
