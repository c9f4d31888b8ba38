"""Who may call, and how much: the door's parts, opened and closed together.

Every ``/v1`` request passes here before anything is published: ``keys`` says who calls (API keys,
``edge.keys``), ``models`` which model answers them and the most it may produce (``edge.models``),
``limiter`` takes its share of the tier's limits (``edge.limits``); ``admins`` checks the admin
token (``edge.admins``). Each is a function of what the caller presented and where from, returning
values (a principal, a model and its notices, a grant and its headers): the HTTP routes
(``edge.context``) and the NATS door put them on their answers.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from edge.admins import AdminToken
from edge.auth_failures import FailedLogins
from edge.keys import Keys
from edge.limits import Limiter
from edge.models import Models
from edge.settings import EdgeSettings
from llmaas import catalog, streams, tiers
from llmaas.audit import AuditLog
from llmaas.directory import Directory
from llmaas.pricing import PriceList


class Gate:
    def __init__(self, settings: EdgeSettings, edge_id: str) -> None:
        self.directory = Directory()
        self.tiers = tiers.load(settings.tiers_file)
        self.catalog = catalog.load(settings.catalog_file)
        self.streams = streams.Policy.of(settings)
        self.audit = AuditLog(edge_id, policy=self.streams)
        self.failures = FailedLogins(
            self.audit, window_s=settings.auth_failure_window_s, allowed=settings.auth_failures_allowed
        )
        self.opened = asyncio.Event()
        """Set once the directory, the limits and the audit trail are open."""
        self.keys = Keys(self.directory, self.tiers, self.failures, self.audit, self.opened)
        self.models = Models(self.catalog, settings.default_reserved_tokens)
        self.limiter = Limiter(PriceList.load(settings.prices_file), settings.in_flight_lease_s)
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.admins = AdminToken(token, self.failures, self.opened)

    @property
    def ready(self) -> bool:
        return self.opened.is_set()

    async def open(self, nc: Client) -> None:
        await asyncio.gather(
            self.directory.open(nc, self.streams), self.limiter.open(nc, self.streams), self.audit.open(nc)
        )
        self.failures.start()
        self.opened.set()

    async def close(self) -> None:
        await self.limiter.close()
        await self.failures.close()
        await self.audit.close()
        await self.directory.close()
