"""Runs the edge under uvicorn (uvloop + httptools) until SIGINT/SIGTERM, over HTTPS when given a
certificate: TLS 1.3 only, a client offering 1.2 or below is refused at the handshake.

On SIGTERM the edge stops accepting connections, lets the answers in progress finish for
``drain_s``, then ends the rest with an error event their clients receive, and only then closes
(uvicorn alone would cut them after its own grace period, without a word)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import uvicorn

from edge.app import create_app
from edge.connections import bounded_protocol
from edge.context import EdgeContext
from edge.settings import EdgeSettings
from llmaas import tls


class _Draining(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections while the old ones finish
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their answer
        await self._drain()
        await super().shutdown(sockets)


def serve(settings: EdgeSettings) -> None:
    app = create_app(settings)
    edge: EdgeContext = app.state.edge
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=bounded_protocol(
            max_connections=settings.max_connections,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            body_min_rate=settings.body_min_rate,
            write_timeout_s=settings.stream_write_timeout_s,
        ),
        lifespan="on",
        access_log=False,
        log_config=None,  # keep our one-line format (llmaas.logs)
        log_level=settings.log_level.lower(),
        # After the drain: what is left is a connection whose client stopped reading.
        timeout_graceful_shutdown=2,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = tls.MINIMUM

    async def drain() -> None:
        edge.batches.pause()  # no new batch lines; those running end with the rest (run again elsewhere)
        await edge.pipeline.drain(settings.drain_s)

    _Draining(config, drain).run()
