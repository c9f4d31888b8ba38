"""The placement bench in small: the scheduler's real placement code on simulated workers in
virtual time. The figures are virtual seconds, deterministic for a seed: they are compared between
policies of one run, never against wall-clock limits."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from bench.placement.runs import run
from bench.placement.workloads import WORKLOADS, Workload, read_trace
from workers.scheduler.placement import POLICIES
from workers.simulation.fleet import Knobs, Request, Simulation
from workers.simulation.profiles import PROFILES

PERF = msgspec.structs.replace(PROFILES["llama-8b-h100"], block_size=64)
WORKERS = 4


def figures(workload: Workload, policy: str) -> tuple[float, float]:
    f = run(workload, POLICIES[policy], perf=PERF, workers=WORKERS, seed=7, slo_s=2.0)
    return f.ttft_p99_s, f.prefix_hit_rate


@pytest.mark.parametrize(("name", "rate"), [("shared-prompts", 60.0), ("multi-turn", 120.0)])
def test_the_default_beats_the_baselines_where_prefixes_repeat(name: str, rate: float) -> None:
    workload = WORKLOADS[name](rate, 20, PERF.block_size, 7)
    p99 = {p: figures(workload, p) for p in POLICIES}
    assert p99["default"][0] < p99["least-loaded"][0]
    assert p99["default"][0] < p99["round-robin"][0]
    assert p99["default"][0] <= p99["llm-d"][0]
    assert p99["default"][1] > p99["least-loaded"][1]  # from cached prefixes: more prompt hits


def test_on_random_prompts_the_default_is_no_worse_than_least_loaded() -> None:
    workload = WORKLOADS["random"](60.0, 20, PERF.block_size, 7)
    assert figures(workload, "default")[0] <= figures(workload, "least-loaded")[0] * 1.02


def hot_burst(count: int) -> list[Request]:
    """One long system prompt, computed once, then ``count`` long documents after it within 50 ms:
    together far more prefill than one worker does in a second."""
    size = PERF.block_size
    system = tuple(range(1, 8192 // size + 1))
    first = Request("warm-up", 0.0, system, 8192 + 20, 5)
    burst = []
    for i in range(count):
        document = tuple(100_000 * (i + 1) + b for b in range(4096 // size))
        burst.append(Request(f"q{i}", 1.0 + 0.05 * i / count, (*system, *document), 8192 + 4096, 50))
    return [first, *burst]


@pytest.mark.parametrize("accounting", [True, False])
def test_two_schedulers_spread_a_hot_burst_by_counting_what_they_placed(accounting: bool) -> None:
    """Between heartbeats the only news of a worker's queue is what each scheduler sent it itself:
    with it, the worker holding the prompt takes the burst until it is slower than computing the
    prompt elsewhere; without it, both schedulers pile the whole burst onto that worker."""
    knobs = Knobs(schedulers=2, own_accounting=accounting)
    sim = Simulation(POLICIES["default"], PERF, 8, knobs, seed=3)
    per_worker = Counter(o.worker for o in sim.run(hot_burst(300)) if o.request.request_id != "warm-up")
    busiest = max(per_worker.values())
    if accounting:
        assert busiest <= 150 and len(per_worker) >= 4
    else:
        assert busiest >= 290


def test_a_mooncake_trace_maps_its_512_token_blocks_onto_engine_blocks(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 1100, "output_length": 10, "hash_ids": [7, 8, 9]},
        {"timestamp": 250, "input_length": 600, "output_length": 0, "hash_ids": [7, 4]},
    ]
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = read_trace(trace, 64)
    assert (first.arrival, first.prompt_tokens, first.output_tokens) == (0.0, 1100, 10)
    assert len(first.blocks) == 1100 // 64  # only full engine blocks carry ids
    assert first.blocks[:8] == second.blocks[:8]  # hash id 7: the same first 512 tokens
    assert first.blocks[8] != second.blocks[8]  # then 8 against 4
    assert (second.arrival, second.output_tokens) == (0.25, 1)


def test_the_bench_replays_a_trace_with_the_cli_that_other_tools_drive(tmp_path: Path) -> None:
    workload = WORKLOADS["shared-prompts"](20.0, 10, 512, 1)
    trace = tmp_path / "trace.jsonl"
    lines = [
        {
            "timestamp": int(r.arrival * 1000),
            "input_length": r.prompt_tokens,
            "output_length": r.output_tokens,
            "hash_ids": [b % 100_000 for b in r.blocks[: -(-r.prompt_tokens // 512)]],
        }
        for r in workload.requests
    ]
    trace.write_text("".join(json.dumps(line) + "\n" for line in lines))
    command = [sys.executable, "-m", "bench.placement", "--trace", str(trace), "--policy", "default"]
    command += ["--workers", "4", "--load", "0.7", "--seed", "3", "--json", "--block-size", "64"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["policy"] == "default" and result["requests"] == len(lines)
    for field in ("ttft_p50_s", "ttft_p99_s", "goodput_rps", "prefix_hit_rate", "load_cv"):
        assert isinstance(result[field], float) and result[field] >= 0
    assert 0 < result["ttft_p50_s"] <= result["ttft_p99_s"]
    assert result["prefix_hit_rate"] > 0.3  # the trace's shared system prompts are found again


def test_a_line_that_is_not_a_trace_line_is_named_not_a_traceback(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 900, "output_length": 9}\n{"timestamp": 5}\n')
    command = [sys.executable, "-m", "bench.placement", "--trace", str(trace), "--policy", "default"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"{trace}:2: not a Mooncake trace line (no 'input_length')" in done.stderr
    assert "Traceback" not in done.stderr
