"""What the console's pages show, from the metering rollups (never raw rows for totals or charts)
and the edge's own copies of the directory and the catalog.

Every query goes to metering as a ``SqlQuery`` with the session's tenant, so that a tenant's page
reads its rows only by the same database-level filter as tenant SQL; the operator's carries the
tenant chosen in the URL, or none (every tenant). URL values reach SQL only after validation
against a strict pattern (``Filters.of``): a page never splices free text into a query.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Any, get_args

from edge.keyring import shown_state
from edge.lifecycle import withheld
from edge.pipeline import Pipeline
from edge.reports import rows, since_epoch
from llmaas import catalog
from llmaas.catalog import Catalog
from llmaas.errors import InvalidRequest
from llmaas.tenants import ApiKey, Tenant
from llmaas.wire import SqlQuery, UsageStatus

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
_CURSOR = re.compile(r"(\d{1,16})\.([A-Za-z0-9_-]{1,64})")
MAX_DAYS = 400
MAX_HISTORY_S = 31 * 86_400.0
"""The longest time range one history page spans (the query reads that range of raw rows)."""
PAGE_ROWS = 50
STATUSES = get_args(UsageStatus)


def check_name(value: str, param: str) -> str:
    """``value`` if it is a plain name (a model, tenant or key id) that may go into a page's SQL."""
    if not _NAME.fullmatch(value):
        raise InvalidRequest(f"'{param}' is not a valid name.", param=param)
    return value


@dataclass(frozen=True)
class Filters:
    """The filters in a page's URL, carried from page to page."""

    days: int = 30
    model: str | None = None
    tenant: str | None = None
    """The operator's choice of tenant (a tenant's session has its own, whatever the URL says)."""
    since: str = "24h"
    """Request history: from (a duration back from now, or an ISO 8601 time) ..."""
    until: str | None = None
    """... to (now if None)."""
    status: str | None = None
    key: str | None = None

    @classmethod
    def of(cls, params: dict[str, str], operator: bool) -> Filters:
        raw_days = params.get("days") or "30"
        if not raw_days.isdigit() or not 1 <= int(raw_days) <= MAX_DAYS:
            raise InvalidRequest(f"'days' must be a whole number from 1 to {MAX_DAYS}.", param="days")
        model = params.get("model") or None
        tenant = (params.get("tenant") or None) if operator else None
        key = params.get("key") or None
        for name, value in (("model", model), ("tenant", tenant), ("key", key)):
            if value is not None:
                check_name(value, name)
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"'status' must be one of {', '.join(STATUSES)}.", param="status")
        since, until = params.get("since") or "24h", params.get("until") or None
        for name, moment in (("since", since), ("until", until)):
            if moment is not None:
                since_epoch(moment, time.time(), name)  # a bad time is a 400 on any page
        return cls(
            days=int(raw_days), model=model, tenant=tenant, since=since, until=until, status=status, key=key
        )

    def query(self) -> dict[str, str]:
        """The URL parameters that say these filters (defaults left out)."""
        out = {"days": str(self.days)} if self.days != 30 else {}
        if self.since != "24h":
            out["since"] = self.since
        for name in ("until", "model", "status", "key", "tenant"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out

    def window(self, now: float) -> tuple[float, float]:
        """The history's time range, at most ``MAX_HISTORY_S`` long (ending at ``until``)."""
        end = since_epoch(self.until, now, "until") if self.until else now
        start = max(since_epoch(self.since, now, "since"), end - MAX_HISTORY_S)
        if start >= end:
            raise InvalidRequest("'since' must come before 'until'.", param="since")
        return start, end


async def _rows(pipeline: Pipeline, sql: str, tenant: str | None) -> list[dict[str, Any]]:
    answer = await rows(pipeline, SqlQuery(sql=sql, tenant=tenant))
    return [dict(zip(answer.columns, row, strict=True)) for row in answer.rows]


_SUMS = (
    "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cost_nano", "energy_kwh",
    "errors", "blocked", "rejected",
)  # fmt: skip
_TOTALS = """
SELECT {columns}
FROM usage_day FINAL
WHERE day >= toStartOfMonth(today()){model}
"""


def _model_clause(model: str | None) -> str:
    return f" AND model = '{model}'" if model else ""  # validated against _NAME: no quote inside


async def overview(pipeline: Pipeline, tenant: str | None, filters: Filters) -> dict[str, dict[str, Any]]:
    """Today's and this month's totals, in one query."""
    columns = ", ".join(f"sumIf({c}, day = today()) AS today_{c}, sum({c}) AS month_{c}" for c in _SUMS)
    found = await _rows(pipeline, _TOTALS.format(columns=columns, model=_model_clause(filters.model)), tenant)
    row = found[0] if found else {}
    return {when: _totals({c: row.get(f"{when}_{c}") for c in _SUMS}) for when in ("today", "month")}


def _totals(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: int(row.get(k) or 0) for k in _SUMS if k not in ("cost_nano", "energy_kwh")}
    out["cost_eur"] = int(row.get("cost_nano") or 0) / 1e9
    out["energy_kwh"] = float(row.get("energy_kwh") or 0.0)
    return out


_BY_DAY = """
SELECT
    day, model, sum(requests) AS requests, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(cost_nano) AS cost_nano,
    sum(energy_kwh) AS energy_kwh, sum(errors) AS errors
FROM usage_day FINAL
WHERE day >= today() - {days}{model}
GROUP BY day, model
ORDER BY day, model
"""


async def usage_by_day(pipeline: Pipeline, tenant: str | None, filters: Filters) -> list[dict[str, Any]]:
    sql = _BY_DAY.format(days=filters.days - 1, model=_model_clause(filters.model))
    found = await _rows(pipeline, sql, tenant)
    for row in found:
        row["cost_eur"] = int(row.pop("cost_nano") or 0) / 1e9
    return found


def chart(
    found: list[dict[str, Any]],
    x: str,
    fields: str | tuple[str, ...],
    *,
    step_s: int,
    points: int,
    unit: str = "",
    missing: float | None = None,
) -> dict[str, Any]:
    """Series for uPlot over the whole period: the last ``points`` steps of ``step_s`` (days or
    hours, as epoch seconds, up to the current one), one series per model and field (labelled with
    the field's last word when there are several: ``p50 <model>``), ``missing`` where a model has no
    row (0 for counts; None, a gap, for rates)."""
    several = (fields,) if isinstance(fields, str) else fields
    last = int(time.time()) // step_s * step_s
    xs = [last - step_s * n for n in range(points - 1, -1, -1)]
    names = sorted({str(r["model"]) for r in found})
    at = {(int(_utc(str(r[x])).timestamp()), str(r["model"])): r for r in found}
    series = []
    for field in several:
        prefix = f"{field.split('_')[1]} " if len(several) > 1 else ""
        for m in names:
            values = [at[(t, m)][field] if (t, m) in at else missing for t in xs]
            series.append({"label": prefix + m, "values": values})
    return {"unit": unit, "x": xs, "series": series}  # fmt: skip


def _utc(text: str) -> dt.datetime:
    """A date or time as metering sends them (ISO 8601, UTC)."""
    return dt.datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=dt.UTC)


_LATENCY = """
SELECT
    hour, model, sum(answered) AS answers,
    round(sum(ttft_p50_ms * answered) / sum(answered), 1) AS ttft_p50_ms,
    round(sum(ttft_p95_ms * answered) / sum(answered), 1) AS ttft_p95_ms,
    round(sum(decode_tokens) / greatest(sum(decode_s), 0.001), 1) AS tokens_per_s
FROM usage_hour FINAL
WHERE hour >= toStartOfHour(now()) - INTERVAL {days} DAY AND answered > 0{model}
GROUP BY hour, model
ORDER BY hour, model
"""


async def latency(pipeline: Pipeline, tenant: str | None, filters: Filters) -> list[dict[str, Any]]:
    """First-token latency (p50, p95) and decode speed per model and hour, from the hour rollup.
    One tenant's hours are exact; across tenants (the operator's view) the percentiles are the
    tenants' averaged by their answered requests (percentiles do not add up)."""
    sql = _LATENCY.format(days=filters.days, model=_model_clause(filters.model))
    return await _rows(pipeline, sql, tenant)


def keys(all_keys: list[ApiKey], tenant: str | None, now: float) -> list[dict[str, Any]]:
    """A tenant's keys (the operator's choice, or all), newest first; never a secret or its hash."""
    shown = [k for k in all_keys if tenant in (None, k.tenant)]
    shown.sort(key=lambda k: (k.tenant, -k.created_at))
    return [
        {
            "id": k.id,
            "tenant": k.tenant,
            "name": k.name,
            "state": shown_state(k, now),
            "active": k.state == "active" and k.usable_at(now),
            "created": day(k.created_at),
            "expires": day(k.expires_at) if k.expires_at else "",
            "models": ", ".join(k.models) or "all",
            "successor": k.successor or "",
        }
        for k in shown
    ]


def models(models_: Catalog, tenant: Tenant | None) -> list[dict[str, Any]]:
    """The catalog; for a tenant, whether it may use each (a retired model only if reactivated
    for it; a key may narrow this further, as the Keys page shows)."""
    today = catalog.today()
    out = []
    for m in sorted(models_.models.values(), key=lambda m: m.name):
        state = m.state(today)
        out.append({
            "name": m.name,
            "publisher": m.publisher,
            "kind": m.kind or "",
            "state": state,
            "dsp": m.dsp.isoformat() if m.dsp else "",
            "sunset": m.sunset.isoformat() if m.sunset else "",
            "successor": m.successor or "",
            "context": m.context_length or "",
            "usable": "" if tenant is None else ("no" if withheld(m, state, tenant) else "yes"),
        })  # fmt: skip
    return out


def day(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M")


_HISTORY = """
SELECT
    toUnixTimestamp64Milli(at) AS at_ms, at, request_id, tenant, token_id, model, endpoint, status,
    http_status, error_code, prompt_tokens, completion_tokens, ttft_ms, duration_ms, cost_nano
FROM usage
WHERE at >= fromUnixTimestamp64Milli(toInt64({start})) AND at < fromUnixTimestamp64Milli(toInt64({end})){more}
ORDER BY at DESC, request_id DESC
LIMIT {limit}
"""


async def history(
    pipeline: Pipeline, tenant: str | None, filters: Filters, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of requests, newest first, after ``cursor`` (the last row of the page before, as
    ``<at ms>.<request id>``), and the next page's cursor: keyset pagination, one query a page."""
    start, end = filters.window(time.time())
    more = _model_clause(filters.model)
    if filters.status:
        more += f" AND status = '{filters.status}'"  # one of STATUSES
    if filters.key:
        more += f" AND token_id = '{filters.key}'"  # validated against _NAME
    if cursor:
        found = _CURSOR.fullmatch(cursor)
        if found is None:
            raise InvalidRequest("'cursor' is not one this page gave.", param="cursor")
        at_ms, request_id = found.groups()
        more += f" AND (at, request_id) < (fromUnixTimestamp64Milli(toInt64({at_ms})), '{request_id}')"
    sql = _HISTORY.format(start=int(start * 1000), end=int(end * 1000), more=more, limit=PAGE_ROWS + 1)
    found_rows = await _rows(pipeline, sql, tenant)
    page, rest = found_rows[:PAGE_ROWS], found_rows[PAGE_ROWS:]
    for row in page:
        row["cost_eur"] = int(row.pop("cost_nano") or 0) / 1e9
    last = page[-1] if rest else None
    return page, f"{last['at_ms']}.{last['request_id']}" if last else None


_ALERT_HISTORY = """
SELECT at, tenant, rule_id, kind, state, value, threshold, model
FROM alert_events
WHERE at >= now() - INTERVAL {days} DAY
ORDER BY at DESC
LIMIT 100
"""


async def alert_history(pipeline: Pipeline, tenant: str | None, filters: Filters) -> list[dict[str, Any]]:
    """The last 100 firings and resolutions within the period, newest first."""
    return await _rows(pipeline, _ALERT_HISTORY.format(days=filters.days), tenant)
