"""One way to connect to NATS: reconnect forever, log state changes once, never crash on an outage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from llmaas import identities, tls
from llmaas.settings import ServiceSettings

log = logging.getLogger(__name__)


def servers(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222``: the nodes of a cluster, tried in turn (one URL is one node)."""
    found = [part.strip() for part in url.split(",") if part.strip()]
    if not found:
        raise ValueError("no NATS URL given")
    return found


def redact(url: str) -> str:
    """The URL(s) without user or password, for logs and errors."""
    if "," in url:
        return ",".join(redact(one) for one in servers(url))
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
    *,
    on_down: Callable[[], Awaitable[None]] | None = None,
    on_up: Callable[[], Awaitable[None]] | None = None,
    credentials: Path | None = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> Client:
    """Connect to ``url``, retrying forever (also for the first connection).

    The returned client reconnects by itself after an outage and buffers nothing on purpose:
    callers check ``is_connected`` before publishing work they cannot afford to lose.
    ``on_down`` runs once each time an established connection is lost, ``on_up`` when it is back.
    ``credentials``: the seed file of this service's NATS identity (llmaas.identities); ``tls_ca``:
    the CA that signed the servers' certificates (TLS 1.3; a ``tls://`` URL without it trusts the
    system's CAs); ``tls_cert``/``tls_key``: what it presents when the server asks (mutual TLS).
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

    nodes = servers(url)
    identity: dict[str, Any] = {}
    if credentials is not None:
        # Read once: nats-py would read a seed file again at each reconnection, after a service
        # that gave up root (llmaas.privileges) may no longer read it.
        seed, key = identities.load(credentials)
        identity = {"nkeys_seed_str": seed, "inbox_prefix": identities.inbox_prefix(key)}
    if tls_ca is not None or any(u.startswith("tls://") for u in nodes):
        identity["tls"] = tls.client_context(tls_ca, tls_cert, tls_key)
    client = await nats.connect(
        nodes,
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
        **identity,
    )
    closing["client"] = client
    state["down"] = False
    log.info("connected to NATS %s as %s", shown, name)
    return client


async def connect_as(
    settings: ServiceSettings,
    name: str,
    on_down: Callable[[], Awaitable[None]] | None = None,
    on_up: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """``connect`` with a service's settings: its URLs, its identity, the CA it trusts."""
    return await connect(
        settings.nats_url,
        name,
        on_down=on_down,
        on_up=on_up,
        credentials=settings.nats_credentials,
        tls_ca=settings.nats_tls_ca,
        tls_cert=settings.nats_tls_cert,
        tls_key=settings.nats_tls_key,
    )


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
