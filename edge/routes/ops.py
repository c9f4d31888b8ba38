"""GET /health and GET /metrics, for load balancers and Prometheus."""

from __future__ import annotations

import time

import msgspec
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from edge import context

router = APIRouter()


class Health(msgspec.Struct, kw_only=True):
    status: str
    nats: str
    directory: str
    workers: int
    models: list[str]


@router.get("/health", summary="Health of this edge", response_class=Response)
async def health(request: Request) -> Response:
    """200 while this edge can reach NATS and has loaded its tenant directory (so it can serve)."""
    edge = context.of(request)
    pipeline = edge.pipeline
    now = time.monotonic()
    ok = pipeline.connected and edge.gate.ready
    body = Health(
        status="ok" if ok else "unavailable",
        nats="connected" if pipeline.connected else "disconnected",
        directory="loaded" if edge.gate.ready else "loading",
        workers=len(pipeline.fleet.snapshot(now)),
        models=sorted(pipeline.fleet.models(now)),
    )
    return Response(msgspec.json.encode(body), status_code=200 if ok else 503, media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry = context.of(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
