"""Tenants' alert rules, evaluated on a schedule from the metering data, beside ingestion.

Every ``metering_alerts_every_s`` the evaluator reads the rules (KV ``llmaas_alert_rules``),
measures each over its window with one query on a reader's session (``Store.report``: never on
the writer's thread, so evaluation never holds ingestion back), and compares it with the rule's
state (KV ``llmaas_alert_state``). A rule that starts or stops firing changes its state with
compare-and-set (two metering replicas evaluating the same round: one wins, the other sees the
new state and does nothing), then its event is stored for the console's history (table
``alert_events``) and published on ``llmaas.v1.alerts.<tenant>`` (stream LLMAAS_ALERTS, message id
``<rule>:<state revision>``), where a webhook or mail sender subscribes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from typing import Any

import msgspec
from clickhouse_connect.driver.client import Client
from nats.aio.client import Client as Nats
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from llmaas import alerts, streams, subjects
from llmaas.alerts import AlertRule, AlertState
from llmaas.wire import AlertEvent
from metering.store import Store

log = logging.getLogger(__name__)

_MEASURES = {
    # (requests in the window, the value) for a tenant, from {start} to {end}
    "ttft_p95_ms": (
        "count(), quantileExactIf(0.95)(assumeNotNull(ttft_ms), status = 'ok' AND ttft_ms IS NOT NULL)"
    ),
    "error_rate_pct": "count(), 100 * countIf(status = 'error') / greatest(count(), 1)",
    "tokens_per_hour": "count(), sum(completion_tokens) * 3600 / {window:Float64}",
}
_WINDOWED = """
SELECT {measure} FROM usage
WHERE tenant = {tenant:String} AND at >= {start:DateTime64(3, 'UTC')} AND at < {end:DateTime64(3, 'UTC')}
  AND ({model:String} = '' OR model = {model:String})
"""
_MONTH_COST = """
SELECT sum(requests), sum(cost_nano) / 1e9 FROM usage_day FINAL
WHERE tenant = {tenant:String} AND day >= toStartOfMonth({end:DateTime64(3, 'UTC')})
  AND day <= toDate({end:DateTime64(3, 'UTC')}) AND ({model:String} = '' OR model = {model:String})
"""
_EVENT_COLUMNS = ("at", "tenant", "rule_id", "kind", "state", "value", "threshold", "model", "window_s")


def measure(client: Client, rule: AlertRule, now: float) -> tuple[int, float]:
    """(requests, value) of ``rule`` over its window ending at ``now``."""
    end = dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None)
    parameters: dict[str, Any] = {"tenant": rule.tenant, "model": rule.model or "", "end": end}
    if rule.kind == "budget_used_pct":
        requests, cost = client.query(_MONTH_COST, parameters=parameters).result_rows[0]
        return int(requests or 0), 100 * float(cost or 0) / rule.budget_eur if rule.budget_eur else 0.0
    parameters |= {"start": end - dt.timedelta(seconds=rule.window_s), "window": rule.window_s}
    sql = _WINDOWED.replace("{measure}", _MEASURES[rule.kind])
    requests, value = client.query(sql, parameters=parameters).result_rows[0]
    return int(requests or 0), float(value or 0.0)


def firing(rule: AlertRule, requests: int, value: float) -> bool:
    enough = rule.kind == "budget_used_pct" or requests >= rule.min_requests
    return enough and value > rule.threshold


class Evaluator:
    def __init__(self, store: Store, every_s: float, policy: streams.Policy) -> None:
        self.store = store
        self.every_s = every_s
        self.policy = policy
        self._js: JetStreamContext | None = None
        self._rules: KeyValue | None = None
        self._state: KeyValue | None = None

    async def open(self, nc: Nats) -> None:
        js = self._js = nc.jetstream()
        await streams.ensure(js, streams.ALERTS, self.policy)
        self._rules = await streams.ensure_bucket(js, streams.ALERT_RULES, self.policy)
        self._state = await streams.ensure_bucket(js, streams.ALERT_STATE, self.policy)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.evaluate(time.time())
            except (NatsError, TimeoutError) as exc:  # the next round tries again
                log.warning("alert rules not evaluated (%s)", type(exc).__name__)

    async def evaluate(self, now: float) -> list[AlertEvent]:
        """One round: every rule measured at ``now``; the events of those whose state changed."""
        assert self._js is not None and self._state is not None
        changed = []
        live = set()
        async for key, raw in streams.entries(self._js, streams.ALERT_RULES, ">"):
            live.add(key)
            rule = alerts.rule_decoder.decode(raw)
            try:
                requests, value = await self.store.report(
                    self.store.session, functools.partial(measure, rule=rule, now=now)
                )
            except Exception as exc:  # the store's failure, or a rule it cannot run: the others go on
                log.warning("alert rule %s of %s not measured (%s)", rule.id, rule.tenant, exc)
                continue
            event = await self._transition(rule, firing(rule, requests, value), value, now)
            if event is not None:
                changed.append(event)
        async for key, _ in streams.entries(self._js, streams.ALERT_STATE, ">"):
            if key not in live:  # its rule was deleted (by an edge, which may not write states)
                await self._state.delete(key)
        return changed

    async def _transition(
        self, rule: AlertRule, now_firing: bool, value: float, now: float
    ) -> AlertEvent | None:
        assert self._state is not None and self._js is not None
        key = alerts.key(rule.tenant, rule.id)
        before, revision = await alerts.read_state(self._state, key)
        was_firing = before is not None and before.state == "firing"
        if now_firing == was_firing:
            return None
        state = AlertState(state="firing" if now_firing else "resolved", since=now, value=value)
        try:
            if revision is None:
                written = await self._state.create(key, msgspec.json.encode(state))
            else:
                written = await self._state.update(key, msgspec.json.encode(state), last=revision)
        except KeyWrongLastSequenceError:
            return None  # another evaluator recorded this change first
        event = AlertEvent(
            rule_id=rule.id, tenant=rule.tenant, kind=rule.kind, state=state.state, value=value,
            threshold=rule.threshold, at=now, model=rule.model, window_s=rule.window_s,
        )  # fmt: skip
        row = [
            dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None), rule.tenant, rule.id, rule.kind,
            state.state, value, rule.threshold, rule.model or "", rule.window_s,
        ]  # fmt: skip
        await self.store.report(
            self.store.session, lambda c: c.insert("alert_events", [row], column_names=list(_EVENT_COLUMNS))
        )
        await self._js.publish(
            subjects.alerts(rule.tenant),
            msgspec.json.encode(event),
            headers={"Nats-Msg-Id": f"{key}:{written}"},
        )
        return event
