"""The predicted first token, in seconds: queued prefill, this prompt's uncached tokens, and the
slowdown from the sequences the worker is decoding meanwhile, costed with the worker's step model
(its heartbeat's ``perf``; a default H100 profile where the engine gives none)."""

from __future__ import annotations

from collections.abc import Sequence

from llmaas.wire import Perf
from workers.scheduler.placement.request import Ask, Candidate
from workers.simulation.profiles import DEFAULT_PROFILE, PROFILES

RECOMPUTE_WEIGHT = 5.0
"""Uncached prompt tokens count this much more again: work the fleet spends that a worker holding
the prefix would not have (it slows everyone else placed there later), so a chat stays where its
history is unless that worker is really slower."""

ANSWER_STEPS = 256
"""Steps a running sequence is assumed to have left, for the wait when every slot is taken."""


def predicted_ttft(ask: Ask, candidate: Candidate) -> float:
    worker = candidate.worker
    perf: Perf = worker.perf or PROFILES[DEFAULT_PROFILE]
    uncached = candidate.uncached_tokens(ask)
    prefill = worker.queued_prefill_tokens + uncached
    decoding = min(worker.running, perf.max_seqs)
    # Each step runs one token per decoding sequence; prompt chunks share what is left of its budget.
    per_step = max(perf.token_budget - decoding, 1)
    steps = max(1, -(-prefill // per_step))
    context = int(worker.kv_cache_usage * perf.kv_tokens)
    step = perf.step_seconds(min(perf.token_budget, decoding + prefill), context)
    # A sequence waits for a slot when all are taken, and for memory when the KV cache cannot hold
    # what is queued and this prompt: until enough running sequences end. They end, on average,
    # ANSWER_STEPS steps into their answers, freeing about context / ANSWER_STEPS tokens a step.
    over = max(0, worker.load + 1 - perf.max_seqs)
    short = max(0, context + prefill - perf.kv_tokens)
    waits = over / perf.max_seqs * ANSWER_STEPS + short * ANSWER_STEPS / max(context, 1)
    return (steps + waits) * step + RECOMPUTE_WEIGHT * uncached * perf.token_s


def fast_first_token(ask: Ask, candidates: Sequence[Candidate]) -> list[float]:
    """1 for the candidate predicted to give the first token soonest, t_best / t for the others."""
    seconds = [predicted_ttft(ask, c) for c in candidates]
    best = min(seconds, default=0.0)
    return [best / s if s > 0 else 1.0 for s in seconds]
