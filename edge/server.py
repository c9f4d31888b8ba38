"""Runs the edge under uvicorn (uvloop + httptools) until SIGINT/SIGTERM, over HTTPS when given a
certificate: TLS 1.3 only, a client offering 1.2 or below is refused at the handshake."""

from __future__ import annotations

import uvicorn

from edge.app import create_app
from edge.connections import bounded_protocol
from edge.settings import EdgeSettings
from llmaas import tls


def serve(settings: EdgeSettings) -> None:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=bounded_protocol(
            max_connections=settings.max_connections,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            write_timeout_s=settings.stream_write_timeout_s,
        ),
        lifespan="on",
        access_log=False,
        log_config=None,  # keep our one-line format (llmaas.logs)
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = tls.MINIMUM
    uvicorn.Server(config).run()
