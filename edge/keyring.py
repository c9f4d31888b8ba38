"""Changing the directory for a caller: API keys created, rotated and revoked, and the audit event
of each, appended before the caller hears of it. The admin API and the console both act through
here, so an action means the same (and is audited the same) whichever door it came through.

Every change is written with compare-and-set; an action that could not be audited fails (503)
rather than go unseen. A key's secret is returned once, by the call that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
from nats.errors import Error as NatsError

from edge.gate import Gate
from llmaas import audit, directory
from llmaas.errors import Conflict, NotFound, Unavailable
from llmaas.tenants import DEFAULT_GRACE_S, ApiKey


@dataclass(frozen=True)
class Actor:
    """Who acts (the audit trail's actor: ``admin`` or ``key:<id>``), from where."""

    name: str
    source: str
    said: dict[str, str] = field(default_factory=dict)
    """What the caller claims about itself (the operator's login name): a detail, not the actor."""


async def audited(gate: Gate, by: Actor, action: str, *, target: str, detail: dict[str, str]) -> None:
    try:
        await gate.audit.append(
            audit.event(by.name, action, target, "ok", source=by.source, detail={**detail, **by.said})
        )
    except (NatsError, TimeoutError) as exc:
        raise Unavailable("The audit trail is unreachable; the action was applied but not audited.") from exc


def missing(kind: str, name: str) -> NotFound:
    return NotFound(f"No {kind} named '{name}'.", code=f"{kind}_not_found")


def unreachable() -> Unavailable:
    return Unavailable("The tenant directory is unreachable; retry shortly.", retry_after_s=1)


async def create(
    gate: Gate,
    by: Actor,
    *,
    tenant: str,
    name: str,
    models: list[str],
    expires_at: float | None = None,
    rotate_every_s: float | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> tuple[ApiKey, str]:
    if gate.directory.tenant(tenant) is None:
        raise missing("tenant", tenant)
    try:
        key, secret = await gate.directory.issue_key(
            tenant=tenant,
            name=name,
            models=models,
            expires_at=expires_at,
            rotate_every_s=rotate_every_s,
            grace_s=grace_s,
        )
    except (directory.StoreUnavailable, directory.Conflict):
        raise unreachable() from None
    detail = {"key": key.id, "models": ",".join(key.models) or "*"}
    await audited(gate, by, "key.create", target=tenant, detail=detail)
    return key, secret


async def rotate(gate: Gate, by: Actor, key_id: str, grace_s: float = DEFAULT_GRACE_S) -> tuple[ApiKey, str]:
    """A successor with the same tenant, models and schedule; the old key lives ``grace_s`` more."""
    try:
        new, secret = await gate.directory.rotate_key(key_id, grace_s=grace_s)
    except directory.Missing:
        raise missing("key", key_id) from None
    except directory.Conflict:
        raise Conflict(
            f"The key {key_id} is revoked, expired or already rotated; rotate its successor."
        ) from None
    except directory.StoreUnavailable:
        raise unreachable() from None
    detail = {"successor": new.id, "grace_s": f"{grace_s:g}"}
    await audited(gate, by, "key.rotate", target=key_id, detail=detail)
    return new, secret


async def revoke(gate: Gate, by: Actor, key_id: str) -> ApiKey:
    try:
        key = await gate.directory.change_key(key_id, lambda k: msgspec.structs.replace(k, state="revoked"))
    except directory.Missing:
        raise missing("key", key_id) from None
    except (directory.StoreUnavailable, directory.Conflict):
        raise unreachable() from None
    await audited(gate, by, "key.revoke", target=key_id, detail={"tenant": key.tenant})
    return key


def shown_state(key: ApiKey, now: float) -> str:
    """The state a person is shown: ``expired`` past its end, ``rotating`` in its grace period."""
    if key.state == "active" and not key.usable_at(now):
        return "expired"
    if key.state == "active" and key.successor:
        return "rotating"  # still valid, until the end of its grace period
    return key.state
