"""Builds a guard service from its settings (no work at import)."""

from __future__ import annotations

from guard.metrics import GuardMetrics
from guard.screening import Screener
from guard.service import GuardService
from guard.settings import GuardSettings


def create_service(settings: GuardSettings) -> GuardService:
    return GuardService(settings, Screener(), GuardMetrics())
