"""Tenants and their API keys as stored records, and the keys' secret format.

A key is ``sk-llmaas-<id>_<secret>``: the 12-hex ``id`` is public (logs, audit, metering) and finds the
record in one lookup; the 256-bit ``secret`` is shown once at creation and stored only as its SHA-256
(a plain hash suffices: the secret is random and long, so it cannot be guessed from the hash).
Records are JSON in NATS KV, written by the admin API and read by every edge from a watched copy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from fnmatch import fnmatchcase
from typing import Literal

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_PREFIX = "sk-llmaas-"
DEFAULT_GRACE_S = 24 * 3600.0
ADMIN_PREFIX = "llmaas-admin-"
_ID_HEX = 12
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(rf"^[0-9a-f]{{{_ID_HEX}}}$")


class Tenant(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    tier: str
    created_at: float
    guard_enabled: bool = True
    """Only an administrator may switch the prompt guard off for a tenant (and it is audited)."""
    guard_threshold: float | None = None
    """The guard's learned-layer threshold for this tenant (None: the deployment's); set by an
    administrator, audited: how a false positive a customer reports is let through."""
    reactivated: list[str] = []
    """Retired catalog models an administrator re-enabled for this tenant (audited)."""


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
    """Rotate automatically at this age: the first request after it creates the successor."""
    grace_s: float = DEFAULT_GRACE_S
    """How long the key keeps working once rotated."""
    successor: str | None = None
    """Set when the key was rotated; the key then expires at the end of the grace period."""
    predecessor: str | None = None
    sealed_successor: str | None = None
    """An automatic rotation's new key, encrypted under this key's own secret (``seal_successor``):
    only a holder of this key can read it, and the platform never stores it in the clear."""

    def rotation_due(self, now: float) -> bool:
        return self.rotate_every_s is not None and not self.successor and now >= self.rotation_at()

    def rotation_at(self) -> float:
        return self.created_at + (self.rotate_every_s or 0.0)

    def usable_at(self, now: float) -> bool:
        if self.state != "active" or (self.expires_at is not None and now >= self.expires_at):
            return False
        # A key due for rotation that nobody used since: its grace runs from the moment it was due.
        return not (self.rotate_every_s and not self.successor and now >= self.rotation_at() + self.grace_s)

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
    # The id must look like one we mint: it is used as a KV key, where "." or "*" would not be a
    # wrong key (401) but an invalid lookup.
    if not sep or not _KEY_ID.match(key_id) or not secret or len(secret) > 128:
        return None
    return key_id, secret


def matches(secret: str, stored_digest: str) -> bool:
    """Constant-time comparison of a presented secret with a stored digest."""
    return bool(_DIGEST.match(stored_digest)) and hmac.compare_digest(digest(secret), stored_digest)


ADMIN_TOKEN_MIN_LENGTH = 32


def admin_token_weakness(token: str) -> str | None:
    """Why ``token`` is too weak to guard the admin API, or None. The admin token is the one secret
    an operator may choose; a short or repetitive one could be guessed even at a throttled rate."""
    if len(token) < ADMIN_TOKEN_MIN_LENGTH:
        return f"it has {len(token)} characters, fewer than {ADMIN_TOKEN_MIN_LENGTH}"
    if len(set(token)) < 12:
        return "it repeats too few different characters"
    return None


def mint_admin_token() -> str:
    return ADMIN_PREFIX + secrets.token_urlsafe(32)


def public_id(presented: str) -> str:
    """What of a presented key may appear in logs and audit events: its id, never the secret."""
    parsed = parse_key(presented)
    return parsed[0] if parsed else "malformed"


def _cipher(secret: str) -> AESGCM:
    # A key of its own for each secret, derived with HKDF: the secret is random, so no salt is needed.
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"llmaas successor key").derive(
        secret.encode()
    )
    return AESGCM(derived)


def seal_successor(secret: str, successor_key: str) -> str:
    """``successor_key`` encrypted (AES-256-GCM) under a key derived from ``secret``."""
    nonce = secrets.token_bytes(12)
    sealed = _cipher(secret).encrypt(nonce, successor_key.encode(), None)
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def open_successor(secret: str, sealed: str) -> str | None:
    """The successor key, if ``secret`` is the one it was sealed under; else None."""
    raw = base64.urlsafe_b64decode(sealed.encode())
    try:
        return _cipher(secret).decrypt(raw[:12], raw[12:], None).decode()
    except InvalidTag:
        return None
