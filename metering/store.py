"""The ClickHouse side: one client (embedded chDB or a server), the schema's migrations, inserts,
rollups and report queries, all with the SQL under ``infra/clickhouse/``.

chDB runs inside this process and its client is synchronous: ingestion goes through one worker
thread of its own (the event loop never blocks, inserts never overlap), and callers' report
queries through a few other threads, each on a session of its own, so that a long report never
delays the usage behind it (chDB runs queries on separate sessions side by side). A data directory
can be opened by one process only: the metering service owns it and answers report queries for
everyone else.

chDB's tables live on ClickHouse's encrypted disk (AES-256-CTR) unless told otherwise: the key
reaches the engine through this process's environment (the configuration names the variable, never
the key), and every MergeTree table is created on it by default. Tables an older version made in
clear stay so (a warning names them); a ClickHouse server encrypts as its operator configures it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.query import QueryResult

from llmaas.settings import INFRA_DIR

log = logging.getLogger(__name__)

SQL_DIR = INFRA_DIR / "clickhouse"
_MIGRATION = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
T = TypeVar("T")

Key = tuple[str, str, Any]
"""(tenant, model, minute/hour/day): one rollup row."""


def statements(text: str) -> list[str]:
    """The statements of a .sql file: comment lines dropped, split at ``;`` ending a line."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.MULTILINE) if s.strip()]


def migrations(directory: Path = SQL_DIR) -> list[tuple[int, Path]]:
    found = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _MIGRATION.match(p.name)))
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{directory}: two migrations share a version number")
    return found


@dataclass(frozen=True)
class Result:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]


KEY_VARIABLE = "LLMAAS_CLICKHOUSE_KEY"
_SEALED = """<clickhouse>
  <storage_configuration>
    <disks>
      <plain><type>local</type><path>{path}/disks/plain/</path></plain>
      <sealed>
        <type>encrypted</type><disk>plain</disk><path>sealed/</path><algorithm>AES_256_CTR</algorithm>
        <key_hex from_env="{variable}"/>
      </sealed>
    </disks>
    <policies><sealed><volumes><main><disk>sealed</disk></main></volumes></sealed></policies>
  </storage_configuration>
  <merge_tree><storage_policy>sealed</storage_policy></merge_tree>
</clickhouse>
"""


def sealed(path: Path, key: str) -> dict[str, str]:
    """chDB's options for tables encrypted with ``key`` (64 hex digits) under ``path``."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", key):
        raise ValueError(f"{KEY_VARIABLE} must be 64 hexadecimal digits (an AES-256 key)")
    os.environ[KEY_VARIABLE] = key  # read by the engine in this process, never written to a file
    config = path / "sealed.xml"
    config.write_text(_SEALED.format(path=path, variable=KEY_VARIABLE))
    return {"config-file": str(config)}


def _client(dsn: str, database: str | None, options: dict[str, str]) -> Client:
    """A client of ``dsn``; ``options`` are chDB's (the same for every client of one engine)."""
    kwargs: dict[str, Any] = {"dsn": dsn}
    if database:
        kwargs["database"] = database
    if options:
        kwargs["chdb_options"] = options
    return clickhouse_connect.get_client(**kwargs)


class Store:
    def __init__(
        self, client: Client, database: str, dsn: str, readers: int = 3, options: dict[str, str] | None = None
    ) -> None:
        self.client = client
        self.database = database
        self._dsn = dsn
        self._options = options or {}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="clickhouse-report")
        self._rollups = {name: (SQL_DIR / "rollups" / f"{name}.sql").read_text() for name in _ROLLUPS}

    @classmethod
    def connect(
        cls, *, data_dir: Path, url: str | None, database: str, readers: int = 3, key: str | None = None
    ) -> Store:
        """Embedded chDB in ``<data_dir>/clickhouse`` (encrypted with ``key`` if given), or the server
        at ``url``; ``database`` created."""
        options: dict[str, str] = {}
        if url is None:
            path = directory(data_dir)
            _private(path)
            dsn = f"chdb://{path}"
            where = f"chDB in {path}" + (" (AES-256 encrypted disk)" if key else "")
            if key:
                options = sealed(path, key)
        else:
            dsn = url
            where = "ClickHouse server"
        bootstrap = _client(dsn, None, options)
        bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        bootstrap.close()
        log.info("%s, database %s", where, database)
        return cls(_client(dsn, database, options), database, dsn, readers, options)

    def in_clear(self) -> list[str]:
        """The tables of our database not on the encrypted disk (an older version made them)."""
        rows = self.client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree' "
            "AND storage_policy != 'sealed'",
            parameters={"db": self.database},
        ).result_rows
        return [row[0] for row in rows]

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """``work`` in the writer's thread (ingestion, migrations)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    async def report(self, work: Callable[..., T], *args: Any) -> T:
        """``work`` in a reader's thread: callers' queries, beside ingestion, never in its way."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, work, *args)

    def close(self) -> None:
        self._readers.shutdown(wait=True, cancel_futures=True)
        self._thread.shutdown(wait=True)
        self.client.close()

    # --- schema ----------------------------------------------------------------------------------

    def migrate(self, directory: Path = SQL_DIR) -> list[str]:
        """Apply the migrations not applied yet, in order; the names of those applied now."""
        self.client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
            "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
        )
        done = {row[0] for row in self.client.query("SELECT version FROM schema_migrations").result_rows}
        applied = []
        for version, path in migrations(directory):
            if version in done:
                continue
            for statement in statements(path.read_text()):
                self.client.command(statement)
            self.client.insert("schema_migrations", [[version, path.name]], column_names=["version", "name"])
            applied.append(path.name)
        return applied

    def tables(self) -> dict[str, set[str]]:
        """Every table's columns, ``database.table`` -> column names (system tables included)."""
        rows = self.client.query("SELECT database, table, name FROM system.columns").result_rows
        out: dict[str, set[str]] = {}
        for database, table, column in rows:
            out.setdefault(f"{database}.{table}", set()).add(column)
        return out

    def session(self, work: Callable[[Client], T]) -> T:
        """``work`` on a session of its own, closed after (about 15 ms to open on chDB).

        clickhouse-connect applies some calls' settings with SET and restores them after; a
        restore refused by ``readonly`` would leave one caller's tenant filter on the session for
        the next caller. A fresh session per query leaves nothing behind.
        """
        client = _client(self._dsn, self.database, self._options)
        try:
            return work(client)
        finally:
            client.close()

    # --- writing ---------------------------------------------------------------------------------

    def stored(self, table: str, column: str, ids: Sequence[Any]) -> set[Any]:
        """Which of ``ids`` are already in ``table`` (a batch delivered again)."""
        if not ids:
            return set()
        result = self.client.query(
            f"SELECT DISTINCT {column} FROM {table} WHERE {column} IN {{ids:Array({_id_type(ids)})}}",
            parameters={"ids": list(ids)},
        )
        return {row[0] for row in result.result_rows}

    def insert_new(
        self, table: str, column: str, columns: Sequence[str], rows: dict[Any, Sequence[Any]]
    ) -> set[Any]:
        """Insert the rows whose id is not in ``table`` yet, in one step of the writer's thread (no
        other sink's insert comes between the check and this one); the ids already there."""
        known = self.stored(table, column, list(rows))
        self.insert(table, columns, [row for key, row in rows.items() if key not in known])
        return known

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.client.insert(table, rows, column_names=list(columns))

    def recompute_rollups(self, touched: Iterable[tuple[str, str, dt.datetime]]) -> None:
        """Recompute the minute, hour and day rows of the (tenant, model, time) the batch touched."""
        points = set(touched)
        if not points:
            return
        version = time.time_ns()
        tenants = sorted({t for t, _, _ in points})
        for name, (floor, step) in _ROLLUPS.items():
            keys = sorted({(t, m, floor(at)) for t, m, at in points})
            start = min(k[2] for k in keys)
            end = max(k[2] for k in keys) + step
            if name == "day":  # the day rollup reads whole hours
                start, end = dt.datetime.combine(start, dt.time()), dt.datetime.combine(end, dt.time())
            parameters = {"version": version, "tenants": tenants, "keys": keys, "start": start, "end": end}
            self.client.command(self._rollups[name], parameters=parameters)

    # --- reading ---------------------------------------------------------------------------------

    def query(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> Result:
        """A query on the writer's own session (the service's SQL, never a caller's)."""
        return result(self.client.query(sql, parameters=parameters, settings=settings))


def directory(data_dir: Path) -> Path:
    """chDB's directory in ``data_dir``, made if needed (its owner's only)."""
    path = (data_dir / "clickhouse").expanduser().resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _private(root: Path) -> None:
    """chDB's directory and files for this process's user only (0700/0600), also those an earlier
    version left readable by everyone."""
    for path in (root, *root.rglob("*")):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        private = 0o700 if path.is_dir() else mode & 0o700
        if mode != private:
            path.chmod(private)


def result(result: QueryResult) -> Result:
    types = [t.name for t in result.column_types]
    return Result(list(result.column_names), types, [list(r) for r in result.result_rows])


def _minute(at: dt.datetime) -> dt.datetime:
    return at.replace(second=0, microsecond=0)


def _hour(at: dt.datetime) -> dt.datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _day(at: dt.datetime) -> dt.date:
    return at.date()


def _id_type(ids: Sequence[Any]) -> str:
    return "UInt64" if isinstance(ids[0], int) else "String"


_ROLLUPS: dict[str, tuple[Callable[[dt.datetime], Any], dt.timedelta]] = {
    "minute": (_minute, dt.timedelta(minutes=1)),
    "hour": (_hour, dt.timedelta(hours=1)),
    "day": (_day, dt.timedelta(days=1)),
}
