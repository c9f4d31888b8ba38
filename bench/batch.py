"""Batches: lines per second through the batch path, and what a running batch does to interactive
requests' first token.

Run: ``python -m bench.batch [--lines 2000] [--seconds 8]``. Two stacks as ``bench.overhead`` starts
them (every component its own process and NATS identity, JetStream encrypted), one after the other:

- throughput: a synthetic engine without a speed limit, one batch of ``--lines`` lines, timed from
  ``in_progress`` to ``completed`` (every line's result stored, usage published, files written);
- interference: a synthetic engine with a 20 ms first token and 200 tokens/s per stream, capacity 16
  (so 8 batch seats); interactive streamed requests one at a time for ``--seconds`` without a batch,
  then with a large batch running, TTFT p50/p99 of each and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import uvloop

from bench.overhead import Stack, pipeline

BATCH_ENV = {"LLMAAS_BATCH_SWEEP_S": "0.2", "LLMAAS_BATCH_SEATS": "32"}


def lines(n: int, tokens: int) -> bytes:
    rows = (
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "synthetic-chat",
                "max_tokens": tokens,
                "messages": [{"role": "user", "content": f"q {i}"}],
            },
        }
        for i in range(n)
    )
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def start_batch(http: httpx.Client, n: int, tokens: int) -> str:
    made = http.post("/v1/files", files={"file": ("in.jsonl", lines(n, tokens))}, data={"purpose": "batch"})
    made.raise_for_status()
    body = {
        "input_file_id": made.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    batch = http.post("/v1/batches", json=body)
    batch.raise_for_status()
    return str(batch.json()["id"])


def wait_for(http: httpx.Client, batch_id: str, statuses: tuple[str, ...]) -> tuple[dict[str, object], float]:
    while True:
        batch = http.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] in statuses:
            return batch, time.perf_counter()
        time.sleep(0.05)


def throughput(root: Path, port: int, n: int, tokens: int) -> float:
    stack = Stack(root, tokens, port, edge_env=BATCH_ENV)
    try:
        stack.wait_ready()
        headers = {"authorization": f"Bearer {stack.key('open')}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as http:
            batch_id = start_batch(http, n, tokens)
            _, began = wait_for(http, batch_id, ("in_progress",))
            done, ended = wait_for(http, batch_id, ("completed", "failed"))
            assert done["status"] == "completed", done
            return n / (ended - began)
    finally:
        stack.close()


async def interference(root: Path, port: int, seconds: float, tokens: int) -> tuple[list[float], list[float]]:
    worker = ("--ttft-ms", "20", "--tokens-per-s", "200", "--capacity", "16")
    stack = Stack(root, tokens, port, edge_env=BATCH_ENV, worker_args=worker)
    try:
        stack.wait_ready()
        key = stack.key("open")
        url, pids = f"http://127.0.0.1:{port}/v1/chat/completions", stack.pids()
        await pipeline(url, key, pids, concurrency=1, tokens=tokens, seconds=1.0, label="warm-up")
        alone = await pipeline(url, key, pids, concurrency=1, tokens=tokens, seconds=seconds, label="alone")
        headers = {"authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as http:
            batch_id = await asyncio.to_thread(start_batch, http, 20_000, tokens)
            await asyncio.to_thread(wait_for, http, batch_id, ("in_progress",))
            await asyncio.sleep(1.0)  # the batch holds its seats
            beside = await pipeline(
                url, key, pids, concurrency=1, tokens=tokens, seconds=seconds, label="beside"
            )
            running = (await asyncio.to_thread(http.get, f"/v1/batches/{batch_id}")).json()["request_counts"]
            await asyncio.to_thread(http.post, f"/v1/batches/{batch_id}/cancel")
        print(f"  batch lines completed while measuring beside it: {running['completed']}")
        return alone.ttft, beside.ttft
    finally:
        stack.close()


def quantiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100)
    return q[49] * 1000, q[98] * 1000


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="llmaas-bench-batch-"))
    port = 19000 + os.getpid() % 1000
    try:
        rate = throughput(root / "throughput", port, args.lines, args.tokens)
        alone, beside = await interference(root / "interference", port + 1, args.seconds, args.tokens)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    a50, a99 = quantiles(alone)
    b50, b99 = quantiles(beside)
    print(f"\n{os.cpu_count()} CPUs, {args.tokens} tokens per answer")
    print(
        f"batch path: {args.lines} lines in one batch, {rate:.0f} lines/s (synthetic engine, no speed limit)"
    )
    print(
        "interactive TTFT at concurrency 1 (synthetic engine: 20 ms first token, 200 tokens/s, capacity 16):"
    )
    print("| | TTFT p50 ms | TTFT p99 ms |\n|---|---|---|")
    print(f"| alone | {a50:.1f} | {a99:.1f} |\n| beside a running batch | {b50:.1f} | {b99:.1f} |")
    print(f"| ratio | {b50 / a50:.2f} | {b99 / a99:.2f} |")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=2000, help="lines of the throughput batch")
    parser.add_argument("--tokens", type=int, default=16, help="tokens per answer")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each interactive row")
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
