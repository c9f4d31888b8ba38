"""Placement as small pure functions: filters, then weighted scorers in [0, 1], then a picker.

Each takes the job's model and an immutable fleet snapshot, so each is tested with a table.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmaas.fleet import WorkerView

Filter = Callable[[str, WorkerView], bool]
Scorer = Callable[[str, WorkerView], float]


def serves_model(model: str, worker: WorkerView) -> bool:
    return model in worker.models


def accepting(model: str, worker: WorkerView) -> bool:
    """A worker that announced it is leaving takes no new work."""
    return not worker.leaving


def least_loaded(model: str, worker: WorkerView) -> float:
    """1 for an idle worker, falling towards 0 as its load reaches (and passes) its capacity."""
    return max(0.0, 1.0 - worker.load / max(worker.capacity, 1))


def kv_headroom(model: str, worker: WorkerView) -> float:
    """Free KV cache: a worker whose cache is nearly full will queue (or preempt) a new sequence."""
    return max(0.0, 1.0 - worker.kv_cache_usage)


FILTERS: tuple[Filter, ...] = (serves_model, accepting)


@dataclass(frozen=True)
class Weighted:
    scorer: Scorer
    weight: float


DEFAULT_SCORERS: tuple[Weighted, ...] = (Weighted(least_loaded, 1.0), Weighted(kv_headroom, 0.5))


def pick(
    model: str,
    fleet: Sequence[WorkerView],
    scorers: Sequence[Weighted] = DEFAULT_SCORERS,
    rng: random.Random | None = None,
) -> WorkerView | None:
    """The best worker for ``model``, ties broken at random; None when no worker passes the filters."""
    best: list[WorkerView] = []
    best_score = -1.0
    for worker in fleet:
        if not all(keep(model, worker) for keep in FILTERS):
            continue
        score = sum(w.weight * w.scorer(model, worker) for w in scorers)
        if score > best_score:
            best, best_score = [worker], score
        elif score == best_score:
            best.append(worker)
    if not best:
        return None
    return best[0] if len(best) == 1 else (rng or random).choice(best)
