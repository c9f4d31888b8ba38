"""The edge's HTTP connections, bounded: how many, and how long each may take to say what it wants.

uvicorn arms no timer until a first response is sent, so a connection that sends nothing, or its
headers a byte at a time, is held for ever, and there is no cap on how many: a few thousand such
sockets, opened without any key, hold the edge's file descriptors and memory. This protocol (the
one uvicorn uses, httptools) adds:

- a cap on open connections: one beyond it is closed at once;
- a header timeout: from the connection's first byte (or from its opening) to the end of a
  request's headers, idle connections included;
- a body timeout: from the end of the headers to the end of the body, extended by what arrives at
  the least rate a body must keep (a 100 MB file upload may take minutes, a trickle may not);
- a write timeout: a client that accepts no byte for that long while the edge has an answer for it
  (its socket buffers full: it does not read) is cut off, which the request sees as a disconnect
  (its generation is cancelled). ``close()`` would wait for the buffer to drain, for ever: abort.

Once the request is whole, the answer may take as long as it needs.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def bounded_protocol(
    *,
    max_connections: int,
    header_timeout_s: float,
    body_timeout_s: float,
    write_timeout_s: float,
    body_min_rate: float = 65536.0,
) -> type:
    """An ``HttpToolsProtocol`` class with these bounds, to pass as uvicorn's ``http``."""

    class Bounded(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _write_timer: asyncio.TimerHandle | None = None
        _body_started = 0.0
        _body_bytes = 0
        _body_deadline = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()
                return
            self._arm(header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._write_timer is not None:
                self._write_timer.cancel()
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(write_timeout_s, self.transport.abort)

        def resume_writing(self) -> None:
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None
            super().resume_writing()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._timer is None:  # a next request on a kept-alive connection
                self._arm(header_timeout_s)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._body_started = self.loop.time()
            self._body_bytes = 0
            self._body_deadline = self._body_started + body_timeout_s
            self._arm(body_timeout_s)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self._body_bytes += len(body)
            deadline = self._body_started + body_timeout_s + self._body_bytes / body_min_rate
            if self._timer is not None and deadline > self._body_deadline + 1.0:  # re-armed once a second
                self._body_deadline = deadline
                self._arm(deadline - self.loop.time())

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def _arm(self, delay_s: float) -> None:
            self._disarm()
            self._timer = self.loop.call_later(delay_s, self._expire)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self) -> None:
            self._timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return Bounded
