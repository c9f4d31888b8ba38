"""The console's pages with months of usage: how long each takes to answer, p50 and p95.

Run: ``python -m bench.console [--rows 1000000] [--tenants 20] [--days 30] [--tries 40]``.

A child process fills a fresh chDB with ``--rows`` usage rows (spread over ``--days`` days and
``--tenants`` tenants, one of them making a tenth of the traffic, three models, a few errors) and
computes the rollups over all of them with the consumer's own rollup statements; then real
``llmaas metering`` and ``llmaas edge`` processes serve that store over a nats-server, and each page
is fetched ``--tries`` times in a row by a signed-in tenant (the busy one) and by the operator. The
baseline, in the same run: ``GET /health`` of the same edge (the HTTP round trip alone).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from llmaas.nats_server import NatsServer

PAGES = (
    "/console/overview",
    "/console/usage",
    "/console/usage?days=7",
    "/console/latency?days=7",
    "/console/history",
    "/console/history?since=7d&status=error",
    "/console/alerts",
    "/console/keys",
    "/console/models",
)


def _fill(root: Path, rows: int, tenants: int, days: int) -> None:
    """In a child (one chDB per process): ``rows`` usage rows and their rollups."""
    from llmaas import catalog, private
    from llmaas.pricing import PriceList
    from llmaas.wire import UsageEvent
    from metering.rows import USAGE_COLUMNS, Pricer
    from metering.service import use_utc
    from metering.store import Store

    use_utc()
    # Encrypted at rest, as metering keeps it: the key made where metering will look for it.
    key = private.secret(root / "clickhouse.key", None)
    store = Store.connect(data_dir=root, url=None, database="llmaas", key=key)
    store.migrate()
    pricer = Pricer(PriceList.load(), catalog.load())
    rng = random.Random(0)
    now = time.time()
    models = ("gemma3:27b", "qwen3:8b", "smollm2:135m")
    started = time.perf_counter()
    batch: list[list[object]] = []
    for i in range(rows):
        tenant = "tenant-0" if rng.random() < 0.1 else f"tenant-{rng.randrange(1, tenants)}"
        ttft = rng.lognormvariate(4.5, 0.6)
        status = "error" if rng.random() < 0.01 else "ok"
        event = UsageEvent(
            request_id=uuid.uuid4().hex,
            at=now - rng.random() * days * 86_400,
            tenant=tenant,
            token_id=f"k{rng.randrange(5)}-{tenant}",
            model=models[i % 3],
            endpoint="chat",
            status=status,  # type: ignore[arg-type]
            http_status=200 if status == "ok" else 500,
            prompt_tokens=rng.randrange(20, 4000),
            completion_tokens=rng.randrange(1, 800),
            ttft_ms=ttft if status == "ok" else None,
            duration_ms=ttft + rng.uniform(200, 8000),
        )
        batch.append(pricer.usage_row(event))
        if len(batch) == 100_000:
            store.insert("usage", USAGE_COLUMNS, batch)
            batch = []
    store.insert("usage", USAGE_COLUMNS, batch)
    inserted = time.perf_counter()
    # The consumer's rollup statements, over everything at once (not the touched keys of a batch).
    names = [f"tenant-{n}" for n in range(tenants)]
    for name in ("minute", "hour", "day"):
        sql = "\n".join(line for line in store._rollups[name].splitlines() if "has({keys" not in line)
        store.client.command(
            sql,
            parameters={
                "version": time.time_ns(),
                "tenants": names,
                "start": "1970-01-02",
                "end": "2100-01-01",
            },
        )
    print(f"{rows} rows in {inserted - started:.0f} s, rollups in {time.perf_counter() - inserted:.0f} s")
    store.close()


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "llmaas", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(what)


def _signed_in(base: str, key: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    token = client.get("/console").text.split('name="csrf_token" value="')[1].split('"')[0]
    answer = client.post("/console/login", data={"key": key, "csrf_token": token})
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in failed: {answer.status_code} {answer.text[:300]}")
    return client


def _times(client: httpx.Client, path: str, tries: int) -> tuple[float, float]:
    client.get(path)  # warm: the first query of a kind compiles its plan
    took = []
    for _ in range(tries):
        started = time.perf_counter()
        answer = client.get(path)
        took.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text[-300:]}")
    took.sort()
    return statistics.median(took) * 1000, took[min(len(took) - 1, int(0.95 * len(took)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--tries", type=int, default=40)
    parser.add_argument("--fill", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill is not None:
        _fill(args.fill, args.rows, args.tenants, args.days)
        return
    root = Path(tempfile.mkdtemp(prefix="bench-console-"))
    fill = [sys.executable, "-m", "bench.console", "--fill", str(root / "meter")]
    fill += ["--rows", str(args.rows), "--tenants", str(args.tenants), "--days", str(args.days)]
    subprocess.run(fill, check=True)
    nats_server = NatsServer(root / "nats", port=-1)
    url = nats_server.start()
    admin = secrets.token_urlsafe(32)
    port = 18_000 + os.getpid() % 1000
    base = f"http://127.0.0.1:{port}"
    procs = [
        _start(["metering", "--nats-url", url, "--data-dir", str(root / "meter")], {}, root / "metering.log"),
        _start(
            ["edge", "--nats-url", url, "--port", str(port)], {"LLMAAS_ADMIN_TOKEN": admin}, root / "edge.log"
        ),
    ]
    try:
        _wait(lambda: httpx.get(f"{base}/health").status_code == 200, 60, "the edge")
        headers = {"authorization": f"Bearer {admin}"}
        httpx.post(f"{base}/admin/v1/tenants", json={"name": "tenant-0", "tier": "tier1"}, headers=headers)
        key = httpx.post(f"{base}/admin/v1/keys", json={"tenant": "tenant-0"}, headers=headers).json()["key"]
        tenant, operator = _signed_in(base, key), _signed_in(base, admin)
        _wait(lambda: tenant.get("/console/overview").status_code == 200, 60, "metering to answer")
        health = _times(tenant, "/health", args.tries)
        print(
            f"{args.rows:,} usage rows, {args.days} days, {args.tenants} tenants; {args.tries} tries a page"
        )
        print(f"baseline GET /health: p50 {health[0]:.1f} ms, p95 {health[1]:.1f} ms\n")
        print("| page | tenant p50 ms | tenant p95 ms | operator p50 ms | operator p95 ms |")
        print("|---|---|---|---|---|")
        for path in PAGES:
            mine, everyone = _times(tenant, path, args.tries), _times(operator, path, args.tries)
            print(f"| `{path}` | {mine[0]:.0f} | {mine[1]:.0f} | {everyone[0]:.0f} | {everyone[1]:.0f} |")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        nats_server.stop()


if __name__ == "__main__":
    main()
