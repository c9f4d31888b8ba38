"""Serves a service's own Prometheus registry over HTTP (the edge serves it on its /metrics route)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


def expose(registry: CollectorRegistry, host: str, port: int) -> None:
    """Start a background HTTP thread for ``registry`` on ``port``; 0 means metrics are not exposed."""
    if port == 0:
        return
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
