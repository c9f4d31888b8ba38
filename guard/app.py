"""Builds a guard service from its settings (no work at import)."""

from __future__ import annotations

from guard.layers.patterns import PatternLayer
from guard.layers.structure import StructureLayer
from guard.metrics import GuardMetrics
from guard.screening import Screener
from guard.service import GuardService
from guard.settings import GuardSettings


def default_screener() -> Screener:
    """The layers on by default, cheapest first: structure, then patterns."""
    return Screener(layers=(StructureLayer(), PatternLayer()))


def create_service(settings: GuardSettings) -> GuardService:
    screener = default_screener() if settings.guard_enabled else Screener()
    return GuardService(settings, screener, GuardMetrics())
