"""Runs one service in its own process: uvloop, signal handling, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Protocol

import uvloop

log = logging.getLogger(__name__)


class Service(Protocol):
    """A long-running component: ``start`` returns once it serves, ``stop`` drains and returns."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until_signalled(service: Service) -> int:
    """Serve until a signal, or until the service sets its ``failed`` event (if it has one)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    # A service that cannot go on by itself (a worker whose engine died) sets ``failed``: the process
    # then stops cleanly and exits non-zero, so that its supervisor restarts it.
    failed: asyncio.Event | None = getattr(service, "failed", None)
    waits = [asyncio.ensure_future(stop.wait())]
    if failed is not None:
        waits.append(asyncio.ensure_future(failed.wait()))
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    log.info("stopping")
    await service.stop()
    return 1 if failed is not None and failed.is_set() else 0


def run(service: Service) -> None:
    """Block running ``service`` until SIGINT or SIGTERM; exit 1 if the service failed by itself."""
    if uvloop.run(serve_until_signalled(service)):
        sys.exit(1)
