"""Builds a guard service from its settings (no work at import)."""

from __future__ import annotations

from guard.history import History, KvHistory
from guard.layers.behaviour import BehaviourLayer, Policy
from guard.layers.learned import LearnedLayer
from guard.layers.patterns import PatternLayer
from guard.layers.structure import StructureLayer
from guard.metrics import GuardMetrics
from guard.screening import Screener
from guard.service import GuardService
from guard.settings import GuardSettings
from llmaas import streams


def default_screener(history: History, policy: Policy | None = None) -> Screener:
    """The layers on by default, cheapest first: structure, patterns, then behaviour (which reads
    and records the token's history in ``history``)."""
    patterns = PatternLayer()
    return Screener(
        layers=(StructureLayer(), patterns),
        behaviour=BehaviourLayer(history, patterns.rules, policy or Policy()),
    )


def create_service(settings: GuardSettings) -> GuardService:
    if not settings.guard_enabled:
        return GuardService(settings, Screener(), GuardMetrics())
    history = KvHistory(settings.guard_history_ttl_s, streams.Policy.of(settings))
    policy = Policy(prompts=settings.guard_history_prompts, repeat_limit=settings.guard_repeat_limit)
    learned = LearnedLayer() if settings.guard_learned else None
    return GuardService(settings, default_screener(history, policy), GuardMetrics(), history, learned)
