"""What authentication and limits cost per request, in the edge's own code against a real nats-server.

Run: ``python -m bench.gate [--requests 3000]``. Times, one request after another:
``identify`` (the key looked up in the directory's local copy, its secret hashed and compared),
``admit`` on a tier with every limit (five shared counters: requests/minute, output tokens/hour and
/day, budget, in-flight; set far above the load so none refuses) and ``settle`` (the reservation
replaced by the usage), and the same on a tier without limits. The end-to-end view (TTFT and
throughput through the whole stack, with and without limits) is in ``bench.overhead``.

``--concurrency 1 16``: then the same requests from that many callers at once (one tenant, one
key, as a busy tenant's), for ``--seconds`` each: requests/s and the CPU per request of this process
(the edge's code) and of nats-server, limited and open; what limits cost is their difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import nats
from pydantic import SecretStr

from bench.overhead import BENCH_TIERS, cpu_seconds
from edge.gate import Gate
from edge.limits import Grant
from edge.settings import EdgeSettings
from llmaas import tenants
from llmaas.nats_server import NatsServer
from llmaas.tenants import Tenant
from llmaas.wire import Usage


async def admitted(gate: Gate, key: str) -> Grant:
    """What a request does before it is published: its key identified, its limits' share taken."""
    p = await gate.keys.identify(key, "127.0.0.1", "/v1/chat/completions")
    return await gate.limiter.admit(p.tenant, p.key, p.tier, 16, time.time())


def row(label: str, samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=100)
    return f"| {label:<34} | {q[49] * 1e6:8.1f} | {q[98] * 1e6:8.1f} |"


async def main(requests: int, concurrency: list[int], seconds: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="llmaas-gate-"))
    server = NatsServer(root, port=-1)
    url = server.start()
    try:
        (root / "tiers.toml").write_text(BENCH_TIERS)
        settings = EdgeSettings(
            nats_url=url, admin_token=SecretStr(tenants.mint_admin_token()), tiers_file=root / "tiers.toml"
        )
        gate = Gate(settings, "bench")
        nc = await nats.connect(url)
        await gate.open(nc)
        keys: dict[str, str] = {}
        for tier in ("limited", "open"):
            await gate.directory.create_tenant(Tenant(name=tier, tier=tier, created_at=time.time()))
            _, keys[tier] = await gate.directory.issue_key(
                tenant=tier, name="bench", models=[], expires_at=None, rotate_every_s=None
            )
        usage = Usage(prompt_tokens=20, completion_tokens=16)
        if concurrency:
            await concurrent(gate, keys, usage, server, callers=concurrency, seconds=seconds)
        else:
            await one_by_one(gate, keys, usage, requests)
        await gate.close()
        await nc.close()
    finally:
        server.stop()


async def one_by_one(gate: Gate, keys: dict[str, str], usage: Usage, requests: int) -> None:
    print(f"\n{requests} requests, one after another, {nats.__name__}-py to nats-server on loopback\n")
    print(f"| {'step':<34} | p50 (µs) | p99 (µs) |\n|{'-' * 36}|----------|----------|")
    for tier, key in keys.items():
        auth, admit, settle = [], [], []
        for _ in range(requests):
            t0 = time.perf_counter()
            p = await gate.keys.identify(key, "127.0.0.1", "/v1/chat/completions")
            t1 = time.perf_counter()
            grant = await gate.limiter.admit(p.tenant, p.key, p.tier, 16, time.time())
            t2 = time.perf_counter()
            task = gate.limiter.settle(grant, usage, 16)
            if task is not None:
                await task
            t3 = time.perf_counter()
            auth.append(t1 - t0)
            admit.append(t2 - t1)
            settle.append(t3 - t2)
        print(row(f"{tier}: identify", auth))
        print(row(f"{tier}: admit", admit))
        print(row(f"{tier}: settle (off the answer)", settle))


async def calls(gate: Gate, key: str, usage: Usage, until: float) -> int:
    """One caller's requests, one after another, until ``until``: how many it made."""
    done = 0
    while time.perf_counter() < until:
        grant = await admitted(gate, key)
        task = gate.limiter.settle(grant, usage, 16)
        if task is not None:
            await task
        done += 1
    return done


async def concurrent(
    gate: Gate, keys: dict[str, str], usage: Usage, server: NatsServer, *, callers: list[int], seconds: float
) -> None:
    me, nats_pid = os.getpid(), server.pid
    assert nats_pid is not None
    print("| tier | callers | req/s | this process CPU ms/req | nats-server CPU ms/req | both |")
    print("|---|---|---|---|---|---|")
    for n in callers:
        for tier, key in keys.items():
            await asyncio.gather(*(calls(gate, key, usage, time.perf_counter() + 0.5) for _ in range(n)))
            cpu0, srv0, t0 = cpu_seconds(me), cpu_seconds(nats_pid), time.perf_counter()
            done = sum(await asyncio.gather(*(calls(gate, key, usage, t0 + seconds) for _ in range(n))))
            rate = done / (time.perf_counter() - t0)
            mine, theirs = (cpu_seconds(me) - cpu0) / done * 1e3, (cpu_seconds(nats_pid) - srv0) / done * 1e3
            print(f"| {tier} | {n} | {rate:.0f} | {mine:.3f} | {theirs:.3f} | {mine + theirs:.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[], help="callers at once")
    parser.add_argument("--seconds", type=float, default=5.0, help="per row, with --concurrency")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.seconds))
