"""Builds the edge's ASGI application (``create_app(settings)``; no work at import)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from nats.aio.client import Client
from pydantic.json_schema import models_json_schema

import llmaas
from edge import errors, lifecycle, responses
from edge.batches import BatchEngine
from edge.console import routes as console
from edge.console.alerting import AlertBook
from edge.console.sessions import Sessions
from edge.context import EdgeContext
from edge.door import Door
from edge.gate import Gate
from edge.metrics import EdgeMetrics
from edge.middleware import Envelope
from edge.pipeline import Pipeline
from edge.routes import admin, batches, embeddings, files, generation, keys, models, ops, usage
from edge.routes.docs import REF, response_schemas
from edge.schemas import REQUEST_MODELS
from edge.settings import EdgeSettings
from edge.uploads import FileDesk
from llmaas import usage as usage_events

RESPONSE_TYPES: list[type[msgspec.Struct]] = [
    responses.ChatCompletion,
    responses.ChatCompletionChunk,
    responses.TextCompletion,
    responses.EmbeddingList,
    responses.ModelList,
    responses.Model,
    responses.ErrorEnvelope,
]


def create_app(settings: EdgeSettings) -> FastAPI:
    metrics = EdgeMetrics()
    edge_id = secrets.token_hex(6)
    gate = Gate(settings, edge_id)
    metrics.registry.register(lifecycle.CatalogCollector(gate.catalog))

    async def on_reconnect() -> None:
        gate.directory.resync()

    outbox = usage_events.outbox(on_lost=metrics.usage_lost.inc)
    metrics.usage_queued.set_function(lambda: outbox.queued)

    desk = FileDesk(settings)
    sessions = Sessions(settings.console_session_s)
    alert_book = AlertBook()
    engine: BatchEngine | None = None

    async def attach(nc: Client) -> None:
        assert engine is not None
        await asyncio.gather(
            gate.open(nc),
            outbox.open(nc, gate.streams),
            desk.open(nc),
            engine.open(nc),
            sessions.open(nc, gate.streams),
            alert_book.open(nc, gate.streams),
        )

    pipeline = Pipeline(settings, metrics, edge_id=edge_id, attach=attach, on_up=on_reconnect)
    gate.models.fleet = pipeline.fleet
    engine = BatchEngine(
        edge_id=edge_id, settings=settings, gate=gate, pipeline=pipeline, desk=desk, metrics=metrics
    )
    door = (
        Door(settings=settings, gate=gate, engine=engine, desk=desk, metrics=metrics)
        if settings.door_url is not None
        else None
    )
    edge = EdgeContext(
        settings=settings,
        metrics=metrics,
        pipeline=pipeline,
        gate=gate,
        outbox=outbox,
        files=desk,
        batches=engine,
        sessions=sessions,
        alerts=alert_book,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await edge.pipeline.start()
        # Served once authentication can answer (no "starting up" 503 after a restart), unless NATS
        # takes longer: then the edge serves and says so (503, /health) until it is there.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(edge.gate.opened.wait(), settings.startup_wait_s)
        # The door's server may come later than the bus: connected in the background, retried.
        opening = asyncio.create_task(door.open()) if door is not None else None
        yield
        if opening is not None and door is not None:
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opening
            await door.close()
        await engine.close()
        await outbox.close()
        await edge.gate.close()
        await edge.pipeline.stop()

    app = FastAPI(
        title="LLMaaS",
        version=llmaas.__version__,
        summary="OpenAI-compatible API of a sovereign LLM-as-a-service platform",
        lifespan=lifespan,
        # Starlette's redirect to the slash-less path is built from the Host header the caller sent.
        redirect_slashes=False,
    )
    app.state.edge = edge
    for module in (generation, embeddings, models, keys, ops, admin, usage, files, batches, console):
        app.include_router(module.router)
    errors.install(app)
    app.add_middleware(Envelope, metrics=metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            _, requests = models_json_schema([(m, "validation") for m in REQUEST_MODELS], ref_template=REF)
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(requests.get("$defs", {}))
            schemas.update(response_schemas(RESPONSE_TYPES))
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
