"""The console's routes: sign-in and out, the pages, and their vendored assets.

Safe by construction rather than by care: templates autoescape; a strict Content-Security-Policy
allows only this origin's scripts and styles (no inline script: chart data travels as a JSON block
that ``console.js`` reads); the session cookie is HttpOnly, SameSite=Strict and holds an opaque id
(``edge.console.sessions``), never a key; every state-changing form carries a CSRF token (the
sign-in form's, before a session exists, is matched against a cookie of its own); sign-in failures
go to the audit trail and the per-address failure limit like any other authentication failure.
"""

from __future__ import annotations

import functools
import hmac
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from fastapi import APIRouter
from nats.errors import Error as NatsError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from edge import context, keyring
from edge.body import read_body
from edge.console import views
from edge.console.sessions import Session
from edge.console.views import Filters
from edge.context import EdgeContext, source_of
from llmaas import alerts, audit
from llmaas.errors import InvalidRequest, LlmaasError, NotFound, PermissionDenied, Unavailable
from llmaas.tenants import ApiKey

router = APIRouter(prefix="/console", include_in_schema=False)

COOKIE = "llmaas_console"
LOGIN_COOKIE = "llmaas_console_login"
CSRF_FIELD = "csrf_token"
_FORM_LIMIT = 16 * 1024
_HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
_ASSETS = {
    "console.css": "text/css",
    "console.js": "text/javascript",
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
}


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )


def _html(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    body = _templates().get_template(template).render(**values)
    return HTMLResponse(body, status, headers={**SECURITY_HEADERS, "cache-control": "no-store"})


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    """Out of reach of the page's scripts and of other sites' requests; Secure over HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# --- signing in and out ------------------------------------------------------------------------


def _login_page(request: Request, status: int = 200, error: str | None = None) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = _html("login.html", status, csrf=token, error=error, session=None)
    _cookie(response, request, LOGIN_COOKIE, token, 3600)
    return response


@router.get("")
async def console(request: Request) -> Response:
    edge = context.of(request)
    if await _session(edge, request) is not None:
        return RedirectResponse("/console/overview", 303)
    return _login_page(request)


async def _form(request: Request) -> dict[str, str]:
    """A posted form's fields (URL-encoded, as browsers send them); nothing if it is too long or
    malformed, which then fails its CSRF check."""
    try:
        raw = await read_body(request, _FORM_LIMIT)
        return dict(parse_qsl(raw.decode(), max_num_fields=8))
    except (LlmaasError, UnicodeDecodeError, ValueError):
        return {}


@router.post("/login")
async def login(request: Request) -> Response:
    edge = context.of(request)
    form = await _form(request)
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    if not expected or not hmac.compare_digest(form.get(CSRF_FIELD, ""), expected):
        return _login_page(request, 403, "The sign-in form expired; try again.")
    gate, source, presented = edge.gate, source_of(request), form.get("key", "").strip() or None
    try:
        if presented is not None and gate.admins.matches(presented):
            actor = gate.admins.actor(presented, source, request.url.path)
            sid, session = await edge.sessions.create("operator", None, actor)
        else:
            principal = await gate.keys.identify(presented, source, request.url.path)
            actor = f"key:{principal.key.id}"
            sid, session = await edge.sessions.create("tenant", principal.tenant.name, principal.key.id)
    except LlmaasError as exc:
        return _login_page(request, exc.status, exc.message)
    except (NatsError, TimeoutError):
        return _login_page(request, 503, "Sessions cannot be stored right now; retry shortly.")
    gate.audit.record(audit.event(actor, "console.login", session.tenant or "*", "ok", source=source))
    response = RedirectResponse("/console/overview", 303)
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    _cookie(response, request, COOKIE, sid, int(edge.sessions.lifetime_s))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    response = RedirectResponse("/console", 303)
    response.delete_cookie(COOKIE, path="/console")
    try:
        edge, session, _ = await _posted(request)
    except _SignedOut:
        return response
    except LlmaasError as exc:
        return _html("error.html", exc.status, message=exc.message, session=None)
    await edge.sessions.revoke(request.cookies[COOKIE])
    actor = _acting(request, session)
    edge.gate.audit.record(
        audit.event(actor.name, "console.logout", session.tenant or "*", "ok", source=actor.source)
    )
    return response


async def _session(edge: EdgeContext, request: Request) -> Session | None:
    """The request's live session; a tenant's ends with the key that opened it (revoked, expired)."""
    sid = request.cookies.get(COOKIE)
    try:
        session = await edge.sessions.get(sid)
        if session is None or session.role == "operator":
            return session
        key = edge.gate.directory.key(session.key_id)
        if key is not None and key.usable_at(time.time()):
            return session
        if sid is not None:
            await edge.sessions.revoke(sid)
        return None
    except (NatsError, TimeoutError):
        raise Unavailable("Sessions cannot be read right now; retry shortly.", retry_after_s=1) from None


# --- pages -------------------------------------------------------------------------------------

Build = Callable[[EdgeContext, str | None, Filters], Awaitable[dict[str, Any]]]


async def _show(request: Request, page: str, build: Build) -> Response:
    """``page`` for the signed-in session, with what ``build`` found for its tenant and filters."""
    edge = context.of(request)
    try:
        session = await _session(edge, request)
    except Unavailable as exc:
        return _html("error.html", exc.status, message=exc.message, session=None)
    if session is None:
        return RedirectResponse("/console", 303)
    return await _render(request, edge, session, page, build)


async def _render(
    request: Request, edge: EdgeContext, session: Session, page: str, build: Build, **extra: Any
) -> Response:
    operator = session.role == "operator"
    base: dict[str, Any] = {
        "session": session,
        "operator": operator,
        "page": page,
        "query": "",
        "tenant": None,
    }
    try:
        filters = Filters.of(dict(request.query_params), operator)
        tenant = filters.tenant if operator else session.tenant
        found = await build(edge, tenant, filters)
    except LlmaasError as exc:
        return _html("error.html", exc.status, message=exc.message, **base)
    query = urlencode(filters.query())
    base |= {"query": f"?{query}" if query else "", "tenant": tenant}
    return _html(f"{page}.html", filters=filters, **base, **found, **extra)


async def _overview(edge: EdgeContext, tenant: str | None, filters: Filters) -> dict[str, Any]:
    totals = await views.overview(edge.pipeline, tenant, filters)
    record = edge.gate.directory.tenant(tenant) if tenant else None
    tier = edge.gate.tiers.get(record.tier) if record is not None else None
    budget = tier.monthly_budget_eur if tier is not None else None
    used = totals["month"]["cost_eur"] / budget if budget else None
    return {"totals": totals, "tier": tier, "budget": budget, "budget_used": used}


async def _usage(edge: EdgeContext, tenant: str | None, filters: Filters) -> dict[str, Any]:
    found = await views.usage_by_day(edge.pipeline, tenant, filters)
    return {
        "rows": found,
        "chart": views.chart(
            found, "day", "completion_tokens", step_s=86_400, points=filters.days, unit="tokens", missing=0
        ),
    }


async def _latency(edge: EdgeContext, tenant: str | None, filters: Filters) -> dict[str, Any]:
    found = await views.latency(edge.pipeline, tenant, filters)
    return {
        "rows": found,
        "ttft": views.chart(
            found, "hour", ("ttft_p50_ms", "ttft_p95_ms"), step_s=3600, points=24 * filters.days, unit="ms"
        ),
        "speed": views.chart(
            found, "hour", "tokens_per_s", step_s=3600, points=24 * filters.days, unit="tokens/s"
        ),
    }


async def _keys(edge: EdgeContext, tenant: str | None, filters: Filters) -> dict[str, Any]:
    everything = list(edge.gate.directory.keys_copy.records.values())
    return {"keys": views.keys(everything, tenant, time.time())}


async def _models(edge: EdgeContext, tenant: str | None, filters: Filters) -> dict[str, Any]:
    record = edge.gate.directory.tenant(tenant) if tenant else None
    return {"models": views.models(edge.gate.catalog, record), "usable": record is not None}


async def _alerts(edge: EdgeContext, tenant: str | None, filters: Filters) -> dict[str, Any]:
    rules = [(r, st, views.day(st.since) if st else "") for r, st in await edge.alerts.rules(tenant)]
    history = await views.alert_history(edge.pipeline, tenant, filters)
    return {"rules": rules, "history": history, "kinds": alerts.KINDS, "units": alerts.UNITS}


def _page(page: str, build: Build) -> Callable[[Request], Awaitable[Response]]:
    async def show(request: Request) -> Response:
        return await _show(request, page, build)

    return show


_PAGES: dict[str, Build] = {
    "overview": _overview,
    "usage": _usage,
    "latency": _latency,
    "keys": _keys,
    "models": _models,
    "alerts": _alerts,
}
for _name, _build in _PAGES.items():
    router.add_api_route(f"/{_name}", _page(_name, _build), methods=["GET"], name=f"console_{_name}")


@router.get("/history")
async def history(request: Request) -> Response:
    cursor = request.query_params.get("cursor") or None

    async def build(edge: EdgeContext, tenant: str | None, filters: Filters) -> dict[str, Any]:
        page, following = await views.history(edge.pipeline, tenant, filters, cursor)
        query = filters.query()
        after = f"/console/history?{urlencode({**query, 'cursor': following})}" if following else None
        return {"requests": page, "next_page": after, "first_page": cursor is not None}

    return await _show(request, "history", build)


# --- acting on keys ----------------------------------------------------------------------------

_NAME_LIMIT = 64


class _SignedOut(Exception):
    pass


async def _posted(request: Request) -> tuple[EdgeContext, Session, dict[str, str]]:
    """The session of a state-changing form, once its CSRF token matched; raises _SignedOut."""
    edge = context.of(request)
    session = await _session(edge, request)
    if session is None:
        raise _SignedOut
    form = await _form(request)
    if not hmac.compare_digest(form.get(CSRF_FIELD, ""), session.csrf):
        raise PermissionDenied("This form expired; reload the page and try again.", code="csrf_mismatch")
    return edge, session, form


def _acting(request: Request, session: Session) -> keyring.Actor:
    name = "admin" if session.role == "operator" else f"key:{session.key_id}"
    return keyring.Actor(name, source_of(request), {"via": "console"})


def _own_key(edge: EdgeContext, session: Session, key_id: str) -> ApiKey:
    """A key the session may act on: its tenant's (any, for the operator); others do not exist."""
    key = edge.gate.directory.key(key_id)
    if key is None or (session.role == "tenant" and key.tenant != session.tenant):
        raise keyring.missing("key", key_id)
    return key


Act = Callable[[EdgeContext, Session, dict[str, str]], Awaitable[dict[str, str] | None]]


async def _acted(request: Request, page: str, act: Act) -> Response:
    """Runs ``act`` for a posted form of ``page`` (its session's CSRF token checked first), then
    back to the page; what ``act`` returns (a new secret, shown once) goes on it, never in a URL."""
    try:
        edge, session, form = await _posted(request)
        shown = await act(edge, session, form)
    except _SignedOut:
        return RedirectResponse("/console", 303)
    except LlmaasError as exc:
        return _html("error.html", exc.status, message=exc.message, session=None)
    if shown is None:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"/console/{page}{query}", 303)
    return await _render(request, edge, session, page, _PAGES[page], created=shown)


@router.post("/keys")
async def create_key(request: Request) -> Response:
    async def act(edge: EdgeContext, session: Session, form: dict[str, str]) -> dict[str, str]:
        name = form.get("name", "").strip() or "console"
        if len(name) > _NAME_LIMIT:
            raise InvalidRequest(f"A key's name has at most {_NAME_LIMIT} characters.", param="name")
        if session.role == "operator":
            tenant, models = form.get("tenant", "").strip(), []
            if not tenant:
                raise InvalidRequest("Say which tenant the key is for.", param="tenant")
        else:
            # A key cannot make a key with more rights than its own: the models of the one signed in.
            assert session.tenant is not None
            tenant, models = session.tenant, _own_key(edge, session, session.key_id).models
        key, secret = await keyring.create(
            edge.gate, _acting(request, session), tenant=tenant, name=name, models=models
        )
        return {"id": key.id, "secret": secret, "what": "created"}

    return await _acted(request, "keys", act)


@router.post("/keys/{key_id}/rotate")
async def rotate_key(request: Request, key_id: str) -> Response:
    async def act(edge: EdgeContext, session: Session, form: dict[str, str]) -> dict[str, str]:
        _own_key(edge, session, key_id)
        new, secret = await keyring.rotate(edge.gate, _acting(request, session), key_id)
        return {"id": new.id, "secret": secret, "what": f"the successor of {key_id}"}

    return await _acted(request, "keys", act)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    async def act(edge: EdgeContext, session: Session, form: dict[str, str]) -> None:
        _own_key(edge, session, key_id)
        await keyring.revoke(edge.gate, _acting(request, session), key_id)

    return await _acted(request, "keys", act)


# --- alert rules -------------------------------------------------------------------------------

_RULE_ID = re.compile(r"[0-9a-f]{12}")


def _number(form: dict[str, str], name: str, low: float, high: float) -> float:
    try:
        value = float(form.get(name, ""))
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN too
        raise InvalidRequest(f"'{name}' must be a number from {low:g} to {high:g}.", param=name)
    return value


def _rule_tenant(session: Session, form: dict[str, str]) -> str:
    if session.tenant is not None:
        return session.tenant
    tenant = form.get("tenant", "").strip()
    if not tenant:
        raise InvalidRequest("Say which tenant the rule is for.", param="tenant")
    return tenant


@router.post("/alerts")
async def create_alert(request: Request) -> Response:
    async def act(edge: EdgeContext, session: Session, form: dict[str, str]) -> None:
        kind = form.get("kind", "")
        if kind not in alerts.KINDS:
            raise InvalidRequest(f"'kind' must be one of {', '.join(alerts.KINDS)}.", param="kind")
        tenant = _rule_tenant(session, form)
        record = edge.gate.directory.tenant(tenant)
        if record is None:
            raise keyring.missing("tenant", tenant)
        budget = None
        if kind == "budget_used_pct":
            tier = edge.gate.tiers.get(record.tier)
            budget = tier.monthly_budget_eur if tier is not None else None
            if not budget:
                raise InvalidRequest("This tenant's tier has no monthly budget to alert on.", param="kind")
        model = form.get("model", "").strip() or None
        if model is not None:
            views.check_name(model, "model")  # the same names as the pages' filters
        rule = await edge.alerts.add(
            tenant=tenant,
            kind=kind,  # checked against KINDS above
            threshold=_number(form, "threshold", 0, 1e12),
            window_s=60 * _number(form, "window_min", alerts.MIN_WINDOW_S / 60, alerts.MAX_WINDOW_S / 60),
            min_requests=int(_number(form, "min_requests", 0, 1e9)),
            model=model,
            budget_eur=budget,
            by=_acting(request, session).name,
        )
        actor = _acting(request, session)
        detail = {"rule": rule.id, "kind": rule.kind, "threshold": f"{rule.threshold:g}"}
        edge.gate.audit.record(
            audit.event(actor.name, "alert.create", tenant, "ok", source=actor.source, detail=detail)
        )

    return await _acted(request, "alerts", act)


@router.post("/alerts/{rule_id}/delete")
async def delete_alert(request: Request, rule_id: str) -> Response:
    async def act(edge: EdgeContext, session: Session, form: dict[str, str]) -> None:
        tenant = _rule_tenant(session, form)
        if not _RULE_ID.fullmatch(rule_id) or not await edge.alerts.remove(tenant, rule_id):
            raise NotFound(f"No alert rule named '{rule_id[:64]}'.", code="alert_rule_not_found")
        actor = _acting(request, session)
        edge.gate.audit.record(
            audit.event(
                actor.name, "alert.delete", tenant, "ok", source=actor.source, detail={"rule": rule_id}
            )
        )

    return await _acted(request, "alerts", act)


@router.get("/static/{name}")
async def asset(name: str) -> Response:
    """The vendored assets: served from the package, nothing fetched from elsewhere."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        return Response("Not found", 404, media_type="text/plain")
    headers = {**SECURITY_HEADERS, "cache-control": "public, max-age=3600"}
    return Response(_asset(name), media_type=media_type, headers=headers)


@functools.cache
def _asset(name: str) -> bytes:
    return (_HERE / "static" / name).read_bytes()
