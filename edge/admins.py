"""The administrators' door: the admin token (``LLMAAS_ADMIN_TOKEN``), compared by digest in
constant time; failures are throttled per source and audited like failed key logins. Without a
token the admin API is off (403), never open."""

from __future__ import annotations

import asyncio
import hmac

from edge.auth_failures import FailedLogins
from llmaas import audit, tenants
from llmaas.errors import PermissionDenied, Unauthenticated, Unavailable


class AdminToken:
    def __init__(self, token: str | None, failures: FailedLogins, opened: asyncio.Event) -> None:
        self._digest = tenants.digest(token) if token else None
        self.failures = failures
        self._opened = opened
        """Set once the tenant directory is loaded: admin routes read and change it."""

    def actor(self, presented: str | None, source: str, where: str) -> str:
        """The audit actor of the holder of the admin token ``presented`` from ``source`` to
        ``where``: ``admin``, from the token, never from what the caller says (the operator's name
        it sends is a detail of the event). Raises Unauthenticated for a wrong admin token,
        RateLimited after too many from one address, PermissionDenied where the admin API is off."""
        if self._digest is None:
            raise PermissionDenied(
                "The admin API is disabled on this edge: start it with LLMAAS_ADMIN_TOKEN set.",
                code="admin_disabled",
            )
        self.failures.check(source)
        if presented is None or not self.matches(presented):
            self.failures.failed(
                audit.event("anonymous", "admin.auth_failure", where, "denied", source=source)
            )
            raise Unauthenticated("Incorrect or missing admin token.", code="invalid_admin_token")
        if not self._opened.is_set():
            raise Unavailable("The tenant directory is still loading; retry shortly.", retry_after_s=1)
        return "admin"

    def matches(self, presented: str) -> bool:
        """Whether ``presented`` is the admin token (no failure recorded either way)."""
        return self._digest is not None and hmac.compare_digest(tenants.digest(presented), self._digest)
