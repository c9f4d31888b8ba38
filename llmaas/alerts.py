"""Tenants' alert rules and their state, as kept in the KV buckets ``llmaas_alert_rules`` (under
``<tenant>.<rule id>``, written by the edges) and ``llmaas_alert_state`` (same keys, written by the
metering service that evaluates the rules). The events of a rule that starts or stops firing are
``wire.AlertEvent``.

A rule fires while what it measures is above its threshold over its window, with at least
``min_requests`` requests in the window (fewer: too little to judge, so it does not fire):

- ``ttft_p95_ms``: the 95th percentile of the time to first token of the answered requests;
- ``error_rate_pct``: the share of requests that ended in a server error;
- ``tokens_per_hour``: output tokens in the window, per hour;
- ``budget_used_pct``: this month's cost against ``budget_eur`` (the tier's monthly budget when
  the rule was made); its window is the calendar month and ``min_requests`` does not apply.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from llmaas.wire import AlertKind

KINDS: tuple[AlertKind, ...] = get_args(AlertKind)
UNITS: dict[AlertKind, str] = {
    "ttft_p95_ms": "ms",
    "error_rate_pct": "%",
    "budget_used_pct": "%",
    "tokens_per_hour": "tokens/h",
}
MIN_WINDOW_S = 60.0
MAX_WINDOW_S = 86_400.0
RULES_PER_TENANT = 20
"""A tenant's rules at most: each costs the evaluator a query per round."""


class AlertRule(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant: str
    kind: AlertKind
    threshold: float
    window_s: float = 3600.0
    min_requests: int = 10
    model: str | None = None
    budget_eur: float | None = None
    created_at: float = 0.0
    created_by: str = ""


class AlertState(msgspec.Struct, frozen=True, kw_only=True):
    state: Literal["firing", "resolved"]
    since: float
    value: float


rule_decoder = msgspec.json.Decoder(AlertRule)
state_decoder = msgspec.json.Decoder(AlertState)


def key(tenant: str, rule_id: str) -> str:
    return f"{tenant}.{rule_id}"


async def read_state(states: KeyValue, rule_key: str) -> tuple[AlertState | None, int | None]:
    """The rule's state and its revision (for compare-and-set); (None, None) before its first change."""
    try:
        entry = await states.get(rule_key)
    except (KeyNotFoundError, KeyDeletedError):
        return None, None
    return state_decoder.decode(entry.value or b""), entry.revision
