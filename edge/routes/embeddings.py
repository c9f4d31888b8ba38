"""POST /v1/embeddings, through the same pipeline as generation."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from edge import body, context, rendering
from edge.exchange import Exchange
from edge.jobs import embed_job
from edge.keys import caller
from edge.routes.docs import json_body, reply
from edge.schemas import EmbeddingRequest

router = APIRouter()


@router.post(
    "/v1/embeddings",
    summary="Create embeddings",
    openapi_extra=json_body(EmbeddingRequest),
    responses=reply("EmbeddingList"),
    response_class=Response,
)
async def create_embeddings(request: Request) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    req = await body.parse(request, EmbeddingRequest, edge.settings.max_body_bytes)
    model = context.model_for(request, principal, req.model)
    rid = context.request_id(request)
    job = embed_job(req, model, rid, int(time.time()), caller(principal))
    exchange = Exchange(request, edge, job, principal)
    frames = await exchange.start(0)
    try:
        result = rendering.embeddings_of(await frames.next())
    except BaseException as exc:
        exchange.end(exc)
        raise
    exchange.tally.usage = result.usage
    await exchange.settle()
    edge.metrics.tokens.labels(model, "prompt").inc(result.usage.prompt_tokens)
    return Response(
        rendering.embedding_list(result, model, req.encoding_format), media_type="application/json"
    )
