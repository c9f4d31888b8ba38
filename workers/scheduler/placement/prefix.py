"""Prefix affinity: the share of the prompt a candidate already holds in its prefix cache."""

from __future__ import annotations

from collections.abc import Sequence

from workers.scheduler.placement.request import Ask, Candidate


def prefix_affinity(ask: Ask, candidates: Sequence[Candidate]) -> list[float]:
    if ask.prompt_tokens <= 0:
        return [0.0] * len(candidates)
    return [c.cached_tokens(ask) / ask.prompt_tokens for c in candidates]
