"""A real stack for end-to-end tests: nats-server on a random port, each component its own process.

Waits poll for a condition with a deadline (never a bare sleep) and fail with the children's logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats as nats_client
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from llmaas import identities, natsconn, ports, tenants
from llmaas.nats_cluster import NatsCluster
from llmaas.nats_door import DoorServer
from llmaas.nats_server import NatsServer
from llmaas.tiers import DEFAULT_FILE as TIERS_FILE

TEST_TIERS = """
[unlimited]
title = "tests: no limits"

[rpm60]
title = "tests: 60 requests per minute"
requests_per_minute = 60

[tokens100]
title = "tests: 100 output tokens per hour"
output_tokens_per_hour = 100

[tokens10k]
title = "tests: 10 000 output tokens per hour"
output_tokens_per_hour = 10_000

[budget]
title = "tests: a budget of a few requests"
monthly_budget_eur = 0.001

[pair]
title = "tests: two requests in flight per key"
concurrent_per_key = 2
"""


free_port = ports.free_port


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, logs: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = ""
            if logs is not None:
                detail = "\n".join(
                    f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log"))
                )
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{detail}")
        time.sleep(0.02)


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``llmaas ARGS`` as an operator would; its standard output, or the test fails with both."""
    done = subprocess.run(
        [sys.executable, "-m", "llmaas", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, (
        f"llmaas {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    )
    return done.stdout


@contextlib.contextmanager
def running_up(
    data_dir: Path, *flags: str, ready_s: float = 60
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``llmaas up --engine synthetic FLAGS`` with its data in ``data_dir``, on a free port: the
    process and the port, once it says it is ready; interrupted (Ctrl-C) after."""
    port = free_port()
    log_file = data_dir / "up.log"
    argv = ["up", *flags, "--port", str(port), "--nats-port", "-1", "--nats-door-port", "-1"]
    argv += ["--data-dir", str(data_dir)]
    with log_file.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "llmaas", *argv, "--engine", "synthetic"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "ready: " in log_file.read_text(), ready_s, f"llmaas up {' '.join(flags)}")
        yield up, port
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()


def key_from(cli_output: str) -> str:
    """The secret key printed by ``llmaas keys create`` / ``keys rotate``."""
    return next(line.split()[-1] for line in cli_output.splitlines() if line.startswith("key:"))


class Stack:
    """Components started on demand; ``close`` stops them all (and the NATS server, if ours).

    Each component connects with its own NATS identity, as ``llmaas up`` runs them, so every test
    also shows that the roles' permissions suffice (``close`` fails on a permission violation)."""

    def __init__(
        self, root: Path, nats: NatsServer | NatsCluster | None = None, env: dict[str, str] | None = None
    ) -> None:
        """``env``: settings every component gets (``LLMAAS_NATS_REPLICAS`` on a cluster)."""
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.nats: NatsServer | NatsCluster = nats or NatsServer(root / "nats", port=-1, identities=True)
        self.env = env or {}
        if not self.nats.running:
            self.nats.start()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_ports: dict[str, int] = {}
        self.port = 0
        self.admin_token = tenants.mint_admin_token()
        self.billing_key = secrets.token_hex(32)
        """The edges' seal key, which metering checks (llmaas.seals); never given to workers."""
        self.tiers_file = root / "tiers.toml"
        self.tiers_file.write_text(TIERS_FILE.read_text() + TEST_TIERS)
        self._api_key: str | None = None
        self.violations_expected = False
        """Set by tests that attack the bus: their refusals are in the server's log on purpose."""
        self.catalog_file: Path | None = None
        """A model catalog for the edges started after it is set (default: infra/models.toml)."""
        self.door: DoorServer | None = None
        """The NATS door's server, once ``door_args`` started it."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(env or {})}
        identity: list[str] = []
        if self.nats.identities is not None:
            kind = args[0]
            who = identities.worker(args[args.index("--worker-id") + 1]) if kind == "worker" else kind
            identity = ["--nats-credentials", str(self.nats.grant(who))]
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmaas", *args, "--nats-url", self.nats.url, *identity],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def edge(self, *extra: str, name: str = "edge", env: dict[str, str] | None = None) -> str:
        """Start an edge (the admin API on, the test tiers loaded); later edges get their own name.

        Every test calls from 127.0.0.1: its failed authentications are not throttled unless a test
        asks (``env``), and summarized every 2 s rather than every minute."""
        self.port = free_port()
        env = {
            "LLMAAS_ADMIN_TOKEN": self.admin_token,
            "LLMAAS_BILLING_KEY": self.billing_key,
            "LLMAAS_TIERS_FILE": str(self.tiers_file),
            "LLMAAS_AUTH_FAILURES_ALLOWED": "1000000",
            "LLMAAS_AUTH_FAILURE_WINDOW_S": "2",
            **(env or {}),
        }
        if self.catalog_file is not None:
            env["LLMAAS_CATALOG_FILE"] = str(self.catalog_file)
        self.start(name, "edge", "--port", str(self.port), *extra, env=env)
        wait_until(self._edge_up, 20, "the edge to answer /health", self.logs)
        return self.base_url

    def door_args(self) -> list[str]:
        """An edge's flags to serve the NATS door (its server started on first use)."""
        if self.door is None:
            self.door = DoorServer(self.root / "door", port=-1)
            self.door.start()
        return ["--door-url", self.door.url, "--door-identities", str(self.door.data_dir)]

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None, url: str = "") -> Any:
        """Call the admin API (of ``url``, or the last edge started); fails the test on an error."""
        response = httpx.request(
            method,
            f"{url or self.base_url}/admin/v1{path}",
            json=body,
            headers={"authorization": f"Bearer {self.admin_token}"},
            timeout=10,
        )
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def new_key(self, tenant: str = "acme", tier: str = "unlimited", **key: Any) -> str:
        """A fresh API key of ``tenant`` (created on ``tier`` if it does not exist yet)."""
        known = {t["name"] for t in self.admin("GET", "/tenants")["data"]}
        if tenant not in known:
            self.admin("POST", "/tenants", {"name": tenant, "tier": tier})
        secret: str = self.admin("POST", "/keys", {"tenant": tenant, **key})["key"]
        return secret

    @property
    def api_key(self) -> str:
        """One key for the tests that are not about keys (tenant ``acme``, no limits)."""
        if self._api_key is None:
            self._api_key = self.new_key()
        return self._api_key

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    def stream_messages(self, stream: str) -> list[bytes]:
        """Every message a JetStream stream holds, in order."""

        async def read() -> list[bytes]:
            nc = await self.connect()
            try:
                js = nc.jetstream()
                state = (await js.stream_info(stream)).state
                seqs = range(state.first_seq, state.last_seq + 1)
                return [(await js.get_msg(stream, seq)).data or b"" for seq in seqs]
            finally:
                await nc.close()

        return asyncio.run(read())

    async def connect(self, name: str = identities.OPERATOR) -> Client:
        """A NATS client of the test's own, as ``name`` (the operator: every right)."""
        return await nats_client.connect(natsconn.servers(self.nats.url), **self.nats.connect_options(name))

    def _edge_up(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/health", timeout=1).json()["directory"] == "loaded"
        except httpx.TransportError:
            return False

    def guard(self) -> None:
        """A guard, returned once it takes jobs (it serves its metrics from then on)."""
        port = self.metrics_ports.setdefault("guard", free_port())
        self._serving("guard", self.start("guard", "guard", "--metrics-port", str(port)), port)

    def _serving(self, name: str, proc: subprocess.Popen[bytes], port: int) -> None:
        """Waits until ``name`` serves its metrics on ``port``; fails with its log if it died."""

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, (self.logs / f"{name}.log").read_text()[-3000:]
                return False

        wait_until(up, 30, f"the {name} service", self.logs)

    def metering(
        self, *extra: str, env: dict[str, str] | None = None, ready: bool = True
    ) -> subprocess.Popen[bytes]:
        """The metering service on its own chDB in ``<root>/metering`` (small batches, quick redelivery);
        with ``ready``, returns once it answers (its metrics are served after its queries are)."""
        port = self.metrics_ports.setdefault("metering", free_port())
        settings = {
            "LLMAAS_METERING_BATCH_WAIT_S": "0.2",
            "LLMAAS_METERING_ACK_WAIT_S": "5",
            "LLMAAS_BILLING_KEY": self.billing_key,
            **(env or {}),
        }
        data = str(self.root / "metering")
        proc = self.start(
            "metering", "metering", "--data-dir", data, "--metrics-port", str(port), *extra, env=settings
        )
        if ready:
            self._serving("metering", proc, port)
        return proc

    def sql(self, query: str, key: str | None = None) -> list[dict[str, Any]]:
        """``llmaas sql QUERY --format json`` as an administrator, or as ``key``'s tenant."""
        import json

        env = {"LLMAAS_URL": self.base_url}
        env |= {"LLMAAS_API_KEY": key} if key else {"LLMAAS_ADMIN_TOKEN": self.admin_token}
        rows: list[dict[str, Any]] = json.loads(cli("sql", query, "--format", "json", env=env))
        return rows

    def scheduler(self, *extra: str, name: str = "scheduler") -> None:
        port = self.metrics_ports.setdefault(name, free_port())
        self.start(name, "scheduler", "--metrics-port", str(port), *extra)

    def worker(self, worker_id: str, *extra: str) -> subprocess.Popen[bytes]:
        port = self.metrics_ports.setdefault(worker_id, free_port())
        return self.start(
            worker_id,
            "worker",
            "--worker-id",
            worker_id,
            "--heartbeat-interval-s",
            "0.2",
            "--metrics-port",
            str(port),
            *extra,
        )

    def metric(self, component: str, name: str, **labels: str) -> float:
        """A sample's value from a component's /metrics (the edge's, or a worker's by id); 0 if absent."""
        url = self.base_url if component == "edge" else f"http://127.0.0.1:{self.metrics_ports[component]}"
        try:
            text = httpx.get(f"{url}/metrics", timeout=2).text
        except httpx.TransportError:
            return 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def models(self) -> list[str]:
        try:
            response = httpx.get(f"{self.base_url}/v1/models", timeout=1, headers=self.auth)
        except httpx.TransportError:
            return []
        return [m["id"] for m in response.json()["data"]] if response.status_code == 200 else []

    def wait_for_model(self, model: str, timeout_s: float = 20) -> None:
        def served() -> bool:
            dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
            if dead:
                logs = "\n".join(f"--- {n}\n{(self.logs / f'{n}.log').read_text()[-3000:]}" for n in dead)
                raise AssertionError(f"{', '.join(dead)} exited while waiting for {model}\n{logs}")
            return model in self.models()

        wait_until(served, timeout_s, f"model {model} to be served", self.logs)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(20)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.nats.stop()
        if self.door is not None:
            self.door.stop()
        if not self.violations_expected:
            violations = self.violations()
            assert not violations, "a component did what its NATS identity may not:\n" + "\n".join(violations)

    def violations(self) -> list[str]:
        """The permission violations nats-server logged (a role that misses a right it needs)."""
        lines = [
            line
            for log in self.nats.logs
            if log.exists()
            for line in log.read_text(errors="replace").splitlines()
        ]
        return [line for line in lines if "Violation" in line]
