"""Renders every error as OpenAI does: ``{"error": {message, type, param, code}}`` with its status."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from edge import responses
from llmaas.errors import LlmaasError

log = logging.getLogger(__name__)


def error_body(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    return responses.encode(
        responses.ErrorEnvelope(
            error=responses.ErrorBody(message=message, type=type_, param=param, code=code)
        )
    )


def render(exc: LlmaasError) -> Response:
    headers = {}
    if exc.retry_after_s is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after_s)))
    if exc.retryable is False:
        headers["x-should-retry"] = "false"
    for name, value in exc.headers:
        headers[name.decode()] = value.decode()
    return Response(
        error_body(exc.message, exc.type, exc.param, exc.code),
        status_code=exc.status,
        headers=headers,
        media_type="application/json",
    )


async def _on_llmaas_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LlmaasError)
    request.app.state.edge.metrics.errors.labels(exc.code or exc.type).inc()
    return render(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"Unknown request URL: {request.method} {request.url.path}. Please check the URL for typos."
        code = "unknown_url"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
        code = "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    return Response(
        error_body(message, "invalid_request_error", None, code),
        status_code=exc.status_code,
        media_type="application/json",
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Details go to the log only: an error body must never leak internals (or secrets).
    rid = request.scope.get("state", {}).get("request_id", "-")
    log.exception("unhandled error on %s %s (request %s)", request.method, request.url.path, rid)
    request.app.state.edge.metrics.errors.labels("internal_error").inc()
    return Response(
        error_body(
            "The server had an error while processing your request.", "server_error", None, "internal_error"
        ),
        status_code=500,
        media_type="application/json",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(LlmaasError, _on_llmaas_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
