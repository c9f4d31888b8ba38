"""Console sessions: opaque ids in an HttpOnly cookie, their state in a NATS KV bucket.

The browser holds only a random id (256 bits); the bucket holds, under the SHA-256 of that id, who
signed in (a tenant's key id, or the operator), the session's CSRF token and its expiry. Every edge
reads the same bucket, so a session works behind any edge and a logout on one revokes it on all:
each page looks the session up (one KV read, ~1 ms), nothing is cached. Neither the key nor the
admin token is ever stored: a leaked bucket gives no credential, and no session id either.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Literal

import msgspec
from nats.aio.client import Client
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from llmaas import streams


class Session(msgspec.Struct, frozen=True, kw_only=True):
    role: Literal["tenant", "operator"]
    tenant: str | None
    """The tenant a tenant's session sees; None for the operator (every tenant)."""
    key_id: str
    """The key that signed in (``admin`` for the operator): the audit trail's actor."""
    csrf: str
    """The token every state-changing form of this session carries."""
    expires_at: float


_decoder = msgspec.json.Decoder(Session)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = min(lifetime_s, streams.CONSOLE_SESSIONS.ttl_s or lifetime_s)
        self._kv: KeyValue | None = None

    async def open(self, nc: Client, policy: streams.Policy) -> None:
        self._kv = await streams.ensure_bucket(nc.jetstream(), streams.CONSOLE_SESSIONS, policy)

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("Sessions.open was not called")
        return self._kv

    async def create(
        self, role: Literal["tenant", "operator"], tenant: str | None, key_id: str
    ) -> tuple[str, Session]:
        """A new session and its id (for the cookie; not kept anywhere)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(
            role=role,
            tenant=tenant,
            key_id=key_id,
            csrf=secrets.token_urlsafe(32),
            expires_at=time.time() + self.lifetime_s,
        )
        await self.kv.put(_digest(session_id), msgspec.json.encode(session))
        return session_id, session

    async def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id``; None if unknown, expired or revoked."""
        if not session_id or len(session_id) > 128:
            return None
        try:
            entry = await self.kv.get(_digest(session_id))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if not entry.value:
            return None
        session = _decoder.decode(entry.value)
        return session if session.expires_at > time.time() else None

    async def revoke(self, session_id: str) -> None:
        await self.kv.delete(_digest(session_id))
