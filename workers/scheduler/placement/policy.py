"""Policies: which scorers with which weights, which picker, and where prefix knowledge comes from.

``default`` is what ships: the predicted first token in seconds, from the workers' cache events and
this scheduler's own count of what it placed. The others are baselines, kept selectable
(``LLMAAS_PLACEMENT_POLICY``) to measure against: ``round-robin``, ``least-loaded`` (the previous
default), and ``llm-d`` (llm-d's default scorers: approximate prefix 3, queue 2, KV usage 2).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from llmaas.fleet import WorkerView
from workers.scheduler.placement.cost import fast_first_token
from workers.scheduler.placement.filters import FILTERS
from workers.scheduler.placement.load import kv_headroom, least_loaded, queue
from workers.scheduler.placement.prefix import prefix_affinity
from workers.scheduler.placement.request import Ask, Candidate
from workers.scheduler.prefixes import PrefixIndex

Scorer = Callable[[Ask, Sequence[Candidate]], list[float]]
PrefixSource = Literal["none", "placements", "events"]
"""Where a policy learns which worker holds a prefix: nowhere, its own placements (approximate),
or the workers' cache events (precise)."""

PLACEMENT_MEMORY_BLOCKS = 27_000
"""Blocks the approximate table remembers per worker: about one H100's KV cache of an 8B model."""


@dataclass(frozen=True)
class Weighted:
    scorer: Scorer
    weight: float


@dataclass(frozen=True)
class Policy:
    name: str
    scorers: tuple[Weighted, ...] = ()
    prefixes: PrefixSource = "none"
    round_robin: bool = False


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("round-robin", round_robin=True),
        Policy("least-loaded", (Weighted(least_loaded, 1.0), Weighted(kv_headroom, 0.5))),
        Policy(
            "llm-d",
            (Weighted(prefix_affinity, 3.0), Weighted(queue, 2.0), Weighted(kv_headroom, 2.0)),
            prefixes="placements",
        ),
        Policy("default", (Weighted(fast_first_token, 1.0),), prefixes="events"),
    )
}


def weighted(policy: Policy, weights: dict[str, float]) -> Policy:
    """``policy`` with some scorers' weights replaced, by scorer name (e.g. ``prefix_affinity``);
    ValueError names the policy's scorers when one is not among them."""
    names = {w.scorer.__name__ for w in policy.scorers}
    unknown = sorted(set(weights) - names)
    if unknown:
        known = ", ".join(sorted(names)) or "none"
        raise ValueError(f"policy {policy.name!r} has no scorer {', '.join(unknown)} (it has: {known})")
    scorers = tuple(Weighted(w.scorer, weights.get(w.scorer.__name__, w.weight)) for w in policy.scorers)
    return Policy(policy.name, scorers, policy.prefixes, policy.round_robin)


@dataclass
class Placer:
    """One scheduler's placement: the policy and the state it keeps between requests."""

    policy: Policy
    rng: random.Random = field(default_factory=random.Random)
    placed: PrefixIndex = field(default_factory=lambda: PrefixIndex(capacity=PLACEMENT_MEMORY_BLOCKS))
    """Where this scheduler sent which prefix (the ``placements`` source)."""
    _turn: int = 0

    def pick(
        self, ask: Ask, fleet: Sequence[WorkerView], cached: PrefixIndex | None = None
    ) -> Candidate | None:
        """The worker for ``ask`` (ties broken at random), with the prefix it is thought to hold;
        None when no worker passes the filters. ``cached``: the index fed by cache events."""
        workers = [w for w in fleet if all(keep(ask, w) for keep in FILTERS)]
        if not workers:
            return None
        index = {"events": cached, "placements": self.placed, "none": None}[self.policy.prefixes]
        held = index.matches(ask.model, ask.blocks) if index is not None and ask.blocks else {}
        candidates = [Candidate(w, held.get(w.worker_id, 0)) for w in workers]
        chosen = self._choose(ask, candidates)
        if self.policy.prefixes == "placements" and ask.blocks:
            self.placed.remember(chosen.worker.worker_id, ask.model, ask.blocks)
        return chosen

    def _choose(self, ask: Ask, candidates: list[Candidate]) -> Candidate:
        if self.policy.round_robin:
            candidates.sort(key=lambda c: c.worker.worker_id)
            self._turn += 1
            return candidates[self._turn % len(candidates)]
        totals = [0.0] * len(candidates)
        for weighted in self.policy.scorers:
            for i, score in enumerate(weighted.scorer(ask, candidates)):
                totals[i] += weighted.weight * score
        top = max(totals)
        best = [c for c, total in zip(candidates, totals, strict=True) if total >= top - 1e-12]
        return best[0] if len(best) == 1 else self.rng.choice(best)
