"""POST /v1/embeddings, through the same pipeline as generation."""

from __future__ import annotations

import base64
import time
from array import array

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from edge import body, context
from edge import responses as r
from edge.gate import caller
from edge.jobs import embed_job
from edge.routes.docs import json_body, reply
from edge.schemas import EmbeddingRequest
from llmaas.errors import RemoteError, ServerError
from llmaas.wire import Accepted, Embeddings, Failed, Frame

router = APIRouter()


def _as_base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32 values."""
    values = array("f", vector)
    if values.itemsize != 4:  # pragma: no cover - every platform we run on has 4-byte floats
        raise ServerError("float32 encoding unavailable")
    return base64.b64encode(values.tobytes()).decode()


def _expect_result(frame: Frame) -> Embeddings:
    if isinstance(frame, Failed):
        raise RemoteError(frame.error)
    if not isinstance(frame, Embeddings):
        raise ServerError("A worker sent frames out of order.")
    return frame


@router.post(
    "/v1/embeddings",
    summary="Create embeddings",
    openapi_extra=json_body(EmbeddingRequest),
    responses=reply("EmbeddingList"),
    response_class=Response,
)
async def create_embeddings(request: Request) -> Response:
    edge = context.of(request)
    principal = await edge.gate.authenticate(request)
    req = await body.parse(request, EmbeddingRequest, edge.settings.max_body_bytes)
    model = edge.gate.check_model(request, principal, req.model)
    rid = context.request_id(request)
    job = embed_job(req, model, rid, int(time.time()), caller(principal))
    tally = edge.tally(job)
    result: Embeddings | None = None
    try:
        tally.grant = await edge.gate.admit(request, principal, 0)
        frames = await edge.pipeline.submit(job)
        watcher = tally.watch_client(request, edge.pipeline.cancel)
        try:
            first = await frames.next()
            if type(first) is not Accepted:
                _expect_result(first)
            else:
                tally.worker = first.worker_id
            result = _expect_result(await frames.next())
            tally.usage = result.usage
        finally:
            watcher.cancel()
            edge.pipeline.finish(rid)
    except BaseException as exc:
        tally.failed(exc)
        raise
    finally:
        tally.close()
    edge.metrics.tokens.labels(model, "prompt").inc(result.usage.prompt_tokens)
    encode_b64 = req.encoding_format == "base64"
    data = [
        r.Embedding(index=i, embedding=_as_base64(v) if encode_b64 else v)
        for i, v in enumerate(result.vectors)
    ]
    tokens = result.usage.prompt_tokens
    body_out = r.EmbeddingList(
        data=data, model=model, usage=r.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )
    return Response(r.encode(body_out), media_type="application/json")
