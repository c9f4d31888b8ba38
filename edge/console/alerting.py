"""The console's side of alert rules: a tenant's rules and their state, read from and written to
the KV buckets that the metering service evaluates (``llmaas.alerts``, ``metering.alerts``)."""

from __future__ import annotations

import secrets
import time

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from llmaas import alerts, streams
from llmaas.alerts import AlertRule, AlertState
from llmaas.errors import Conflict
from llmaas.wire import AlertKind


class AlertBook:
    def __init__(self) -> None:
        self._js: JetStreamContext | None = None
        self._rules: KeyValue | None = None
        self._state: KeyValue | None = None

    async def open(self, nc: Client, policy: streams.Policy) -> None:
        self._js = nc.jetstream()
        self._rules = await streams.ensure_bucket(self._js, streams.ALERT_RULES, policy)
        self._state = await streams.ensure_bucket(self._js, streams.ALERT_STATE, policy)

    async def rules(self, tenant: str | None) -> list[tuple[AlertRule, AlertState | None]]:
        """``tenant``'s rules (every tenant's: None), oldest first, each with its state if evaluated."""
        assert self._js is not None and self._state is not None
        found = []
        for rule in await self._rules_of(tenant):
            state, _ = await alerts.read_state(self._state, alerts.key(rule.tenant, rule.id))
            found.append((rule, state))
        return found

    async def _rules_of(self, tenant: str | None) -> list[AlertRule]:
        assert self._js is not None
        keys = f"{tenant}.*" if tenant else ">"
        found = [
            alerts.rule_decoder.decode(raw)
            async for _, raw in streams.entries(self._js, streams.ALERT_RULES, keys)
        ]
        return sorted(found, key=lambda rule: rule.created_at)

    async def add(
        self,
        *,
        tenant: str,
        kind: AlertKind,
        threshold: float,
        window_s: float,
        min_requests: int,
        model: str | None,
        budget_eur: float | None,
        by: str,
    ) -> AlertRule:
        """A new rule of ``tenant``'s; Conflict past ``alerts.RULES_PER_TENANT``."""
        assert self._rules is not None
        if len(await self._rules_of(tenant)) >= alerts.RULES_PER_TENANT:
            raise Conflict(
                f"A tenant has at most {alerts.RULES_PER_TENANT} alert rules; delete one first.",
                code="too_many_alert_rules",
            )
        rule = AlertRule(
            id=secrets.token_hex(6),
            tenant=tenant,
            kind=kind,
            threshold=threshold,
            window_s=window_s,
            min_requests=min_requests,
            model=model,
            budget_eur=budget_eur,
            created_at=time.time(),
            created_by=by,
        )
        await self._rules.create(alerts.key(tenant, rule.id), msgspec.json.encode(rule))
        return rule

    async def remove(self, tenant: str, rule_id: str) -> bool:
        """Whether ``tenant`` had the rule (gone; its state goes at metering's next round)."""
        assert self._rules is not None
        key = alerts.key(tenant, rule_id)
        try:
            await self._rules.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return False
        await self._rules.delete(key)
        return True
