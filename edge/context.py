"""What every route needs from the running edge: settings, metrics, pipeline, gate, files, batches,
and the console's sessions and alert rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends
from starlette.requests import Request

from edge.console.alerting import AlertBook
from edge.console.sessions import Sessions
from edge.gate import Gate
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


async def admin_actor(request: Request) -> str:
    """The admin token's holder (the audit actor "admin"), checked before an admin route runs: a
    dependency of the admin router (so that no route of it can forget the check) and of each admin
    route elsewhere (async: FastAPI would run a plain function in a thread). Raises Unauthenticated,
    RateLimited, PermissionDenied (admin API disabled)."""
    return of(request).gate.check_admin(request)


Admin = Annotated[str, Depends(admin_actor)]
"""A route parameter: the admin actor, checked (FastAPI runs a request's dependency once)."""


def request_id(request: Request) -> str:
    rid: str = request.scope["state"]["request_id"]
    return rid
