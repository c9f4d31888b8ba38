"""POST /v1/chat/completions and POST /v1/completions."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from edge import body, context
from edge.exchange import answer
from edge.jobs import chat_job, completion_job
from edge.keys import caller
from edge.rendering import ChatRenderer, TextRenderer
from edge.routes.docs import json_body, reply
from edge.schemas import ChatCompletionRequest, CompletionRequest

router = APIRouter()


@router.post(
    "/v1/chat/completions",
    summary="Create a chat completion",
    openapi_extra=json_body(ChatCompletionRequest),
    responses=reply("ChatCompletion", streamed="ChatCompletionChunk"),
    response_class=Response,
)
async def create_chat_completion(request: Request) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    req = await body.parse(request, ChatCompletionRequest, edge.settings.max_body_bytes)
    model = context.model_for(request, principal, req.model)
    rid, created = context.request_id(request), int(time.time())
    job = chat_job(req, model, rid, created, caller(principal))
    include_usage = bool(req.stream and req.stream_options and req.stream_options.include_usage)
    renderer = ChatRenderer(rid, model, created, include_usage)
    return await answer(
        request, edge, job, renderer, principal, stream=bool(req.stream), include_usage=include_usage
    )


@router.post(
    "/v1/completions",
    summary="Create a text completion",
    openapi_extra=json_body(CompletionRequest),
    responses=reply("TextCompletion", streamed="TextCompletion"),
    response_class=Response,
)
async def create_completion(request: Request) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    req = await body.parse(request, CompletionRequest, edge.settings.max_body_bytes)
    model = context.model_for(request, principal, req.model)
    rid, created = context.request_id(request), int(time.time())
    job = completion_job(req, model, rid, created, caller(principal))
    include_usage = bool(req.stream and req.stream_options and req.stream_options.include_usage)
    renderer = TextRenderer(rid, model, created, include_usage)
    return await answer(
        request, edge, job, renderer, principal, stream=bool(req.stream), include_usage=include_usage
    )
