"""Report queries, answered by the process that owns the data: usage summaries and read-only SQL.

A caller's SQL is first checked by ``metering.sqlcheck``: one SELECT, over the tables it may read
(a tenant: usage and its rollups), with no table function but a few that make numbers and no
function that reads outside the query's rows; what runs is the text as the engine printed it back.
Then, as a second wall, a tenant's query runs with ClickHouse's ``additional_table_filters``:
``tenant = '<tenant>'`` on each of its tables and ``0`` (no row) on every other table that exists at
that moment; and ``readonly = 1`` forbids writes and any change of setting, these filters included.
An administrator's SQL passes the same checks over every table, without the filters. Both are
bounded in time (a tenant's more tightly), memory and result rows.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from llmaas.errors import InvalidRequest, LlmaasError
from llmaas.wire import Query, Rows, SqlQuery, UsageQuery
from metering import sqlcheck
from metering.rows import utc
from metering.settings import MeteringSettings
from metering.store import SQL_DIR, Result, Store, result

_USAGE_SQL = {
    by: (SQL_DIR / "queries" / f"{name}.sql").read_text()
    for by, name in (("total", "usage_total"), ("model", "usage_by_model"), ("day", "usage_by_day"))
}


def literal(text: str) -> str:
    """``text`` as a ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tenant_filters(tables: list[str], scope: sqlcheck.Scope, tenant: str) -> str:
    """The ``additional_table_filters`` map: ``tenant``'s rows of the tables in ``scope`` (each has
    a tenant column, checked at start), no row of any other table in ``tables``."""
    own = literal(f"tenant = {literal(tenant)}")
    entries = [
        f"{literal(name)}: {own if scope.allows(name) else literal('0')}"
        for name in tables
        if name != "system.one"  # one row, no data: SELECT 1 reads it
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
        self.tenant_limits = {
            **self.limits,
            "max_execution_time": min(
                settings.metering_tenant_query_timeout_s, settings.metering_query_timeout_s
            ),
            "max_memory_usage": 500_000_000,
        }
        self.tenant_scope = sqlcheck.Scope.tenant(store.database)
        self.admin_scope = sqlcheck.Scope.administrator(store.database)
        self._functions: sqlcheck.Functions | None = None

    def load_tables(self) -> None:
        """At start, after the migrations: the engine's functions, and a tenant column in each
        table a tenant may read (the filter that confines it needs one)."""
        self._functions = sqlcheck.Functions(self.store.client)
        columns = self.store.tables()
        for name in sorted(self.tenant_scope.tables - {"system.one"}):
            if "tenant" not in columns.get(name, set()):
                raise RuntimeError(f"{name}: a table tenants may read must exist and have a tenant column")

    def answer(self, query: Query) -> Rows:
        """Runs in a reader's thread; raises InvalidRequest for SQL refused or failed."""
        if isinstance(query, UsageQuery):
            return self._usage(query)
        return self._sql(query)

    def _sql(self, query: SqlQuery) -> Rows:
        assert self._functions is not None, "load_tables() first"
        functions = self._functions
        if query.tenant is None:
            scope, settings = self.admin_scope, dict(self.limits)
        else:
            scope, settings = self.tenant_scope, dict(self.tenant_limits)

        def run(client: Client) -> Result:
            if query.tenant is not None:
                tables = [
                    f"{d}.{t}"
                    for d, t in client.query("SELECT database, name FROM system.tables").result_rows
                ]
                settings["additional_table_filters"] = tenant_filters(tables, scope, query.tenant)
            readonly = _readonly(settings)
            text = sqlcheck.checked(client, query.sql, scope, functions, readonly)
            return result(client.query(text, settings=readonly))

        return _rows(self._guarded(lambda: self.store.session(run)))

    def _usage(self, query: UsageQuery) -> Rows:
        until = query.until if query.until is not None else time.time() + 1
        parameters = {"tenant": query.tenant or "", "since": utc(query.since), "until": utc(until)}
        settings = _readonly(self.limits)
        sql = _USAGE_SQL[query.by]
        return _rows(
            self._guarded(
                lambda: self.store.session(
                    lambda client: result(client.query(sql, parameters=parameters, settings=settings))
                )
            )
        )

    @staticmethod
    def _guarded(work: Callable[[], Result]) -> Result:
        try:
            return work()
        except LlmaasError:
            raise
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            raise InvalidRequest(
                f"The query failed: {engine_message(exc)}", param="query", code="query_failed"
            ) from None


def _readonly(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` then ``readonly = 1``: last, since from it on no setting may change."""
    return {**settings, "readonly": 1}


def _is_database_error(exc: Exception) -> bool:
    """ClickHouse refused the query (the server's error, or chDB's, which carries the same text)."""
    return isinstance(exc, DatabaseError) or "DB::Exception" in str(exc)


_SCOPE = re.compile(r"(?: In scope |: While processing | SETTINGS |\(version \d).*", re.DOTALL)
_CODE = re.compile(r"^(?:Code: \d+\. )?(?:DB::Exception: )+")


def engine_message(exc: Exception) -> str:
    """What the engine said, without the query echoed back: that echo carries the SETTINGS the
    service appended (the table list of the filters) and the text as the engine rewrote it."""
    text = str(exc).strip()
    text = _CODE.sub("", re.sub(r"^.*?(Code: \d+\.)", r"\1", text, count=1, flags=re.DOTALL))
    text = _SCOPE.sub("", text).strip().rstrip(".")
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


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
