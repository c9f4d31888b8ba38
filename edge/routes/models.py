"""GET /v1/models and GET /v1/models/{id}: the models live workers serve right now."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from edge import context
from edge import responses as r
from edge.routes.docs import reply
from llmaas.errors import NotFound

router = APIRouter()

OWNER = "llmaas"


def _served(request: Request) -> dict[str, float]:
    return context.of(request).pipeline.fleet.models(time.monotonic())


@router.get("/v1/models", summary="List models", responses=reply("ModelList"), response_class=Response)
async def list_models(request: Request) -> Response:
    """The models served right now that the caller's key may use."""
    principal = await context.of(request).gate.authenticate(request)
    served = _served(request)
    allowed = sorted(name for name in served if principal.key.allows(name))
    data = [r.Model(id=name, created=int(served[name]), owned_by=OWNER) for name in allowed]
    return Response(r.encode(r.ModelList(data=data)), media_type="application/json")


@router.get(
    "/v1/models/{model_id:path}",
    summary="Retrieve a model",
    responses=reply("Model"),
    response_class=Response,
)
async def retrieve_model(request: Request, model_id: str) -> Response:
    principal = await context.of(request).gate.authenticate(request)
    served = _served(request)
    if model_id not in served or not principal.key.allows(model_id):
        raise NotFound(f"The model '{model_id}' does not exist", param="model", code="model_not_found")
    model = r.Model(id=model_id, created=int(served[model_id]), owned_by=OWNER)
    return Response(r.encode(model), media_type="application/json")
