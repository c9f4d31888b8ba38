"""The Batches API, as OpenAI's: create (over an uploaded ``purpose=batch`` file), retrieve, list
(newest first, ``after``/``limit``), cancel. The engine is the edge's own (``edge/batches.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edge import body, context, pages
from llmaas.errors import NotFound

router = APIRouter()


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_file_id: str = Field(max_length=64)
    endpoint: str = Field(max_length=64)
    completion_window: str = Field(max_length=16)
    metadata: dict[str, str] | None = None
    output_expires_after: dict[str, Any] | None = None
    """Accepted as OpenAI's SDKs send it; result files here expire after 7 days."""


@router.post("/v1/batches", summary="Create a batch over an uploaded input file")
async def create_batch(request: Request) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    req = await body.parse(request, CreateBatch, edge.settings.max_body_bytes)
    record = await edge.batches.create(
        principal,
        input_file_id=req.input_file_id,
        endpoint=req.endpoint,
        completion_window=req.completion_window,
        metadata=req.metadata,
    )
    return JSONResponse(record.to_openai())


@router.get("/v1/batches/{batch_id}", summary="One batch, with its progress")
async def retrieve_batch(request: Request, batch_id: str) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    record = await edge.batches.get(principal.tenant.name, batch_id)
    if record is None:
        raise NotFound(f"No such Batch object: {batch_id[:64]}", param="batch_id")
    return JSONResponse(record.to_openai())


@router.get("/v1/batches", summary="The tenant's batches, newest first (after, limit)")
async def list_batches(request: Request) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    limit = pages.limit(request.query_params.get("limit", "20"), 100)
    found = edge.batches.of_tenant(principal.tenant.name)
    after = request.query_params.get("after")
    return JSONResponse(pages.page(found, after, limit, what="batch", ids_always=False))


@router.post("/v1/batches/{batch_id}/cancel", summary="Cancel a batch (cancelling, then cancelled)")
async def cancel_batch(request: Request, batch_id: str) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    return JSONResponse((await edge.batches.cancel(principal.tenant.name, batch_id)).to_openai())
