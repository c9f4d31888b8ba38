"""Pipeline overhead: the whole stack (edge -> guard -> scheduler -> worker over NATS) versus the same
synthetic engine called directly in one process, at several concurrencies.

Run: ``make bench`` or ``python -m bench.overhead [--tokens 16] [--concurrency 1 16 64] [--seconds 8]``.
The load generator is aiohttp (an httpx client saturates far earlier on these machines) and runs in
this process; each component runs in its own process, and its CPU time is read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
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

from llmaas import tenants
from llmaas.nats_server import NatsServer
from llmaas.operator import admin
from llmaas.wire import ChatMessage, Delta, GenerateJob, SamplingParams
from workers.engines.synthetic import SyntheticConfig, SyntheticEngine

MODEL = "synthetic-chat"
PROMPT = "Explain in one paragraph how an event-driven pipeline streams tokens to a client."
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
    ) -> None:
        # As `llmaas up` runs it: every component its own NATS identity, JetStream encrypted.
        self.nats = NatsServer(root, port=-1, identities=True, encrypt=True)
        self.nats.start()
        self.port = port
        self.admin_token = tenants.mint_admin_token()
        (root / "tiers.toml").write_text(BENCH_TIERS)
        edge_env = {
            "LLMAAS_ADMIN_TOKEN": self.admin_token,
            "LLMAAS_TIERS_FILE": str(root / "tiers.toml"),
            **(edge_env or {}),
        }
        common = ["--nats-url", self.nats.url, "--log-level", "WARNING"]
        worker = [*worker_args, "--completion-tokens", str(tokens), "--worker-id", "bench"]

        def me(name: str) -> list[str]:
            return ["--nats-credentials", str(self.nats.grant(name))]

        self.procs = {
            "edge": self._start("edge", *common, *me("edge"), "--port", str(port), env=edge_env),
            "guard": self._start("guard", *common, *me("guard")),
            "scheduler": self._start("scheduler", *common, *me("scheduler")),
            "worker": self._start("worker", *common, *me("worker-bench"), *worker),
        }

    @staticmethod
    def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "llmaas", *args], env={**os.environ, **(env or {})})

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


async def pipeline(
    url: str, key: str, pids: dict[str, int], *, concurrency: int, tokens: int, seconds: float, label: str
) -> Result:
    sent = itertools.count()

    def body() -> dict[str, object]:
        # Numbered: the guard blocks the 30th identical prompt in a row from one key.
        question = f"{PROMPT} ({next(sent)})"
        return {
            "model": MODEL,
            "messages": [{"role": "user", "content": question}],
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


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="llmaas-bench-"))
    port = 18000 + os.getpid() % 1000
    stack = Stack(root, args.tokens, port)
    try:
        stack.wait_ready()
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        pids = stack.pids()
        open_key, limited_key = stack.key("open"), stack.key("limited")
        await pipeline(url, open_key, pids, concurrency=4, tokens=args.tokens, seconds=1.0, label="warm-up")
        rows: list[tuple[Result, Result, Result, Result]] = []
        for c in args.concurrency:
            base = await direct(c, args.tokens, args.seconds)
            floor = await http_floor(f"http://127.0.0.1:{port}/health", c, args.seconds / 2)
            same = {"concurrency": c, "tokens": args.tokens, "seconds": args.seconds}
            piped = await pipeline(url, open_key, pids, **same, label="pipeline")
            limited = await pipeline(url, limited_key, pids, **same, label="+limits")
            rows.append((base, floor, piped, limited))
        print(f"\n{args.tokens} tokens per streamed chat completion, {args.seconds:g} s per row, "
              f"{os.cpu_count()} CPUs, load generator: aiohttp in the bench process\n")  # fmt: skip
        print(HEADER)
        for row in rows:
            for result in row:
                print(result.row())
        print("\n(http: GET /health on the same edge, no NATS: the HTTP round trip under every TTFT;")
        print(" pipeline: an API key on a tier without limits; +limits: every tier limit counted)")
        print("\nTTFT added by the pipeline (p50) and CPU per request by process (ms):")
        for base, _, piped, limited in rows:
            for run in (piped, limited):
                added = (statistics.median(run.ttft) - statistics.median(base.ttft)) * 1000
                split = ", ".join(f"{k} {v / max(run.requests, 1) * 1000:.2f}" for k, v in run.cpu_s.items())
                print(f"  {run.label:<8} c={run.concurrency:<3} +{added:.2f} ms   {split}")
        print("\nWhat the limits add (+limits versus pipeline, same run):")
        for _, _, piped, limited in rows:
            q_p, q_l = statistics.quantiles(piped.ttft, n=100), statistics.quantiles(limited.ttft, n=100)
            print(
                f"  c={piped.concurrency:<3} TTFT p50 +{(q_l[49] - q_p[49]) * 1000:.2f} ms, "
                f"p99 +{(q_l[98] - q_p[98]) * 1000:.2f} ms; "
                f"throughput x{limited.requests / limited.seconds / (piped.requests / piped.seconds):.2f}"
            )
    finally:
        stack.close()
        shutil.rmtree(root, ignore_errors=True)


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
