"""Events as ClickHouse rows: usage priced with the price list in force and given its energy.

A usage row is priced once, when it is stored, with the version of ``infra/prices.toml`` valid on
the day the request finished, and keeps that version's date: a new price list applies to requests
from its ``valid_from`` on and never changes a stored row, so a past bill stays what it was.
Energy is tokens x the model's kWh per million tokens from the catalog (its basis, measured or
estimated, kept beside it); a model outside the catalog gets 0 kWh with basis ``unknown``.

Times are naive UTC datetimes: the metering process runs with TZ=UTC (``metering.service``), so
clickhouse-connect's conversions agree with the tables' 'UTC' columns on chDB and on a server.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from llmaas.audit import AuditEvent
from llmaas.catalog import Catalog
from llmaas.pricing import PriceList
from llmaas.wire import SecurityEvent, UsageEvent

USAGE_COLUMNS = (
    "request_id", "at", "tenant", "token_id", "model", "endpoint", "status", "http_status", "error_code",
    "finish_reason", "worker", "edge", "batch", "batch_id", "prompt_tokens", "completion_tokens",
    "reasoning_tokens", "cached_tokens", "ttft_ms", "duration_ms", "price_version", "cost_nano", "energy_kwh",
    "energy_basis",
)  # fmt: skip
AUDIT_COLUMNS = (
    "seq", "at", "actor", "action", "target", "outcome", "source", "detail", "edge", "prev", "hash",
)  # fmt: skip
SECURITY_COLUMNS = (
    "request_id", "at", "tenant", "token_id", "model", "layer", "rules", "prompt_sha256", "guard",
)  # fmt: skip


def utc(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Pricer:
    prices: PriceList
    catalog: Catalog

    def usage_row(self, e: UsageEvent) -> list[Any]:
        at = utc(e.at)
        version = self.prices.at(at.date())
        cost = version.cost_nano(e.prompt_tokens, e.completion_tokens, e.reasoning_tokens, batch=e.batch)
        model = self.catalog.get(e.model)
        if model is not None and model.energy_kwh_per_mtok is not None:
            tokens = e.prompt_tokens + e.completion_tokens
            energy, basis = tokens * model.energy_kwh_per_mtok / 1e6, model.energy_basis or "estimated"
        else:
            energy, basis = 0.0, "unknown"
        return [
            e.request_id, at, e.tenant, e.token_id, e.model, e.endpoint, e.status, e.http_status,
            e.error_code, e.finish_reason, e.worker, e.edge, e.batch, e.batch_id, e.prompt_tokens,
            e.completion_tokens, e.reasoning_tokens, e.cached_tokens, e.ttft_ms, e.duration_ms,
            version.valid_from, cost, energy, basis,
        ]  # fmt: skip


def audit_row(seq: int, e: AuditEvent) -> list[Any]:
    return [
        seq,
        utc(e.at),
        e.actor,
        e.action,
        e.target,
        e.outcome,
        e.source,
        e.detail,
        e.edge,
        e.prev,
        e.hash,
    ]


def security_row(e: SecurityEvent) -> list[Any]:
    return [
        e.request_id,
        utc(e.at),
        e.tenant,
        e.token_id,
        e.model,
        e.layer,
        e.rules,
        e.prompt_sha256,
        e.guard,
    ]
