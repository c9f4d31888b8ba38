"""Load scorers: how busy each candidate is, from its heartbeat and this scheduler's own placements."""

from __future__ import annotations

from collections.abc import Sequence

from workers.scheduler.placement.request import Ask, Candidate


def least_loaded(ask: Ask, candidates: Sequence[Candidate]) -> list[float]:
    """1 for an idle worker, falling towards 0 as its sequences reach (and pass) its capacity."""
    return [max(0.0, 1.0 - c.worker.load / max(c.worker.capacity, 1)) for c in candidates]


def queue(ask: Ask, candidates: Sequence[Candidate]) -> list[float]:
    """llm-d's queue scorer: the shortest waiting queue 1, the longest 0, linear between (all 1
    when equal). From heartbeats only, as llm-d reads it from the engines' metrics."""
    waiting = [c.worker.waiting for c in candidates]
    low, high = min(waiting, default=0), max(waiting, default=0)
    if high == low:
        return [1.0] * len(candidates)
    return [(high - w) / (high - low) for w in waiting]


def kv_headroom(ask: Ask, candidates: Sequence[Candidate]) -> list[float]:
    """Free KV cache (llm-d's KV-utilisation scorer): a nearly full cache queues or preempts."""
    return [max(0.0, 1.0 - c.worker.kv_cache_usage) for c in candidates]
