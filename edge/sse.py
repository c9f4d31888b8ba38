"""A lean ASGI response for Server-Sent Events: writes each batch of events as one body chunk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def wait_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    """Call ``on_disconnect`` when the client goes away (the body must already be read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


class EventStreamResponse(Response):
    """Streams ``events`` (already framed as ``data: ...\\n\\n``); ``watcher`` is stopped at the end."""

    def __init__(self, events: AsyncIterator[bytes], watcher: asyncio.Task[None]) -> None:
        self.events = events
        self.watcher = watcher
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": list(_HEADERS)})
            async for chunk in self.events:
                if self.watcher.done():
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client closed the socket under us; the watcher reports it
        finally:
            self.watcher.cancel()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
