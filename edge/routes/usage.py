"""Usage reports and read-only SQL over the metering tables, for tenants and administrators.

``GET /v1/usage`` and ``POST /v1/sql`` answer with the caller's own tenant's rows only (the key
decides the tenant; the metering service enforces it in the database). ``GET /admin/v1/usage`` and
``POST /admin/v1/sql`` take the admin token and see every tenant. The queries run in the metering
service, which owns the ClickHouse data; the edge only authenticates and forwards.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from edge import body, context, reports
from llmaas.errors import InvalidRequest
from llmaas.wire import Query, SqlQuery, UsageQuery

_ADMIN = [Depends(context.admin_actor)]
router = APIRouter()


class SqlBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    query: str = Field(min_length=1, max_length=100_000)


async def _ask(request: Request, query: Query) -> Response:
    answer = await reports.rows(context.of(request).pipeline, query)
    return Response(msgspec.json.encode(answer), media_type="application/json")


_BY: dict[str, Literal["total", "model", "day"]] = {"total": "total", "model": "model", "day": "day"}


def _usage_query(request: Request, tenant: str | None) -> UsageQuery:
    params = request.query_params
    now = time.time()
    by = _BY.get(params.get("by", "total"))
    if by is None:
        raise InvalidRequest(f"Invalid 'by' {params['by']!r}: use total, model or day.", param="by")
    until = params.get("until")
    return UsageQuery(
        tenant=tenant,
        since=reports.since_epoch(params.get("since", "30d"), now),
        until=reports.since_epoch(until, now, "until") if until else None,
        by=by,
    )


@router.get("/v1/usage", summary="Tokens, euros and kWh of the caller's tenant", response_class=Response)
async def tenant_usage(request: Request) -> Response:
    principal = await context.authenticated(request)
    return await _ask(request, _usage_query(request, principal.tenant.name))


@router.post("/v1/sql", summary="Read-only SQL over the caller's tenant's usage", response_class=Response)
async def tenant_sql(request: Request) -> Response:
    edge = context.of(request)
    principal = await context.authenticated(request)
    sql = await body.parse(request, SqlBody, edge.settings.max_body_bytes)
    return await _ask(request, SqlQuery(sql=sql.query, tenant=principal.tenant.name))


@router.get("/admin/v1/usage", include_in_schema=False, response_class=Response, dependencies=_ADMIN)
async def admin_usage(request: Request) -> Response:
    return await _ask(request, _usage_query(request, request.query_params.get("tenant") or None))


@router.post("/admin/v1/sql", include_in_schema=False, response_class=Response, dependencies=_ADMIN)
async def admin_sql(request: Request) -> Response:
    edge = context.of(request)
    sql = await body.parse(request, SqlBody, edge.settings.max_body_bytes)
    return await _ask(request, SqlQuery(sql=sql.query))
