"""Logging setup for every process: one line per event, component name first."""

from __future__ import annotations

import logging
import sys


def setup(component: str, level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # nats-py logs every reconnect attempt with a traceback; our own callbacks say it once.
    logging.getLogger("nats.aio.client").setLevel(logging.CRITICAL)
