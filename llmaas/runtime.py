"""Runs one service in its own process: uvloop, signal handling, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

import uvloop

log = logging.getLogger(__name__)


class Service(Protocol):
    """A long-running component: ``start`` returns once it serves, ``stop`` drains and returns."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until_signalled(service: Service) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    await stop.wait()
    log.info("stopping")
    await service.stop()


def run(service: Service) -> None:
    """Block running ``service`` until SIGINT or SIGTERM."""
    uvloop.run(serve_until_signalled(service))
