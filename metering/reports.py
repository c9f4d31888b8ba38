"""Report queries, answered by the process that owns the data: usage summaries and read-only SQL.

A tenant's SQL runs with ClickHouse's ``additional_table_filters``: the engine adds
``tenant = '<tenant>'`` to every read of a table that has a tenant column, and ``0`` (no row) to
every other table, system tables included; ``readonly = 1`` forbids writes, table functions
(``file``, ``url``, ``remote``...) and changing any setting, these filters included. So whatever the
SQL says (subqueries, joins, views, unions), it reads only its tenant's rows. An administrator's
SQL is read-only too, without the filters. Both are bounded in time, memory and result rows.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import time
import uuid
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError

from llmaas.errors import InvalidRequest, LlmaasError
from llmaas.wire import Query, Rows, SqlQuery, UsageQuery
from metering.rows import utc
from metering.settings import MeteringSettings
from metering.store import SQL_DIR, Result, Store

_USAGE_SQL = {
    by: (SQL_DIR / "queries" / f"{name}.sql").read_text()
    for by, name in (("total", "usage_total"), ("model", "usage_by_model"), ("day", "usage_by_day"))
}


def literal(text: str) -> str:
    """``text`` as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tenant_filters(tables: dict[str, set[str]], tenant: str) -> str:
    """The ``additional_table_filters`` map that confines every table to ``tenant``'s rows."""
    own = f"tenant = {literal(tenant)}"
    entries = [
        f"{literal(name)}: {literal(own if 'tenant' in columns else '0')}" for name, columns in tables.items()
    ]
    return "{" + ", ".join(sorted(entries)) + "}"


class Reports:
    def __init__(self, store: Store, settings: MeteringSettings) -> None:
        self.store = store
        self.limits: dict[str, Any] = {
            "max_execution_time": settings.metering_query_timeout_s,
            "max_result_rows": settings.metering_max_result_rows,
            "result_overflow_mode": "throw",
            "max_memory_usage": 2_000_000_000,
        }
        self._tables: dict[str, set[str]] = {}

    def load_tables(self) -> None:
        """Every table there is (after the migrations): a tenant's filters name each one."""
        self._tables = self.store.tables()

    def answer(self, query: Query) -> Rows:
        """Runs in the store's thread; raises InvalidRequest for SQL the database refused."""
        if isinstance(query, UsageQuery):
            return self._usage(query)
        return self._sql(query)

    def _sql(self, query: SqlQuery) -> Rows:
        settings = dict(self.limits)
        if query.tenant is not None:
            settings["additional_table_filters"] = tenant_filters(self._tables, query.tenant)
        return _rows(self._run(query.sql, None, _readonly(settings)))

    def _usage(self, query: UsageQuery) -> Rows:
        until = query.until if query.until is not None else time.time() + 1
        parameters = {"tenant": query.tenant or "", "since": utc(query.since), "until": utc(until)}
        return _rows(self._run(_USAGE_SQL[query.by], parameters, _readonly(self.limits)))

    def _run(self, sql: str, parameters: dict[str, Any] | None, settings: dict[str, Any]) -> Result:
        try:
            return self.store.read(sql, parameters, settings)
        except LlmaasError:
            raise
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            raise InvalidRequest(
                f"The query failed: {_first_line(exc)}", param="query", code="query_failed"
            ) from None


def _readonly(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` then ``readonly = 1``: last, since from it on no setting may change."""
    return {**settings, "readonly": 1}


def _is_database_error(exc: Exception) -> bool:
    """ClickHouse refused the query (the server's error, or chDB's, which carries the same text)."""
    return isinstance(exc, DatabaseError) or "DB::Exception" in str(exc)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:500]


def _rows(result: Result) -> Rows:
    return Rows(
        columns=result.columns, types=result.types, rows=[[_plain(v) for v in row] for row in result.rows]
    )


def _plain(value: Any) -> Any:
    """A value as JSON has it: times as ISO 8601 (UTC), exact decimals as text."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
