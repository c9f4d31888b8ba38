"""What every route needs from the running edge: its settings, metrics, pipeline and gate."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from edge.gate import Gate
from edge.metrics import EdgeMetrics
from edge.pipeline import Pipeline
from edge.settings import EdgeSettings


@dataclass(frozen=True)
class EdgeContext:
    settings: EdgeSettings
    metrics: EdgeMetrics
    pipeline: Pipeline
    gate: Gate


def of(request: Request) -> EdgeContext:
    edge: EdgeContext = request.app.state.edge
    return edge


def request_id(request: Request) -> str:
    rid: str = request.scope["state"]["request_id"]
    return rid
