"""Filters: the workers a request may go to at all."""

from __future__ import annotations

from collections.abc import Callable

from llmaas.fleet import WorkerView
from workers.scheduler.placement.request import Ask

Filter = Callable[[Ask, WorkerView], bool]


def serves_model(ask: Ask, worker: WorkerView) -> bool:
    return ask.model in worker.models


def accepting(ask: Ask, worker: WorkerView) -> bool:
    """A worker that announced it is leaving takes no new work."""
    return not worker.leaving


FILTERS: tuple[Filter, ...] = (serves_model, accepting)
