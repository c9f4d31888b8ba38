"""What every route needs from the running edge: settings, metrics, pipeline, gate, files, batches,
and the console's sessions and alert rules; and the HTTP side of the gate: the credentials a
request presents, and the headers its answer carries (whatever the answer turns out to be)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends
from starlette.requests import Request

from edge.console.alerting import AlertBook
from edge.console.sessions import Sessions
from edge.gate import Gate
from edge.keys import Principal
from edge.metrics import EdgeMetrics
from edge.pipeline import Pipeline
from edge.settings import EdgeSettings
from edge.uploads import FileDesk
from edge.usage import Tally
from llmaas.usage import UsageOutbox
from llmaas.wire import Job

if TYPE_CHECKING:  # the engine runs requests as the routes do (edge.exchange): it imports this
    from edge.batches import BatchEngine


@dataclass(frozen=True)
class EdgeContext:
    settings: EdgeSettings
    metrics: EdgeMetrics
    pipeline: Pipeline
    gate: Gate
    outbox: UsageOutbox
    files: FileDesk
    batches: BatchEngine
    sessions: Sessions
    alerts: AlertBook

    def tally(self, job: Job) -> Tally:
        """Meter ``job`` from now on (its caller is authenticated and its model known)."""
        return Tally(self.outbox, self.gate.limiter, self.pipeline.edge_id, job)


def of(request: Request) -> EdgeContext:
    edge: EdgeContext = request.app.state.edge
    return edge


def source_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def answer_with(request: Request, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Headers for this request's answer, whatever it turns out to be (an error raised later gets
    them too): the envelope (``edge.middleware``) adds them when the response starts."""
    request.scope["state"].setdefault("headers", []).extend(headers)


async def authenticated(request: Request) -> Principal:
    """The caller of an API route (``Keys.identify`` on its bearer key); a successor key's notice
    goes on the answer."""
    principal = await of(request).gate.keys.identify(bearer(request), source_of(request), request.url.path)
    answer_with(request, principal.notices)
    return principal


def model_for(request: Request, principal: Principal, model: str) -> str:
    """The model that answers ``model`` for this caller (``Models.answering``); a deprecated
    model's notices go on the answer."""
    name, notices = of(request).gate.models.answering(principal, model)
    answer_with(request, notices)
    return name


async def admin_actor(request: Request) -> str:
    """The admin token's holder (the audit actor "admin"), checked before an admin route runs: a
    dependency of the admin router (so that no route of it can forget the check) and of each admin
    route elsewhere (async: FastAPI would run a plain function in a thread). Raises Unauthenticated,
    RateLimited, PermissionDenied (admin API disabled)."""
    return of(request).gate.admins.actor(bearer(request), source_of(request), request.url.path)


Admin = Annotated[str, Depends(admin_actor)]
"""A route parameter: the admin actor, checked (FastAPI runs a request's dependency once)."""


def request_id(request: Request) -> str:
    rid: str = request.scope["state"]["request_id"]
    return rid
