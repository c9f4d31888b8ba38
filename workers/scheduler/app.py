"""Builds a scheduler service from its settings (no work at import)."""

from __future__ import annotations

from workers.scheduler.metrics import SchedulerMetrics
from workers.scheduler.service import SchedulerService
from workers.scheduler.settings import SchedulerSettings


def create_service(settings: SchedulerSettings) -> SchedulerService:
    return SchedulerService(settings, SchedulerMetrics())
