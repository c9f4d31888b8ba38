"""The per-request envelope (pure ASGI): an ``x-request-id`` on every response, and HTTP metrics."""

from __future__ import annotations

import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.metrics import EdgeMetrics

_ROUTES = {
    "/v1/chat/completions": "/v1/chat/completions",
    "/v1/completions": "/v1/completions",
    "/v1/embeddings": "/v1/embeddings",
    "/v1/models": "/v1/models",
    "/v1/keys/current": "/v1/keys/current",
    "/health": "/health",
    "/metrics": "/metrics",
}


def route_label(path: str) -> str:
    """A bounded label for metrics: known routes by template, everything else as ``other``."""
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return _ROUTES.get(path, "other")


class Envelope:
    def __init__(self, app: ASGIApp, metrics: EdgeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        route = route_label(scope["path"])
        started = time.perf_counter()
        status = 500

        async def send_enveloped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header, *state.get("headers", ())]
            await send(message)

        in_flight = self.metrics.in_flight.labels(route)
        in_flight.inc()
        try:
            await self.app(scope, receive, send_enveloped)
        finally:
            in_flight.dec()
            self.metrics.requests.labels(route, f"{status // 100}xx").inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - started)
