"""API keys at the door: who is calling, from the key presented.

``identify`` finds the key in the directory's local copy (no network on the hot path; a key made a
moment ago on another edge is fetched once), checks its secret, state and age, and returns the
principal: key, tenant and tier. A failure is an audit event (``edge.auth_failures`` throttles
them per source); error messages and logs name a key by its public id only, never by its secret.
A key that reached its rotation age is rotated off the request's path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from edge.auth_failures import FailedLogins
from llmaas import audit, directory, tenants, wire
from llmaas.audit import AuditLog
from llmaas.directory import Directory, StoreUnavailable
from llmaas.errors import ServerError, Unauthenticated, Unavailable
from llmaas.tenants import ApiKey, Tenant
from llmaas.tiers import Tier

log = logging.getLogger(__name__)

_MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


@dataclass(frozen=True)
class Principal:
    tenant: Tenant
    key: ApiKey
    tier: Tier
    secret: str = field(repr=False, default="")
    """The presented secret, kept for this request only (it opens a sealed successor key)."""

    @property
    def notices(self) -> list[tuple[bytes, bytes]]:
        """Headers for the holder, on every answer: a successor key waits (GET /v1/keys/current)."""
        successor = self.key.successor
        return [(b"x-llmaas-key-successor", successor.encode())] if successor else []


def caller(principal: Principal) -> wire.Caller:
    """Who the job is for, as the rest of the pipeline (guard, metering) sees it."""
    return wire.Caller(tenant=principal.tenant.name, token_id=principal.key.id)


class Keys:
    def __init__(
        self,
        directory: Directory,
        tiers: dict[str, Tier],
        failures: FailedLogins,
        audit_log: AuditLog,
        opened: asyncio.Event,
    ) -> None:
        self.directory = directory
        self.tiers = tiers
        self.failures = failures
        self.audit = audit_log
        self._opened = opened
        """Set once the directory is loaded: before that, no key can be told from a wrong one."""
        self._rotating: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def identify(self, presented: str | None, source: str, where: str) -> Principal:
        """The holder of the API key ``presented`` from ``source`` (an address) to ``where`` (a
        route, or the NATS door): its key, tenant and tier. Raises Unauthenticated (401),
        RateLimited (429: too many failures from this address) or Unavailable (503)."""
        self.failures.check(source)
        if presented is None:
            raise self._refuse(source, where, "missing", _MISSING, code="missing_api_key")
        if not self._opened.is_set():
            raise Unavailable("Authentication is starting up; retry shortly.", retry_after_s=1)
        parsed = tenants.parse_key(presented)
        if parsed is None:
            raise self._refuse(source, where, "malformed", "Incorrect API key provided.")
        key_id, secret = parsed
        key = self.directory.key(key_id)
        if key is None:
            try:
                key = await self.directory.fetch_key(key_id)  # created a moment ago on another edge
            except StoreUnavailable:
                raise Unavailable("The key store is unreachable; retry shortly.", retry_after_s=1) from None
        if key is None or not tenants.matches(secret, key.secret_sha256):
            raise self._refuse(source, where, key_id, f"Incorrect API key provided (key id {key_id}).")
        now = time.time()
        if key.state == "revoked":
            raise self._refuse(source, where, key_id, f"The API key {key_id} has been revoked.")
        if not key.usable_at(now):
            hint = f" It was rotated; use its successor {key.successor}." if key.successor else ""
            raise self._refuse(source, where, key_id, f"The API key {key_id} has expired.{hint}")
        tenant = self.directory.tenant(key.tenant)
        if tenant is None:
            raise self._refuse(source, where, key_id, f"The API key {key_id} belongs to no existing tenant.")
        tier = self.tiers.get(tenant.tier)
        if tier is None:
            log.error("tenant %s has tier %r, which this edge does not know", tenant.name, tenant.tier)
            raise ServerError("This tenant's billing tier is not configured on this server.")
        if key.rotation_due(now):
            self._rotate_soon(key, secret)
        return Principal(tenant=tenant, key=key, tier=tier, secret=secret)

    def acting_for(self, key_id: str) -> Principal:
        """The principal of a key whose holder's work the platform carries on (a batch's lines, after
        the key was shown when the batch was made): the key must still be usable, its tenant there."""
        key = self.directory.key(key_id)
        now = time.time()
        if key is None or key.state == "revoked" or not key.usable_at(now):
            raise Unauthenticated(f"The API key {key_id} that made this batch is revoked or expired.")
        tenant = self.directory.tenant(key.tenant)
        tier = self.tiers.get(tenant.tier) if tenant is not None else None
        if tenant is None or tier is None:
            raise Unauthenticated(f"The API key {key_id} belongs to no existing tenant.")
        return Principal(tenant=tenant, key=key, tier=tier)

    def _rotate_soon(self, key: ApiKey, secret: str) -> None:
        """Rotate a key that reached its age, off the request's path; once per key and edge at a time
        (and once overall: the directory lets exactly one rotation win)."""
        key_id = key.id
        if key_id in self._rotating:
            return
        self._rotating.add(key_id)

        async def rotate() -> None:
            try:
                new, _ = await self.directory.rotate_key(key_id, grace_s=key.grace_s, old_secret=secret)
            except directory.Conflict:
                return  # another edge rotated it first
            except (directory.StoreUnavailable, directory.Missing) as exc:
                log.warning("automatic rotation of key %s failed (%s); retried on its next use", key_id, exc)
                return
            finally:
                self._rotating.discard(key_id)
            detail = {"successor": new.id, "automatic": "true"}
            self.audit.record(audit.event("system", "key.rotate", key_id, "ok", detail=detail))

        task = asyncio.create_task(rotate())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refuse(
        self, source: str, where: str, key_id: str, message: str, code: str = "invalid_api_key"
    ) -> Unauthenticated:
        actor = "anonymous" if key_id in ("malformed", "missing") else f"key:{key_id}"
        detail = {"reason": message}
        self.failures.failed(
            audit.event(actor, "auth.failure", where, "denied", source=source, detail=detail)
        )
        return Unauthenticated(message, code=code)
