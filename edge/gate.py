"""Who may call, and how much: API keys, per-model permissions, tier limits and the admin token.

Every ``/v1`` request passes here before anything is published: ``identify`` finds the key in the
directory's local copy (no network on the hot path), ``resolve_model`` applies its permissions and
the model's lifecycle, and the limiter takes its share of the tier's limits. Each is a function of
what the caller presented and where from, returning values (a principal, a model and its notices,
a grant and its headers): the HTTP routes (``edge.context``) and the NATS door put them on their
answers. Authentication failures become audit events; error messages and logs name a key by its
public id only, never by its secret.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client

from edge import lifecycle
from edge.auth_failures import FailedLogins
from edge.limits import Limiter
from edge.settings import EdgeSettings
from llmaas import audit, catalog, directory, streams, tenants, tiers, wire
from llmaas.audit import AuditLog
from llmaas.directory import Directory, StoreUnavailable
from llmaas.errors import NotFound, PermissionDenied, ServerError, Unauthenticated, Unavailable
from llmaas.fleet import Fleet
from llmaas.pricing import PriceList
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


class Gate:
    def __init__(self, settings: EdgeSettings, edge_id: str) -> None:
        self.directory = Directory()
        self.tiers = tiers.load(settings.tiers_file)
        self.catalog = catalog.load(settings.catalog_file)
        self.limiter = Limiter(PriceList.load(settings.prices_file), settings.in_flight_lease_s)
        self.default_max_tokens = settings.default_reserved_tokens
        self.streams = streams.Policy.of(settings)
        self.audit = AuditLog(edge_id, policy=self.streams)
        self.failures = FailedLogins(
            self.audit, window_s=settings.auth_failure_window_s, allowed=settings.auth_failures_allowed
        )
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self._admin_digest = tenants.digest(token) if token else None
        self.fleet: Fleet | None = None
        """The workers this edge hears (set by the app): a model no catalog entry names and no
        worker has served since the edge started does not exist (404, not 503)."""
        self.ready = False
        self.opened = asyncio.Event()
        self._rotating: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self, nc: Client) -> None:
        await asyncio.gather(
            self.directory.open(nc, self.streams), self.limiter.open(nc, self.streams), self.audit.open(nc)
        )
        self.failures.start()
        self.ready = True
        self.opened.set()

    async def close(self) -> None:
        await self.limiter.close()
        await self.failures.close()
        await self.audit.close()
        await self.directory.close()

    # --- tenants' keys ---------------------------------------------------------------------------

    async def identify(self, presented: str | None, source: str, where: str) -> Principal:
        """The holder of the API key ``presented`` from ``source`` (an address) to ``where`` (a
        route, or the NATS door): its key, tenant and tier. Raises Unauthenticated (401),
        RateLimited (429: too many failures from this address) or Unavailable (503)."""
        self.failures.check(source)
        if presented is None:
            raise self._refuse(source, where, "missing", _MISSING, code="missing_api_key")
        if not self.ready:
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

    def resolve_model(self, principal: Principal, model: str) -> tuple[str, list[tuple[bytes, bytes]]]:
        """The model that answers ``model`` for this caller and the lifecycle's notices (headers);
        raises PermissionDenied, NotFound or Gone."""
        name, notices = lifecycle.answering(self.catalog, model, principal.tenant)
        if not (principal.key.allows(model) or principal.key.allows(name)):
            raise PermissionDenied(
                f"The API key {principal.key.id} may not use the model '{model}' "
                f"(it may use: {', '.join(principal.key.models)}).",
                param="model",
                code="model_not_allowed",
            )
        if self.catalog.get(name) is None and self.fleet is not None and self.fleet.unheard_of(name):
            raise NotFound(
                f"The model '{model[:256]}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return name, notices

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

    def bounded(self, job: wire.GenerateJob) -> wire.GenerateJob:
        """``job`` with a ``max_tokens``: without one, the most an answer may be (the setting, or
        the model's context if smaller), which is also what admission reserves against the output
        token limits and the budget, so that no request can produce more than it reserved."""
        if job.sampling.max_tokens is not None:
            return job
        cap = self.reserve_for(job.model, None)
        return msgspec.structs.replace(job, sampling=msgspec.structs.replace(job.sampling, max_tokens=cap))

    def reserve_for(self, model: str, max_tokens: int | None) -> int:
        """The output tokens a request for ``model`` may produce: its ``max_tokens``, else the
        default (or the model's context, if smaller)."""
        if max_tokens is not None:
            return max_tokens
        cap = self.default_max_tokens
        known = self.catalog.get(model)
        if known is not None and known.context_length is not None:
            cap = min(cap, known.context_length)
        return cap

    # --- administrators --------------------------------------------------------------------------

    def admin(self, presented: str | None, source: str, where: str) -> str:
        """The audit actor of the holder of the admin token ``presented`` from ``source`` to
        ``where``: ``admin``, from the token, never from what the caller says (the operator's name
        it sends is a detail of the event). Raises Unauthenticated for a wrong admin token,
        RateLimited after too many from one address, PermissionDenied where the admin API is off."""
        if self._admin_digest is None:
            raise PermissionDenied(
                "The admin API is disabled on this edge: start it with LLMAAS_ADMIN_TOKEN set.",
                code="admin_disabled",
            )
        self.failures.check(source)
        if presented is None or not hmac.compare_digest(tenants.digest(presented), self._admin_digest):
            self.failures.failed(
                audit.event("anonymous", "admin.auth_failure", where, "denied", source=source)
            )
            raise Unauthenticated("Incorrect or missing admin token.", code="invalid_admin_token")
        if not self.ready:
            raise Unavailable("The tenant directory is still loading; retry shortly.", retry_after_s=1)
        return "admin"

    def is_admin_token(self, presented: str) -> bool:
        """Whether ``presented`` is the admin token (no failure recorded either way)."""
        return self._admin_digest is not None and hmac.compare_digest(
            tenants.digest(presented), self._admin_digest
        )
