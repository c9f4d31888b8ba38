"""GET /v1/keys/current: what the caller's own key is, and its successor once it was rotated.

An automatically rotated key's successor is sealed under the old key's secret; only this route,
called with the old key, can open it. So a client rotates by itself: when its answers start to
carry ``x-llmaas-key-successor``, it reads the new key here and switches before the grace ends.
"""

from __future__ import annotations

import msgspec
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from edge import context
from llmaas import tenants

router = APIRouter()


class CurrentKey(msgspec.Struct, kw_only=True):
    id: str
    tenant: str
    models: list[str]
    expires_at: float | None
    rotate_every_s: float | None
    rotates_at: float | None
    successor: str | None
    successor_key: str | None
    """The successor's secret key: only for an automatic rotation, only to the old key's holder."""


@router.get("/v1/keys/current", summary="The API key in use, and its successor", response_class=Response)
async def current_key(request: Request) -> Response:
    principal = await context.authenticated(request)
    key = principal.key
    opened = tenants.open_successor(principal.secret, key.sealed_successor) if key.sealed_successor else None
    body = CurrentKey(
        id=key.id,
        tenant=key.tenant,
        models=key.models,
        expires_at=key.expires_at,
        rotate_every_s=key.rotate_every_s,
        rotates_at=key.rotation_at() if key.rotate_every_s and not key.successor else None,
        successor=key.successor,
        successor_key=opened,
    )
    return Response(msgspec.json.encode(body), media_type="application/json")
