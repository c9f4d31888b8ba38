"""``python -m bench.placement``: placement policies on a simulated fleet, in virtual time.

Two modes. A trace (``--trace FILE`` in Mooncake's format) replayed at ``--load`` times the rate
least-loaded saturates at on it; or the bench's own workloads (multi-turn chat, shared system
prompts, random prompts) swept over loads and seeds. Each run drives the scheduler's real
``Placer.pick`` with heartbeats every second (``--heartbeat``). The last line printed is one JSON
object (``--json``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import msgspec

from bench.placement.runs import Make, run, saturation
from bench.placement.workloads import WORKLOADS, TraceError, read_trace, scaled
from workers.scheduler.placement import POLICIES, Policy
from workers.simulation.fleet import Knobs
from workers.simulation.profiles import DEFAULT_PROFILE, PROFILES

BASELINES = ("round-robin", "least-loaded", "llm-d")


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.placement", description=__doc__.split("\n")[0])
    parser.add_argument("--trace", type=Path, help="a Mooncake-format JSON-lines trace to replay")
    parser.add_argument("--policy", choices=sorted(POLICIES), action="append", help="default: all")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append", help="default: all")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--load", type=float, action="append", help="x least-loaded's saturation rate")
    parser.add_argument("--seed", type=int, action="append", help="default: 0 (a trace), 0 1 2 (a sweep)")
    parser.add_argument("--seconds", type=float, default=60, help="of arrivals, per run of a bench workload")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE)
    parser.add_argument(
        "--block-size", type=int, help="tokens per KV block (default: the profile's 16; larger runs faster)"
    )
    parser.add_argument("--slo-ttft", type=float, default=2.0, help="seconds; goodput counts requests within")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between a worker's heartbeats")
    parser.add_argument("--schedulers", type=int, default=1, help="scheduler replicas placing at once")
    parser.add_argument("--ablation", action="store_true", help="also default without each of its signals")
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the results")
    return parser.parse_args(argv)


def _policies(names: list[str] | None, ablation: bool) -> list[Policy]:
    chosen = [POLICIES[n] for n in (names or [*BASELINES, "default"])]
    if ablation:
        default = POLICIES["default"]
        chosen += [
            replace(default, name="default-no-prefix", prefixes="none"),
            replace(default, name="default-placements", prefixes="placements"),
        ]
    return chosen


def _variants(policy: Policy, knobs: Knobs, ablation: bool) -> list[tuple[str, Policy, Knobs]]:
    out = [(policy.name, policy, knobs)]
    if ablation and policy.name == "default":
        out.append(("default-no-own-counts", policy, replace(knobs, own_accounting=False)))
        out.append(("default-placements-counted", policy, replace(knobs, progress=False)))
        out.append(("default-heartbeat-50ms", policy, replace(knobs, heartbeat_s=0.05)))
    return out


def _log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    perf = PROFILES[args.profile]
    if args.block_size:
        perf = msgspec.structs.replace(perf, block_size=args.block_size)
    knobs = Knobs(heartbeat_s=args.heartbeat, schedulers=args.schedulers)
    block = perf.block_size
    try:
        trace = read_trace(args.trace, block) if args.trace is not None else None
    except (OSError, TraceError) as exc:
        _log(f"error: {exc}")
        return 2
    names = ["trace"] if trace is not None else args.workload or list(WORKLOADS)
    seeds = args.seed or ([0] if trace is not None else [0, 1, 2])
    loads = args.load or ([0.7] if trace is not None else [0.3, 0.5, 0.7, 0.9, 1.2])

    def maker(name: str, seed: int) -> Make:
        if trace is not None:
            return lambda rate: scaled(trace, rate)
        return lambda rate: WORKLOADS[name](rate, args.seconds, block, seed)

    rows: list[dict[str, object]] = []
    for name in names:
        for seed in seeds:
            make = maker(name, seed)
            rate = saturation(make, perf=perf, workers=args.workers, seed=seed, slo_s=args.slo_ttft)
            _log(f"{name} seed {seed}: least-loaded keeps p90 TTFT <= {args.slo_ttft} s to {rate:.2f} req/s")
            for load in loads:
                workload = make(rate * load)
                for policy in _policies(args.policy, args.ablation):
                    for label, variant, variant_knobs in _variants(policy, knobs, args.ablation):
                        figures = run(
                            workload,
                            variant,
                            perf=perf,
                            workers=args.workers,
                            seed=seed,
                            slo_s=args.slo_ttft,
                            knobs=variant_knobs,
                        )
                        row = {
                            **replace(figures, policy=label).row(),
                            "workload": name,
                            "load": load,
                            "seed": seed,
                            "saturation_rps": round(rate, 3),
                            "workers": args.workers,
                        }
                        rows.append(row)
                        _log(json.dumps(row))
    _table(rows)
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else {"rows": rows}))
    return 0


def _table(rows: list[dict[str, object]]) -> None:
    """Medians over seeds, with p99 TTFT as a ratio to the baselines of the same workload and load."""
    groups: dict[tuple[object, object, object], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault((row["workload"], row["load"], row["policy"]), []).append(row)

    def median(key: tuple[object, object, object], field: str) -> float:
        return statistics.median(float(r[field]) for r in groups[key])  # type: ignore[arg-type]

    head = ["workload", "load", "policy", "TTFT p50 s", "TTFT p99 s", "p99 RR/this", "p99 LL/this"]
    head += ["p99 llm-d/this", "goodput/s", "prefix hits", "load CV"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for key in groups:
        workload, load, policy = key
        p99 = median(key, "ttft_p99_s")
        ratios = []
        for base in BASELINES:
            other = (workload, load, base)
            ratios.append(f"{median(other, 'ttft_p99_s') / p99:.2f}" if other in groups and p99 > 0 else "-")
        cells = [str(workload), str(load), str(policy), f"{median(key, 'ttft_p50_s'):.3f}", f"{p99:.3f}"]
        cells += [*ratios, f"{median(key, 'goodput_rps'):.2f}", f"{median(key, 'prefix_hit_rate'):.3f}"]
        cells.append(f"{median(key, 'load_cv'):.3f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
