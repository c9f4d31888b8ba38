"""Metering throughput and lag: usage events from JetStream into chDB by one `llmaas metering` process.

Run: ``python -m bench.metering [--events 100000] [--batch 1000 5000 20000] [--rate 500 2000]``.

- throughput: ``--events`` usage events are published to LLMAAS_USAGE first, then one metering
  process (its own chDB) is started with each batch size; events/s is the count stored over the time
  from its first stored row to the last. Baseline, in the same run: the same rows inserted straight
  into a chDB by clickhouse-connect in batches of the same size (no NATS, no dedup, no rollups).
- lag: events are published at a steady ``--rate`` per second for ``--seconds`` while metering runs;
  lag is a row's ``inserted_at`` (set by ClickHouse) minus its ``at`` (when the request finished,
  stamped at publish), p50 / p99 / max.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import nats

from llmaas import codec, streams, subjects, usage
from llmaas.nats_server import NatsServer
from llmaas.wire import Failed, SqlQuery, UsageEvent


def event(i: int, at: float) -> UsageEvent:
    return UsageEvent(
        request_id=uuid.uuid4().hex,
        at=at,
        tenant=f"tenant-{i % 50}",
        token_id=f"k{i % 500}",
        model=("gemma3:27b", "qwen3:8b", "smollm2:135m")[i % 3],
        endpoint="chat",
        status="ok",
        http_status=200,
        finish_reason="stop",
        worker=f"w{i % 8}",
        prompt_tokens=100 + i % 900,
        completion_tokens=50 + i % 400,
        ttft_ms=40.0 + i % 100,
        duration_ms=900.0,
        edge="bench",
    )


async def publish(url: str, events: list[UsageEvent]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await streams.ensure(js, streams.USAGE)
    for start in range(0, len(events), 500):
        await asyncio.gather(*(usage.publish(js, e, timeout_s=10) for e in events[start : start + 500]))
    await nc.close()


async def publish_steadily(url: str, rate: int, seconds: float) -> int:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sent, started = 0, time.monotonic()
    tick = 0.01
    while time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate)
        batch = [event(sent + i, time.time()) for i in range(due - sent)]
        await asyncio.gather(*(usage.publish(js, e, timeout_s=10) for e in batch))
        sent = due
        await asyncio.sleep(tick)
    await nc.close()
    return sent


async def sql(url: str, query: str) -> list[list[object]]:
    nc = await nats.connect(url)
    try:
        reply = await nc.request(subjects.METERING_QUERY, codec.encode(SqlQuery(sql=query)), timeout=30)
    finally:
        await nc.close()
    answer = codec.rows_decoder.decode(reply.data)
    if isinstance(answer, Failed):
        raise RuntimeError(answer.error.message)
    return answer.rows


def start_metering(url: str, data: Path, batch: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LLMAAS_METERING_BATCH_SIZE": str(batch), "LLMAAS_METERING_BATCH_WAIT_S": "0.5"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "llmaas", "metering", "--nats-url", url, "--data-dir", str(data)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_rows(url: str, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if int((await sql(url, "SELECT count() FROM usage"))[0][0]) >= n:  # type: ignore[call-overload]
                return
        except (RuntimeError, nats.errors.Error, TimeoutError):
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{n} rows not stored within {timeout_s} s")


def direct_insert(events: list[UsageEvent], batch: int, root: Path) -> float:
    """Events/s of the same rows straight into chDB, batch by batch (in a child: one chDB per process)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.metering", "--direct", str(batch), str(root)],
        input=msgspec.json.encode(events),
        capture_output=True,
        check=True,
    )
    return float(done.stdout.decode().split()[-1])


def _direct_child(batch: int, root: Path) -> None:
    from llmaas import catalog
    from llmaas.pricing import PriceList
    from metering.rows import USAGE_COLUMNS, Pricer
    from metering.service import use_utc
    from metering.store import Store

    use_utc()
    events = msgspec.json.decode(sys.stdin.buffer.read(), type=list[UsageEvent])
    store = Store.connect(data_dir=root, url=None, database="llmaas")
    store.migrate()
    pricer = Pricer(PriceList.load(), catalog.load())
    started = time.perf_counter()
    for i in range(0, len(events), batch):
        store.insert("usage", USAGE_COLUMNS, [pricer.usage_row(e) for e in events[i : i + batch]])
    print(len(events) / (time.perf_counter() - started))


async def throughput(args: argparse.Namespace, root: Path) -> None:
    now = time.time()
    events = [event(i, now - 60 + i * 1e-4) for i in range(args.events)]
    print(f"throughput: {args.events} events already in LLMAAS_USAGE, one metering process")
    print("| batch | metering events/s | direct chDB insert events/s | ratio |")
    print("|---|---|---|---|")
    for batch in args.batch:
        nats_server = NatsServer(root / f"nats-{batch}", port=-1)
        url = nats_server.start()
        proc = None
        try:
            await publish(url, events)
            proc = start_metering(url, root / f"meter-{batch}", batch, root / "metering.log")
            await wait_rows(url, 1, 120)
            first = (await sql(url, "SELECT toFloat64(min(inserted_at)) FROM usage"))[0][0]
            await wait_rows(url, args.events, 600)
            last = (await sql(url, "SELECT toFloat64(max(inserted_at)) FROM usage"))[0][0]
            # rows stored from the first insert to the last; the first batch counts as one batch's time
            rate = args.events / max(float(last) - float(first), 1e-3)  # type: ignore[arg-type]
            direct = direct_insert(events, batch, root / f"direct-{batch}")
            print(f"| {batch} | {rate:,.0f} | {direct:,.0f} | {rate / direct:.2f} |")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
            nats_server.stop()


async def lag(args: argparse.Namespace, root: Path) -> None:
    print(f"lag: events published at a steady rate for {args.seconds:g} s, batch 5000 / wait 0.5 s")
    print("| rate events/s | stored | lag p50 ms | lag p99 ms | lag max ms |")
    print("|---|---|---|---|---|")
    for rate in args.rate:
        nats_server = NatsServer(root / f"nats-lag-{rate}", port=-1)
        url = nats_server.start()
        proc = start_metering(url, root / f"lag-{rate}", 5000, root / "metering.log")
        try:
            await wait_rows(url, 0, 120)
            sent = await publish_steadily(url, rate, args.seconds)
            await wait_rows(url, sent, 120)
            lags = "toFloat64(inserted_at - at)"
            q = f"SELECT quantile(0.5)({lags}), quantile(0.99)({lags}), max({lags}) FROM usage"
            p50, p99, worst = (float(v) for v in (await sql(url, q))[0])  # type: ignore[arg-type]
            print(f"| {rate} | {sent} | {p50 * 1000:.0f} | {p99 * 1000:.0f} | {worst * 1000:.0f} |")
        finally:
            proc.terminate()
            proc.wait(30)
            nats_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--rate", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--direct", nargs=2, metavar=("BATCH", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct:
        _direct_child(int(args.direct[0]), Path(args.direct[1]))
        return
    root = Path(tempfile.mkdtemp(prefix="llmaas-bench-metering-"))
    try:
        asyncio.run(throughput(args, root))
        asyncio.run(lag(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
