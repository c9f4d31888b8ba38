"""One way to connect to NATS: reconnect forever, log state changes once, never crash on an outage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

log = logging.getLogger(__name__)


def redact(url: str) -> str:
    """The URL without user or password, for logs and errors."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


async def connect(
    url: str,
    name: str,
    on_down: Callable[[], Awaitable[None]] | None = None,
    on_up: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """Connect to ``url``, retrying forever (also for the first connection).

    The returned client reconnects by itself after an outage and buffers nothing on purpose:
    callers check ``is_connected`` before publishing work they cannot afford to lose.
    ``on_down`` runs once each time an established connection is lost, ``on_up`` when it is back.
    """
    shown = redact(url)
    state = {"down": False}
    closing: dict[str, Client | None] = {"client": None}

    async def on_error(exc: Exception) -> None:
        # nats-py reports every failed reconnect attempt; say it once per outage, not every 0.5 s.
        if not state["down"]:
            log.warning("NATS %s unreachable (%s); retrying", shown, type(exc).__name__)
            state["down"] = True

    async def on_disconnected() -> None:
        if closing["client"] is not None and (closing["client"].is_closed or closing["client"].is_draining):
            return  # we are closing on purpose
        if not state["down"]:
            log.warning("NATS %s disconnected; reconnecting", shown)
            state["down"] = True
        if on_down is not None:
            await on_down()

    async def on_reconnected() -> None:
        log.info("NATS %s reconnected", shown)
        state["down"] = False
        if on_up is not None:
            await on_up()

    client = await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        ping_interval=5,
        max_outstanding_pings=2,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        # Every subject is built by llmaas.subjects from checked tokens (or is a reply subject the
        # server handed us), so nats-py's per-publish regex check is pure overhead on the hot path.
        skip_subject_validation=True,
    )
    closing["client"] = client
    state["down"] = False
    log.info("connected to NATS %s as %s", shown, name)
    return client


async def close(client: Client, timeout_s: float = 5.0) -> None:
    """Drain (deliver what is buffered, finish callbacks) when connected, else just close."""
    if client.is_closed:
        return
    if client.is_connected:
        try:
            await asyncio.wait_for(client.drain(), timeout_s)
            return
        except (TimeoutError, NatsError) as exc:
            log.warning("NATS drain incomplete (%s); closing", type(exc).__name__)
    await client.close()
