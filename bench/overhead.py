"""The production path's cost, feature by feature: the whole stack (edge -> guard -> scheduler ->
worker over NATS, then metering) versus the same synthetic engine called in one process, with each
feature switched on in turn, so that each one's cost is a difference between rows of one run.

Rows per concurrency: ``direct`` (the engine in this process), ``http`` (GET /health on the edge),
``keys`` (an API key on a tier without limits; the guard passes jobs through unscreened, nothing
consumes usage events), ``+limits`` (a tier that counts every limit), ``+guard`` (structure,
patterns and the behaviour layer with its shared history), ``+learned`` (the learned layer too:
what `llmaas up` runs), ``+metering`` (the metering service writing usage to chDB). Keys cannot be
switched off (``bench.gate`` times authentication alone: tens of µs). Every request has the same
system prompt and a distinct question, as a chat application sends them.

Run: ``make bench`` or ``python -m bench.overhead [--tokens 16] [--concurrency 1 16 64] [--seconds 8]``.
The load generator is aiohttp (an httpx client saturates far earlier on these machines) and runs in
this process; each component runs in its own process, and its CPU time is read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import uvloop

from llmaas import ports, tenants
from llmaas.nats_server import NatsServer
from llmaas.operator import admin
from llmaas.wire import ChatMessage, Delta, GenerateJob, SamplingParams
from workers.engines.synthetic import SyntheticConfig, SyntheticEngine

MODEL = "synthetic-chat"
PROMPT = "Explain in one paragraph how an event-driven pipeline streams tokens to a client."
SYSTEM = "You are the documentation assistant of a software company. Answer briefly, in plain English."
"""Sent with every request, as chat applications do."""
_SENT = itertools.count()
"""Numbers each question: no two of a run are the same (the guard blocks the 30th identical prompt
in a row from one key, and remembers the scores of texts it has seen)."""
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    label: str
    concurrency: int
    requests: int
    seconds: float
    ttft: list[float]
    total: list[float]
    tokens: int
    cpu_s: dict[str, float]

    def row(self) -> str:
        q = statistics.quantiles
        ttft = q(self.ttft, n=100) if len(self.ttft) > 1 else self.ttft * 99
        total = q(self.total, n=100) if len(self.total) > 1 else self.total * 99
        cpu = sum(self.cpu_s.values()) / max(self.requests, 1) * 1000
        return (
            f"| {self.label:<8} | {self.concurrency:>3} | {self.requests:>6} | {ttft[49] * 1000:8.2f} | "
            f"{ttft[98] * 1000:8.2f} | {total[49] * 1000:8.2f} | {self.requests / self.seconds:8.0f} | "
            f"{self.tokens / self.seconds:9.0f} | {cpu:7.2f} |"
        )


HEADER = (
    "| path     |   c |   reqs | TTFT p50 | TTFT p99 | total p50 |    req/s |   tokens/s | CPU ms/req |\n"
    "|----------|-----|--------|----------|----------|-----------|----------|------------|------------|"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# --- direct: the engine in this process -------------------------------------------------------------


def job(i: int, tokens: int) -> GenerateJob:
    return GenerateJob(
        request_id=f"r{i}",
        model=MODEL,
        kind="chat",
        created=0,
        messages=[ChatMessage(role="user", content=PROMPT)],
        sampling=SamplingParams(max_tokens=tokens, seed=i),
    )


async def direct(concurrency: int, tokens: int, seconds: float) -> Result:
    engine = SyntheticEngine(SyntheticConfig(tokens_per_s=0, completion_tokens=tokens))
    ttft: list[float] = []
    total: list[float] = []
    produced = 0
    deadline = time.perf_counter() + seconds

    async def client(cid: int) -> None:
        nonlocal produced
        i = cid
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            first = True
            async for frame in engine.generate(job(i, tokens)):
                if isinstance(frame, Delta):
                    if first:
                        ttft.append(time.perf_counter() - start)
                        first = False
                    produced += frame.tokens
            total.append(time.perf_counter() - start)
            i += concurrency

    cpu0 = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Result("direct", concurrency, len(total), elapsed, ttft, total, produced,
                  {"engine": time.process_time() - cpu0})  # fmt: skip


# --- pipeline: the whole stack over HTTP ------------------------------------------------------------


BENCH_TIERS = """
[open]
title = "bench: authentication only, no limits"

[limited]
title = "bench: every limit counted (limits far above the load, so none refuses)"
monthly_budget_eur = 1e9
output_tokens_per_hour = 1_000_000_000
output_tokens_per_day = 1_000_000_000
requests_per_minute = 1_000_000_000
concurrent_per_key = 1_000_000
"""


class Stack:
    def __init__(
        self,
        root: Path,
        tokens: int,
        port: int,
        *,
        edge_env: dict[str, str] | None = None,
        worker_args: tuple[str, ...] = ("--tokens-per-s", "0", "--capacity", "1024"),
        guard_env: dict[str, str] | None = None,
    ) -> None:
        """``guard_env``: the guard's settings (default: as `llmaas up` runs it)."""
        # As `llmaas up` runs it: every component its own NATS identity, JetStream encrypted.
        self.root = root
        self.nats = NatsServer(root, port=-1, identities=True, encrypt=True)
        self.nats.start()
        self.port = port
        self.admin_token = tenants.mint_admin_token()
        billing = {"LLMAAS_BILLING_KEY": secrets.token_hex(32)}  # the edge seals, metering checks
        (root / "tiers.toml").write_text(BENCH_TIERS)
        edge_env = {
            "LLMAAS_ADMIN_TOKEN": self.admin_token,
            "LLMAAS_TIERS_FILE": str(root / "tiers.toml"),
            **billing,
            **(edge_env or {}),
        }
        self.billing = billing
        self.common = ["--nats-url", self.nats.url, "--log-level", "WARNING"]
        worker = [*worker_args, "--completion-tokens", str(tokens), "--worker-id", "bench"]
        self.procs = {
            "edge": self._start("edge", *self.common, *self.me("edge"), "--port", str(port), env=edge_env),
            "guard": self._guard(guard_env or {}),
            "scheduler": self._start("scheduler", *self.common, *self.me("scheduler")),
            "worker": self._start("worker", *self.common, *self.me("worker-bench"), *worker),
        }

    def me(self, name: str) -> list[str]:
        return ["--nats-credentials", str(self.nats.grant(name))]

    @staticmethod
    def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "llmaas", *args], env={**os.environ, **(env or {})})

    def _guard(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """A guard, returned once it takes jobs (it serves its metrics from then on)."""
        port = ports.free_port()
        proc = self._start("guard", *self.common, *self.me("guard"), "--metrics-port", str(port), env=env)
        serving(proc, port)
        return proc

    def guard(self, env: dict[str, str]) -> None:
        """Replaces the guard by one with these settings (the new one takes jobs before the old goes)."""
        old, self.procs["guard"] = self.procs["guard"], self._guard(env)
        old.send_signal(signal.SIGTERM)
        old.wait(20)

    def metering(self) -> None:
        port = ports.free_port()
        env = dict(self.billing)
        args = ["--data-dir", str(self.root / "metering"), "--metrics-port", str(port)]
        self.procs["metering"] = self._start("metering", *self.common, *self.me("metering"), *args, env=env)
        serving(self.procs["metering"], port, within=120)

    def key(self, tier: str) -> str:
        """A key of a fresh tenant on ``tier``, made through the admin API."""
        client = admin.AdminClient(f"http://127.0.0.1:{self.port}", self.admin_token)
        client.call("POST", "/tenants", {"name": tier, "tier": tier})
        created: dict[str, str] = client.call("POST", "/keys", {"tenant": tier})
        return created["key"]

    def pids(self) -> dict[str, int]:
        pids = {name: p.pid for name, p in self.procs.items()}
        assert self.nats.pid is not None
        pids["nats-server"] = self.nats.pid
        return pids

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1)
                if health.status_code == 200 and MODEL in health.json()["models"]:  # directory loaded too
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("stack not ready")

    def close(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait(20)
        self.nats.stop()


def serving(proc: subprocess.Popen[bytes], port: int, within: float = 60) -> None:
    """Waits until a service serves its metrics on ``port`` (it does once it takes work)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{proc.args!r} not serving after {within:g} s")


async def pipeline(
    url: str, key: str, pids: dict[str, int], *, concurrency: int, tokens: int, seconds: float, label: str
) -> Result:
    def body() -> dict[str, object]:
        question = f"{PROMPT} ({next(_SENT)})"
        return {
            "model": MODEL,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            "max_tokens": tokens,
            "stream": True,
        }

    ttft: list[float] = []
    total: list[float] = []
    produced = 0
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client() -> None:
            nonlocal produced, errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                first = True
                async with session.post(url, json=body()) as response:
                    if response.status != 200:
                        errors += 1
                        await response.read()
                        continue
                    async for line in response.content:
                        if line.startswith(b'data: {"id"') and b'"delta":{"content":' in line:
                            if first:
                                ttft.append(time.perf_counter() - start)
                                first = False
                            produced += 1
                total.append(time.perf_counter() - start)

        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    if errors:
        print(f"  ! {errors} non-200 responses at concurrency {concurrency}")
    return Result(label, concurrency, len(total), elapsed, ttft, total, produced, cpu)


async def http_floor(url: str, concurrency: int, seconds: float) -> Result:
    """The cost of an HTTP round trip to the edge alone (GET /health, no NATS): the floor under TTFT."""
    total: list[float] = []
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def client() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                total.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result("http", concurrency, len(total), elapsed, total, total, 0, {})


FEATURES: tuple[tuple[str, str, dict[str, str] | None, bool], ...] = (
    # (row, tier, guard settings or None to keep the guard, metering on)
    ("keys", "open", None, False),
    ("+limits", "limited", None, False),
    ("+guard", "limited", {"LLMAAS_GUARD_LEARNED": "false"}, False),
    ("+learned", "limited", {}, False),
    ("+metering", "limited", None, True),
)
"""Each row adds one feature to the row before it."""


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="llmaas-bench-"))
    port = 18000 + os.getpid() % 1000
    stack = Stack(root, args.tokens, port, guard_env={"LLMAAS_GUARD_ENABLED": "false"})
    try:
        stack.wait_ready()
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        keys = {tier: stack.key(tier) for tier in ("open", "limited")}
        await pipeline(url, keys["open"], stack.pids(), concurrency=4, tokens=args.tokens, seconds=1.0,
                       label="warm-up")  # fmt: skip
        rows: dict[int, list[Result]] = {c: [] for c in args.concurrency}
        for c in args.concurrency:
            rows[c].append(await direct(c, args.tokens, args.seconds))
            rows[c].append(await http_floor(f"http://127.0.0.1:{port}/health", c, args.seconds / 2))
        for label, tier, guard, metering in FEATURES:
            if guard is not None:
                stack.guard(guard)
            if metering:
                stack.metering()
            if guard is not None or metering:  # a fresh process's first requests cost it more
                await pipeline(url, keys[tier], stack.pids(), concurrency=4, tokens=args.tokens, seconds=2.0,
                               label="warm-up")  # fmt: skip
            for c in args.concurrency:
                same = {"concurrency": c, "tokens": args.tokens, "seconds": args.seconds}
                rows[c].append(await pipeline(url, keys[tier], stack.pids(), **same, label=label))
            print(f"  {label} measured", flush=True)
        report(rows, args)
    finally:
        stack.close()
        shutil.rmtree(root, ignore_errors=True)


PROCESSES = ("edge", "guard", "scheduler", "worker", "metering", "nats-server")


def report(rows: dict[int, list[Result]], args: argparse.Namespace) -> None:
    print(f"\n{args.tokens} tokens per streamed chat completion, {args.seconds:g} s per row, "
          f"{os.cpu_count()} CPUs, load generator: aiohttp in the bench process\n")  # fmt: skip
    print(HEADER)
    for results in rows.values():
        for result in results:
            print(result.row())
    print("\nTTFT added to the engine's (p50), and CPU per request by process (ms), each row adding one")
    print("feature to the row above it:\n")
    print("| row | c | TTFT added p50 | " + " | ".join(PROCESSES) + " | all |")
    print("|---|---|---|" + "---|" * (len(PROCESSES) + 1))
    for c, results in rows.items():
        base = statistics.median(results[0].ttft)
        for run in results[2:]:
            added = (statistics.median(run.ttft) - base) * 1000
            per = {k: v / max(run.requests, 1) * 1000 for k, v in run.cpu_s.items()}
            split = " | ".join(f"{per[k]:.2f}" if k in per else "-" for k in PROCESSES)
            print(f"| {run.label} | {c} | +{added:.2f} | {split} | {sum(per.values()):.2f} |")
    print("\nWhat each feature adds (its row against the one above, same run):")
    for c, results in rows.items():
        for before, after in itertools.pairwise(results[2:]):
            q_b, q_a = statistics.quantiles(before.ttft, n=100), statistics.quantiles(after.ttft, n=100)
            cpu = (sum(after.cpu_s.values()) / max(after.requests, 1)
                   - sum(before.cpu_s.values()) / max(before.requests, 1)) * 1000  # fmt: skip
            print(
                f"  c={c:<3} {after.label:<10} TTFT p50 {(q_a[49] - q_b[49]) * 1000:+.2f} ms, "
                f"p99 {(q_a[98] - q_b[98]) * 1000:+.2f} ms; CPU {cpu:+.2f} ms/request; "
                f"throughput x{after.requests / after.seconds / (before.requests / before.seconds):.2f}"
            )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=16, help="tokens per answer (default 16)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each row")
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
