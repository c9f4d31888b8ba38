"""Runs the edge under uvicorn (uvloop + httptools) until SIGINT/SIGTERM."""

from __future__ import annotations

import uvicorn

from edge.app import create_app
from edge.connections import bounded_protocol
from edge.settings import EdgeSettings


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
    )
    uvicorn.Server(config).run()
