"""One simulated run of a workload under a policy, its figures, and the saturation rate that
``--load`` is a multiple of."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from bench.placement.workloads import Workload
from llmaas.wire import Perf
from workers.scheduler.placement import POLICIES, Policy
from workers.simulation.fleet import Knobs, Simulation

Make = Callable[[float], Workload]
"""A workload at a given arrival rate (requests per second)."""


@dataclass(frozen=True)
class Figures:
    policy: str
    requests: int
    ttft_p50_s: float
    ttft_p99_s: float
    ttft_mean_s: float
    goodput_rps: float
    """Requests per second whose first token came within the SLO."""
    slo_ttft_s: float
    prefix_hit_rate: float
    """Prompt tokens served from a prefix cache, of all prompt tokens."""
    load_cv: float
    """Coefficient of variation of the workers' average sequence counts (0: perfectly even)."""

    def row(self) -> dict[str, object]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run(
    workload: Workload,
    policy: Policy,
    *,
    perf: Perf,
    workers: int,
    seed: int,
    slo_s: float,
    knobs: Knobs | None = None,
) -> Figures:
    sim = Simulation(policy, perf, workers, knobs or Knobs(), seed, workload.follow_up)
    outcomes = sim.run(workload.requests)
    ttfts = [o.ttft for o in outcomes]
    arrivals = [o.request.arrival for o in outcomes]
    span = max(max(arrivals) - min(arrivals), 1e-9)
    prompt = sum(o.request.prompt_tokens for o in outcomes)
    return Figures(
        policy=policy.name,
        requests=len(outcomes),
        ttft_p50_s=_quantile(ttfts, 0.5),
        ttft_p99_s=_quantile(ttfts, 0.99),
        ttft_mean_s=sum(ttfts) / len(ttfts),
        goodput_rps=sum(1 for t in ttfts if t <= slo_s) / span,
        slo_ttft_s=slo_s,
        prefix_hit_rate=sum(o.cached_tokens for o in outcomes) / max(prompt, 1),
        load_cv=sim.load_cv(),
    )


SATURATION_QUANTILE = 0.9
"""Share of first tokens that must come within the SLO for a fleet to count as keeping up."""


def saturation(make: Make, *, perf: Perf, workers: int, seed: int, slo_s: float, start: float = 1.0) -> float:
    """The highest arrival rate at which least-loaded still gives 90 % of first tokens within the
    SLO (as DistServe and Mooncake define a fleet's capacity): doubled from ``start`` until it fails,
    then bisected in log scale to within 3 %. Raises ValueError when even a trickle misses the SLO."""
    policy = POLICIES["least-loaded"]

    def saturated(rate: float) -> bool:
        sim = Simulation(policy, perf, workers, Knobs(), seed, (workload := make(rate)).follow_up)
        ttfts = [o.ttft for o in sim.run(workload.requests)]
        return _quantile(ttfts, SATURATION_QUANTILE) > slo_s

    low = high = start
    if saturated(start):
        while saturated(low):
            high, low = low, low / 2
            if low < 1e-3:
                raise ValueError(f"least-loaded misses a {slo_s} s TTFT SLO at any rate; raise --slo-ttft")
    else:
        while not saturated(high):
            low, high = high, high * 2
    while high / low > 1.03:
        middle = math.sqrt(low * high)
        low, high = (low, middle) if saturated(middle) else (middle, high)
    return low
