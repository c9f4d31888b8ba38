"""The admin API (``/admin/v1``): tenants, API keys and the audit chain, behind the admin token.

Every change is written to the directory with compare-and-set and appended to the audit trail
before the response is sent: an action that could not be audited fails (503) rather than go unseen.
A key's secret appears in exactly one response, the one that created it.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from edge import body, context, keyring
from edge.context import EdgeContext, source_of
from llmaas import audit, directory, tenants
from llmaas.errors import Conflict, InvalidRequest
from llmaas.tenants import DEFAULT_GRACE_S, ApiKey, Tenant

router = APIRouter(prefix="/admin/v1", include_in_schema=False, dependencies=[Depends(context.admin_actor)])
"""Every route behind the admin token (a dependency of the router: none can forget the check)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TenantCreate(_Body):
    name: str
    tier: str = "tier1"


class TenantChange(_Body):
    tier: str | None = None
    guard_enabled: bool | None = None
    guard_threshold: Annotated[float, Field(gt=0, le=1)] | Literal["default"] | None = None
    """The learned layer's threshold for this tenant; "default": the deployment's again."""
    reactivate: list[str] = []
    """Retired catalog models to serve to this tenant again."""
    deactivate: list[str] = []
    """Models to take back from ``reactivate``."""


class KeyCreate(_Body):
    tenant: str
    name: str = "default"
    models: list[str] = []
    expires_in_s: float | None = Field(default=None, gt=0)
    rotate_every_s: float | None = Field(default=None, gt=0)
    grace_s: float = Field(default=DEFAULT_GRACE_S, ge=0)


class KeyRotate(_Body):
    grace_s: float = Field(default=DEFAULT_GRACE_S, ge=0)


class KeyView(msgspec.Struct, kw_only=True):
    """A key as administrators see it: everything but the secret's digest."""

    id: str
    tenant: str
    name: str
    state: str
    models: list[str]
    created_at: float
    expires_at: float | None
    rotate_every_s: float | None
    successor: str | None
    predecessor: str | None
    key: str | None = None
    """The secret key itself: only in the response that created it."""


def _view(key: ApiKey, now: float, secret: str | None = None) -> KeyView:
    return KeyView(
        id=key.id,
        tenant=key.tenant,
        name=key.name,
        state=keyring.shown_state(key, now),
        models=key.models,
        created_at=key.created_at,
        expires_at=key.expires_at,
        rotate_every_s=key.rotate_every_s,
        successor=key.successor,
        predecessor=key.predecessor,
        key=secret,
    )


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


def _actor(request: Request, name: str) -> keyring.Actor:
    """The token's holder, and the operator name the caller gave (``llmaas`` sends the login name):
    a claim of the holder, recorded as such, not the actor."""
    operator = request.headers.get("x-llmaas-operator", "")[:64]
    return keyring.Actor(name, source_of(request), {"operator": operator} if operator else {})


@router.post("/tenants")
async def create_tenant(request: Request, actor: context.Admin) -> Response:
    edge = context.of(request)
    req = await body.parse(request, TenantCreate, 64 * 1024)
    try:
        tenants.check_name(req.name)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="name") from None
    _check_tier(edge, req.tier)
    tenant = Tenant(name=req.name, tier=req.tier, created_at=time.time())
    try:
        await edge.gate.directory.create_tenant(tenant)
    except directory.Conflict:
        raise Conflict(f"A tenant named '{req.name}' already exists.", param="name") from None
    except directory.StoreUnavailable:
        raise keyring.unreachable() from None
    await keyring.audited(
        edge.gate, _actor(request, actor), "tenant.create", target=req.name, detail={"tier": req.tier}
    )
    return _json(tenant, 201)


@router.get("/tenants")
async def list_tenants(request: Request) -> Response:
    edge = context.of(request)
    records = edge.gate.directory.tenants_copy.records
    return _json({"data": [records[name] for name in sorted(records)]})


@router.patch("/tenants/{name}")
async def change_tenant(request: Request, actor: context.Admin, name: str) -> Response:
    edge = context.of(request)
    req = await body.parse(request, TenantChange, 64 * 1024)
    changes: dict[str, object] = {}
    if req.tier is not None:
        _check_tier(edge, req.tier)
        changes["tier"] = req.tier
    if req.guard_enabled is not None:
        changes["guard_enabled"] = req.guard_enabled
    if req.guard_threshold is not None:
        changes["guard_threshold"] = None if req.guard_threshold == "default" else req.guard_threshold
    for field, models in (("reactivate", req.reactivate), ("deactivate", req.deactivate)):
        for model in models:
            if edge.gate.catalog.get(model) is None:
                raise InvalidRequest(f"The model '{model}' is not in the catalog.", param=field)
    if not changes and not req.reactivate and not req.deactivate:
        raise InvalidRequest(
            "Nothing to change: give 'tier', 'guard_enabled', 'guard_threshold', 'reactivate' "
            "or 'deactivate'."
        )

    def change(tenant: Tenant) -> Tenant:
        models = [m for m in tenant.reactivated if m not in req.deactivate]
        models += [m for m in req.reactivate if m not in models]
        return msgspec.structs.replace(tenant, **changes, reactivated=models)

    detail = {k: "default" if v is None else str(v) for k, v in changes.items()}
    for field, models in (("reactivate", req.reactivate), ("deactivate", req.deactivate)):
        if models:
            detail[field] = ",".join(models)
    try:
        tenant = await edge.gate.directory.change_tenant(name, change)
    except directory.Missing:
        raise keyring.missing("tenant", name) from None
    except (directory.StoreUnavailable, directory.Conflict):
        raise keyring.unreachable() from None
    await keyring.audited(edge.gate, _actor(request, actor), "tenant.change", target=name, detail=detail)
    return _json(tenant)


@router.post("/keys")
async def create_key(request: Request, actor: context.Admin) -> Response:
    edge = context.of(request)
    req = await body.parse(request, KeyCreate, 64 * 1024)
    now = time.time()
    key, secret = await keyring.create(
        edge.gate,
        _actor(request, actor),
        tenant=req.tenant,
        name=req.name,
        models=req.models,
        expires_at=now + req.expires_in_s if req.expires_in_s else None,
        rotate_every_s=req.rotate_every_s,
        grace_s=req.grace_s,
    )
    return _json(_view(key, now, secret), 201)


@router.get("/keys")
async def list_keys(request: Request) -> Response:
    edge = context.of(request)
    wanted = request.query_params.get("tenant")
    now = time.time()
    keys = [k for k in edge.gate.directory.keys_copy.records.values() if wanted in (None, k.tenant)]
    keys.sort(key=lambda k: (k.tenant, k.created_at))
    return _json({"data": [_view(k, now) for k in keys]})


@router.post("/keys/{key_id}/rotate")
async def rotate_key(request: Request, actor: context.Admin, key_id: str) -> Response:
    """A successor with the same tenant, models and schedule; the old key lives ``grace_s`` more."""
    edge = context.of(request)
    req = await body.parse(request, KeyRotate, 64 * 1024)
    new, secret = await keyring.rotate(edge.gate, _actor(request, actor), key_id, req.grace_s)
    return _json(_view(new, time.time(), secret), 201)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, actor: context.Admin, key_id: str) -> Response:
    edge = context.of(request)
    key = await keyring.revoke(edge.gate, _actor(request, actor), key_id)
    return _json(_view(key, time.time()))


@router.get("/audit/verify")
async def verify_audit(request: Request) -> Response:
    edge = context.of(request)
    js = edge.pipeline.jetstream()
    return _json(await audit.verify(js))


def _check_tier(edge: EdgeContext, tier: str) -> None:
    if tier not in edge.gate.tiers:
        known = ", ".join(sorted(edge.gate.tiers))
        raise InvalidRequest(f"Unknown tier '{tier}' (known: {known}).", param="tier")
