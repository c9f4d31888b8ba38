"""GET /v1/models and GET /v1/models/{id}: the models live workers serve right now, that the caller's
key may use, with the catalog's lifecycle (state, kind, context length, DMP, DSP, successor).
A retired model is not shown, unless it was reactivated for the caller's tenant."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from edge import context, lifecycle
from edge import responses as r
from edge.context import EdgeContext
from edge.keys import Principal
from edge.routes.docs import reply
from llmaas import catalog
from llmaas.errors import NotFound

router = APIRouter()

OWNER = "llmaas"


def _served(request: Request) -> dict[str, float]:
    return context.of(request).pipeline.fleet.models(time.monotonic())


def _visible(edge: EdgeContext, principal: Principal, served: dict[str, float]) -> dict[str, r.Model]:
    day = catalog.today()
    shown: dict[str, r.Model] = {}
    for name, since in served.items():
        if not principal.key.allows(name):
            continue
        model = edge.gate.catalog.get(name)
        if model is None:  # not in the catalog: served as it is, without a lifecycle
            shown[name] = r.Model(id=name, object="model", created=int(since), owned_by=OWNER)
            continue
        state = model.state(day)
        if lifecycle.withheld(model, state, principal.tenant):
            continue
        shown[name] = r.Model(
            object="model",
            id=name,
            created=int(since),
            owned_by=OWNER,
            state=state,
            kind=model.kind,
            context_length=model.context_length,
            dmp=model.dmp.isoformat() if model.dmp else None,
            dsp=model.dsp.isoformat() if model.dsp else None,
            successor=model.successor,
            publisher=model.publisher,
        )
    return shown


@router.get("/v1/models", summary="List models", responses=reply("ModelList"), response_class=Response)
async def list_models(request: Request) -> Response:
    """The models served right now that the caller's key may use."""
    edge = context.of(request)
    principal = await context.authenticated(request)
    shown = _visible(edge, principal, _served(request))
    data = [shown[name] for name in sorted(shown)]
    return Response(r.encode(r.ModelList(data=data)), media_type="application/json")


@router.get(
    "/v1/models/{model_id:path}",
    summary="Retrieve a model",
    responses=reply("Model"),
    response_class=Response,
)
async def retrieve_model(request: Request, model_id: str) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    shown = _visible(edge, principal, _served(request))
    if model_id not in shown:
        raise NotFound(f"The model '{model_id}' does not exist", param="model", code="model_not_found")
    return Response(r.encode(shown[model_id]), media_type="application/json")
