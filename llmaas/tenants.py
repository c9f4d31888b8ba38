"""Tenants and their API keys as stored records, and the keys' secret format.

A key is ``sk-llmaas-<id>_<secret>``: the 12-hex ``id`` is public (logs, audit, metering) and finds the
record in one lookup; the 256-bit ``secret`` is shown once at creation and stored only as its SHA-256
(a plain hash suffices: the secret is random and long, so it cannot be guessed from the hash).
Records are JSON in NATS KV, written by the admin API and read by every edge from a watched copy.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from fnmatch import fnmatchcase
from typing import Literal

import msgspec

KEY_PREFIX = "sk-llmaas-"
ADMIN_PREFIX = "llmaas-admin-"
_ID_HEX = 12
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class Tenant(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    tier: str
    created_at: float
    guard_enabled: bool = True
    """Only an administrator may switch the prompt guard off for a tenant (and it is audited)."""


KeyState = Literal["active", "revoked"]


class ApiKey(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    tenant: str
    name: str
    secret_sha256: str
    created_at: float
    models: list[str] = []
    """Exact names or shell-style patterns (``qwen3:*``); empty means every model."""
    expires_at: float | None = None
    state: KeyState = "active"
    rotate_every_s: float | None = None
    successor: str | None = None
    """Set when the key was rotated; the key then expires at the end of the grace period."""
    predecessor: str | None = None

    def usable_at(self, now: float) -> bool:
        return self.state == "active" and (self.expires_at is None or now < self.expires_at)

    def allows(self, model: str) -> bool:
        return not self.models or any(fnmatchcase(model, pattern) for pattern in self.models)


def check_name(name: str) -> str:
    """Tenant names become NATS subject tokens and ClickHouse values: keep them plain."""
    if not _NAME.match(name):
        raise ValueError(
            f"invalid tenant name {name!r}: use 1-63 of a-z, 0-9, '-' and '_', "
            "starting with a letter or digit"
        )
    return name


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_key() -> tuple[str, str, str]:
    """A new key: (id, the full key to show once, the digest to store)."""
    key_id = secrets.token_hex(_ID_HEX // 2)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", digest(secret)


def parse_key(presented: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None; says nothing about whether it is valid."""
    if not presented.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = presented[len(KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != _ID_HEX or not secret or len(secret) > 128:
        return None
    return key_id, secret


def matches(secret: str, stored_digest: str) -> bool:
    """Constant-time comparison of a presented secret with a stored digest."""
    return bool(_DIGEST.match(stored_digest)) and hmac.compare_digest(digest(secret), stored_digest)


def mint_admin_token() -> str:
    return ADMIN_PREFIX + secrets.token_urlsafe(32)


def public_id(presented: str) -> str:
    """What of a presented key may appear in logs and audit events: its id, never the secret."""
    parsed = parse_key(presented)
    return parsed[0] if parsed else "malformed"
