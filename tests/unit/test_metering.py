"""Metering against a real chDB: schema, prices and energy, rollups under duplicates, tenant isolation.

One chDB store for the module (chDB opens one data directory per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import msgspec
import nats
import pytest
from nats.js.api import DeliverPolicy

from llmaas import alerts, catalog, streams, subjects
from llmaas.alerts import AlertRule
from llmaas.errors import InvalidRequest, RateLimited
from llmaas.nats_server import NatsServer
from llmaas.pricing import PriceList
from llmaas.wire import AlertEvent, SqlQuery, UsageEvent, UsageQuery
from metering.alerts import Evaluator
from metering.reports import Reports, literal, tenant_filters
from metering.rows import USAGE_COLUMNS, Pricer, utc
from metering.service import MeteringService, use_utc
from metering.settings import MeteringSettings
from metering.store import SQL_DIR, Store, statements

_TODAY = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=30, microsecond=0)
DAY1 = (_TODAY - dt.timedelta(days=20)).timestamp()
"""Recent (the minute rollup keeps 30 days), under the first price version."""
DAY2 = (_TODAY - dt.timedelta(days=5)).timestamp()
RAISED_ON = (_TODAY - dt.timedelta(days=10)).date()
PRICES = f"""
[[version]]
valid_from = 2026-01-01
input_eur_per_m = 0.9
output_eur_per_m = 4.0
reasoning_eur_per_m = 21.0
batch_factor = 0.5

[[version]]
valid_from = {RAISED_ON.isoformat()}
input_eur_per_m = 1.0
output_eur_per_m = 5.0
reasoning_eur_per_m = 25.0
batch_factor = 0.5
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    use_utc()
    root = tmp_path_factory.mktemp("chdb")
    s = Store.connect(data_dir=root, url=None, database="llmaas")
    s.migrate()
    yield s
    s.client.close()


@pytest.fixture(scope="module")
def pricer(tmp_path_factory: pytest.TempPathFactory) -> Pricer:
    path = tmp_path_factory.mktemp("prices") / "prices.toml"
    path.write_text(PRICES)
    return Pricer(PriceList.load(path), catalog.load())


def event(rid: str, tenant: str = "acme", at: float = DAY1, **fields: object) -> UsageEvent:
    base: dict[str, object] = {
        "model": "gemma3:27b", "endpoint": "chat", "status": "ok", "http_status": 200,
        "prompt_tokens": 1000, "completion_tokens": 2000, "token_id": "k1",
    }  # fmt: skip
    return UsageEvent(request_id=rid, at=at, tenant=tenant, **{**base, **fields})  # type: ignore[arg-type]


def store_events(store: Store, pricer: Pricer, events: list[UsageEvent]) -> None:
    """What the consumer does with a batch: skip stored ids, insert, recompute the rollups."""
    known = store.stored("usage", "request_id", [e.request_id for e in events])
    rows = [pricer.usage_row(e) for e in events]
    store.insert(
        "usage", USAGE_COLUMNS, [r for r, e in zip(rows, events, strict=True) if e.request_id not in known]
    )
    store.recompute_rollups([(e.tenant, e.model, r[1]) for e, r in zip(events, rows, strict=True)])


def test_statements_split_and_migrations_apply_once(store: Store) -> None:
    assert statements("-- a comment; with a semicolon\nSELECT 1;\nSELECT ';'\n;\n") == [
        "SELECT 1",
        "SELECT ';'",
    ]
    assert store.migrate() == []  # the fixture applied them
    names = {row[0] for row in store.client.query("SELECT name FROM schema_migrations").result_rows}
    assert names == {p.name for p in SQL_DIR.glob("[0-9][0-9][0-9]_*.sql")}
    tables = store.tables()
    for table in ("usage", "usage_minute", "usage_hour", "usage_day", "audit", "security_events"):
        assert f"llmaas.{table}" in tables


def test_rows_are_priced_with_the_version_in_force_and_carry_energy(pricer: Pricer) -> None:
    old = pricer.usage_row(event("p1", at=DAY1, reasoning_tokens=500))
    new = pricer.usage_row(event("p2", at=DAY2, reasoning_tokens=500))
    column = USAGE_COLUMNS.index
    # 1000 x 0.9 + 1500 x 4 + 500 x 21 = 17 400 micro-euros; from April: 1000 + 7500 + 12 500
    assert old[column("cost_nano")] == 17_400_000 and old[column("price_version")] == dt.date(2026, 1, 1)
    assert new[column("cost_nano")] == 21_000_000 and new[column("price_version")] == RAISED_ON
    batch = pricer.usage_row(event("p3", at=DAY1, reasoning_tokens=500, batch=True))
    assert batch[column("cost_nano")] == 8_700_000
    # gemma3:27b: 6.67 kWh per million tokens, measured
    assert old[column("energy_kwh")] == pytest.approx(3000 * 6.67 / 1e6)
    assert old[column("energy_basis")] == "measured"
    unknown = pricer.usage_row(event("p4", model="synthetic-chat"))
    assert unknown[column("energy_kwh")] == 0 and unknown[column("energy_basis")] == "unknown"


def test_duplicates_are_counted_once_in_raw_rows_and_rollups(store: Store, pricer: Pricer) -> None:
    events = [
        event(f"d{i}", tenant="dup", at=DAY1 + i * 20) for i in range(6)
    ]  # minutes 00, 00, 01, 01, 01, 02
    store_events(store, pricer, events[:4])
    store_events(store, pricer, events)  # the first four delivered again, with the two new ones
    # A consumer killed between its insert and its acknowledgement: the rows are there already.
    store_events(store, pricer, events[3:])
    # Two consumers racing past the check: a real second copy, which FINAL and the merges remove.
    store.insert("usage", USAGE_COLUMNS, [pricer.usage_row(events[0])])
    store.recompute_rollups([("dup", "gemma3:27b", utc(DAY1))])
    final = store.query("SELECT count(), sum(cost_nano) FROM usage FINAL WHERE tenant = 'dup'").rows
    assert final == [[6, 6 * 8_900_000]]
    minute = store.query(
        "SELECT toString(minute), requests FROM usage_minute FINAL WHERE tenant = 'dup' ORDER BY minute"
    ).rows
    day = utc(DAY1).date().isoformat()
    assert minute == [[f"{day} 12:00:00", 2], [f"{day} 12:01:00", 3], [f"{day} 12:02:00", 1]]
    for table in ("usage_hour", "usage_day"):
        totals = store.query(
            f"SELECT requests, completion_tokens, cost_nano FROM {table} FINAL WHERE tenant = 'dup'"
        )
        assert totals.rows == [[6, 12_000, 6 * 8_900_000]]


def test_latency_rollups_count_answered_requests_only(store: Store, pricer: Pricer) -> None:
    # 20 answered requests with first tokens 10, 20, ..., 200 ms, each 101 tokens in 1 s after it;
    # an error and an answer without a first token count as requests, not in the latency.
    answered = [
        event(f"l{i}", tenant="lat", at=DAY1 + i / 10, completion_tokens=101, ttft_ms=10.0 * (i + 1),
              duration_ms=10.0 * (i + 1) + 1000.0)
        for i in range(20)
    ]  # fmt: skip
    others = [
        event("l-error", tenant="lat", at=DAY1 + 3, status="error", http_status=500, ttft_ms=5000.0),
        event("l-none", tenant="lat", at=DAY1 + 4, ttft_ms=None, completion_tokens=0),
    ]
    store_events(store, pricer, answered + others)
    for table in ("usage_minute", "usage_hour"):
        found = store.query(
            f"SELECT requests, answered, ttft_p50_ms, ttft_p95_ms, decode_tokens, round(decode_s, 3) "
            f"FROM {table} FINAL WHERE tenant = 'lat'"
        ).rows
        # ClickHouse's exact quantiles take the value at rank floor(q * n): the 11th and the 20th.
        assert found == [[22, 20, 110.0, 200.0, 20 * 100, 20.0]], table


def test_a_new_price_list_does_not_change_stored_rows(store: Store, pricer: Pricer, tmp_path: Path) -> None:
    store_events(store, pricer, [event("bill-1", tenant="billed", at=DAY1)])
    raised = tmp_path / "prices.toml"
    raised.write_text(PRICES.replace(RAISED_ON.isoformat(), utc(DAY1 - 86400).date().isoformat()))
    store_events(
        store, Pricer(PriceList.load(raised), pricer.catalog), [event("bill-1", tenant="billed", at=DAY1)]
    )
    rows = store.query("SELECT cost_nano, price_version FROM usage FINAL WHERE tenant = 'billed'").rows
    assert rows == [[8_900_000, dt.date(2026, 1, 1)]]


@pytest.fixture(scope="module")
def reports(store: Store, pricer: Pricer) -> Reports:
    store_events(store, pricer, [event(f"a{i}", tenant="alpha") for i in range(3)])
    store_events(store, pricer, [event(f"b{i}", tenant="beta", model="qwen3:8b") for i in range(2)])
    store.insert(
        "audit",
        ("seq", "at", "actor", "action", "target", "outcome", "source", "detail", "edge", "prev", "hash"),
        [[1, utc(DAY1), "admin", "tenant.create", "beta", "ok", "127.0.0.1", {}, "e", "0", "h"]],
    )
    r = Reports(store, MeteringSettings(data_dir=Path(os.devnull)))
    r.load_tables()
    return r


def tenant_sql(reports: Reports, sql: str, tenant: str = "alpha") -> list[list[object]]:
    return reports.answer(SqlQuery(sql=sql, tenant=tenant)).rows


def test_a_tenant_sees_only_its_own_rows_whatever_the_sql(reports: Reports) -> None:
    assert tenant_sql(reports, "SELECT DISTINCT tenant FROM usage") == [["alpha"]]
    assert tenant_sql(reports, "SELECT count() FROM usage FINAL WHERE tenant = 'beta'") == [[0]]
    assert tenant_sql(reports, "SELECT count() FROM llmaas.usage") == [[3]]
    union = "SELECT count() FROM (SELECT tenant FROM usage UNION ALL SELECT tenant FROM usage_minute FINAL)"
    assert tenant_sql(reports, union) == [[4]]
    joined = "SELECT count() FROM usage AS a JOIN usage_day AS d ON a.tenant = d.tenant"
    assert tenant_sql(reports, joined) == [[3]]
    cte = "WITH mine AS (SELECT * FROM usage) SELECT count(), countIf(tenant = 'beta') FROM mine"
    assert tenant_sql(reports, cte) == [[3, 0]]
    assert tenant_sql(reports, "SELECT (SELECT count() FROM usage) AS n") == [[3]]
    assert tenant_sql(
        reports, "SELECT count() FROM usage WHERE tenant IN (SELECT tenant FROM usage_hour)"
    ) == [[3]]
    assert tenant_sql(reports, "SELECT sumIf(prompt_tokens, status = 'ok'), uniqExact(model) FROM usage") == [
        [3000, 1]
    ]
    assert tenant_sql(reports, "SELECT arrayMap(x -> x * 2, [1, 2]), number FROM numbers(1)") == [[[2, 4], 0]]
    assert tenant_sql(reports, "SELECT 1") == [[1]]
    assert tenant_sql(reports, "SELECT DISTINCT tenant FROM usage", tenant="beta") == [["beta"]]
    # An administrator sees everything.
    assert reports.answer(SqlQuery(sql="SELECT count() FROM audit")).rows == [[1]]
    everyone = reports.answer(SqlQuery(sql="SELECT DISTINCT tenant FROM usage ORDER BY tenant")).rows
    assert ["alpha"] in everyone and ["beta"] in everyone


def refused(reports: Reports, sql: str, tenant: str | None = "alpha") -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        reports.answer(SqlQuery(sql=sql, tenant=tenant))
    assert caught.value.status == 400 and caught.value.param == "query"
    return caught.value


# Each of these was a way out on the engine's filters alone (issue 20), or a write or a host read.
ESCAPES = [
    # several statements: all but the last ran with no readonly, no filter, no limit
    "SELECT 1 AS a; INSERT INTO usage (request_id, tenant, cost_nano) VALUES ('x', 'beta', 1e15); SELECT 2",
    "SELECT 1; SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT 1;\nDROP TABLE usage_day",
    # table functions read around additional_table_filters
    "SELECT count() FROM merge('llmaas', 'usage')",
    "SELECT count() FROM merge('llmaas', '^audit$')",
    "SELECT * FROM merge('system', '^processes$')",
    "SELECT * FROM mergeTreeIndex('llmaas', 'usage')",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM file('/proc/self/environ', 'RawBLOB')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
    "SELECT * FROM view(SELECT * FROM audit)",
    "SELECT * FROM remote('127.0.0.1', 'llmaas', 'usage')",
    "SELECT * FROM executable('id', 'LineAsString')",
    "SELECT * FROM dictionary('d')",
    # functions that read outside the query's rows
    "SELECT file('/etc/hostname')",
    "SELECT FILE('/etc/hostname')",
    "SELECT getSetting('additional_table_filters')",
    "SELECT hostName(), currentUser()",
    "SELECT hasColumnInTable('llmaas', 'audit', 'actor')",
    "SELECT joinGet('llmaas.usage', 'tenant', 'x')",
    "SELECT dictGet('d', 'x', 1)",
    "SELECT sleepEachRow(1) FROM usage",
    "SELECT filesystemAvailable()",
    # tables outside the tenant's allow-list, however named
    "SELECT count() FROM audit",
    "SELECT count() FROM llmaas.security_events",
    "SELECT count() FROM system.tables",
    "SELECT query FROM system.processes",
    "SELECT count() FROM schema_migrations",
    "SELECT * FROM (WITH audit AS (SELECT 1) SELECT * FROM audit) AS a, audit AS b",
    "SELECT (SELECT count() FROM audit)",
    "SELECT count() FROM usage WHERE tenant IN audit",
    "SELECT * FROM `us\nage`",
    # clauses that change how the query runs or where its answer goes
    "SELECT count() FROM usage SETTINGS additional_table_filters = {}",
    "SELECT count() FROM usage SETTINGS readonly = 0",
    "SELECT 1 FORMAT JSON",
    "SELECT 1 INTO OUTFILE '/tmp/llmaas-out'",
    # not a SELECT
    "INSERT INTO usage (request_id, tenant) VALUES ('x', 'alpha')",
    "DROP TABLE usage",
    "ALTER TABLE usage DELETE WHERE 1",
    "CREATE TABLE x (a UInt8) ENGINE = Memory",
    "SYSTEM FLUSH LOGS",
]


@pytest.mark.parametrize("sql", ESCAPES)
def test_a_tenants_escapes_are_refused_before_the_engine_runs_them(reports: Reports, sql: str) -> None:
    error = refused(reports, sql)
    assert error.code in {"query_refused", "query_failed"}
    assert "tenant = " not in error.message and "In scope" not in error.message  # no filter echoed


def test_nothing_of_a_refused_multi_statement_ran(reports: Reports) -> None:
    before = reports.answer(SqlQuery(sql="SELECT count() FROM usage")).rows
    refused(
        reports, "SELECT 1 AS a; INSERT INTO usage (request_id, tenant) VALUES ('zz', 'beta'); SELECT 2 AS a"
    )
    assert "Only one statement" in refused(reports, "SELECT 1; SELECT 2").message
    assert reports.answer(SqlQuery(sql="SELECT count() FROM usage")).rows == before


def test_an_administrators_sql_is_one_read_only_select_too(reports: Reports) -> None:
    for sql in ("SELECT 1; DROP TABLE usage", "SELECT * FROM file('/etc/passwd', 'LineAsString')",
                "SELECT file('/etc/hostname')", "SELECT 1 SETTINGS readonly = 0"):  # fmt: skip
        refused(reports, sql, tenant=None)
    assert reports.answer(SqlQuery(sql="SELECT count() > 0 FROM system.tables")).rows == [[1]]


def test_a_table_created_after_start_is_not_readable_by_tenants(store: Store, reports: Reports) -> None:
    store.client.command(
        "CREATE TABLE IF NOT EXISTS later (tenant String, secret String) ENGINE = MergeTree ORDER BY tenant"
    )
    store.insert("later", ("tenant", "secret"), [["beta", "s3cr3t"]])
    assert "Unknown table" in refused(reports, "SELECT * FROM later").message
    # and the filter map built at the query holds it too: no row even if a check were missed
    tables = [
        f"{d}.{t}" for d, t in store.client.query("SELECT database, name FROM system.tables").result_rows
    ]
    assert "'llmaas.later': '0'" in tenant_filters(tables, reports.tenant_scope, "alpha")


def test_engine_errors_do_not_echo_the_filters(reports: Reports) -> None:
    error = refused(reports, "SELECT nosuchcolumn FROM usage")
    assert error.code == "query_failed" and "nosuchcolumn" in error.message
    assert (
        "SETTINGS" not in error.message
        and "In scope" not in error.message
        and "llmaas.audit" not in error.message
    )


def test_a_tenants_query_is_cut_at_its_shorter_timeout(store: Store) -> None:
    settings = MeteringSettings(data_dir=Path(os.devnull), metering_tenant_query_timeout_s=0.5)
    r = Reports(store, settings)
    r.load_tables()
    slow = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) = 1"
    assert "Timeout exceeded" in refused(r, slow).message


def test_a_report_runs_beside_ingestion_not_in_front_of_it(store: Store) -> None:
    """A tenant's slow query on a reader thread; an insert on the writer's finishes meanwhile."""
    reports = Reports(store, MeteringSettings(data_dir=Path(os.devnull), metering_tenant_query_timeout_s=2))
    reports.load_tables()
    heavy = SqlQuery(sql=f"SELECT count() FROM numbers({10**11}) WHERE sipHash64(number) = 1", tenant="alpha")

    async def scenario() -> tuple[bool, bool]:
        slow = asyncio.ensure_future(store.report(reports.answer, heavy))
        await asyncio.sleep(0.3)
        await store.run(store.insert, "usage_minute", ("tenant", "model"), [["gamma", "m"]])
        inserted_first = not slow.done()
        with contextlib.suppress(InvalidRequest):
            await slow
        return inserted_first, slow.done()

    assert asyncio.run(scenario()) == (True, True)


def test_literal_escapes_quotes_and_backslashes() -> None:
    assert literal("a'b\\c") == "'a\\'b\\\\c'"


def test_usage_report_by_model_and_day(reports: Reports) -> None:
    since = DAY1 - 86400
    total = reports.answer(UsageQuery(tenant="beta", since=since, until=time.time()))
    assert total.columns[:3] == ["requests", "prompt_tokens", "completion_tokens"]
    assert total.rows[0][:3] == [2, 2000, 4000]
    by_model = reports.answer(UsageQuery(tenant="alpha", since=since, by="model"))
    assert [r[0] for r in by_model.rows] == ["gemma3:27b"]
    assert Decimal(str(by_model.rows[0][5])) == Decimal("0.0267")  # 3 x (1000 x 0.9 + 2000 x 4) micro-euros
    by_day = reports.answer(UsageQuery(tenant="alpha", since=since, by="day"))
    assert by_day.rows[0][0] == utc(DAY1).date().isoformat()


def test_the_ready_queries_run(reports: Reports) -> None:
    ready = {
        p.stem: p.read_text() for p in (SQL_DIR / "queries").glob("*.sql") if not p.name.startswith("usage_")
    }
    assert set(ready) == {"monthly_bill", "top_models", "ttft_p95", "energy_per_tenant"}
    answers = {name: reports.answer(SqlQuery(sql=sql)) for name, sql in ready.items()}
    bill = answers["monthly_bill"]
    row = next(dict(zip(bill.columns, r, strict=True)) for r in bill.rows if r[1] == "alpha")
    assert (
        row["month"] == utc(DAY1).date().replace(day=1).isoformat()
        and row["requests"] == 3
        and Decimal(str(row["eur"])) == Decimal("0.0267")
    )
    # Their time windows are relative to now: the tenant's own copies answer for its rows only.
    assert tenant_sql(reports, ready["monthly_bill"], tenant="beta")[0][1] == "beta"


def test_a_refused_statement_leaves_no_filter_behind(reports: Reports) -> None:
    """An INSERT's settings are applied with SET by the client library; refused, they would stay."""
    with pytest.raises(InvalidRequest):
        tenant_sql(reports, "INSERT INTO usage (request_id, tenant) VALUES ('x', 'alpha')")
    assert tenant_sql(reports, "SELECT DISTINCT tenant FROM usage", tenant="beta") == [["beta"]]
    assert len(reports.answer(SqlQuery(sql="SELECT DISTINCT tenant FROM usage")).rows) >= 2


def test_a_tenants_queries_take_turns_and_a_flood_is_refused() -> None:
    """One query at a time per tenant, a bounded queue behind it; other tenants are not in it."""
    service = MeteringService(MeteringSettings(data_dir=Path(os.devnull), metering_tenant_queued_queries=2))
    order: list[str] = []

    async def query(tenant: str, name: str, hold_s: float) -> str:
        async with service._turn(tenant):
            order.append(f"{name}+")
            await asyncio.sleep(hold_s)
            order.append(f"{name}-")
        return name

    async def scenario() -> list[object]:
        noisy = [asyncio.ensure_future(query("noisy", f"n{i}", 0.1)) for i in range(4)]
        await asyncio.sleep(0.01)
        quiet = asyncio.ensure_future(query("quiet", "q", 0.0))
        return await asyncio.gather(*noisy, quiet, return_exceptions=True)

    results = asyncio.run(scenario())
    assert results[:3] == ["n0", "n1", "n2"] and isinstance(results[3], RateLimited) and results[4] == "q"
    # the noisy tenant's queries never overlapped, and the quiet one ran while the first still held
    assert order.index("q+") < order.index("n0-")
    noisy = [e for e in order if e.startswith("n")]
    assert noisy == ["n0+", "n0-", "n1+", "n1-", "n2+", "n2-"]
    assert not service._turns and not service._waiting


alert_decoder = msgspec.json.Decoder(AlertEvent)


def test_an_alert_rule_fires_and_resolves_once_each_and_says_so(
    store: Store, pricer: Pricer, server: NatsServer
) -> None:
    now = time.time()
    # 10 requests in the last minute, 3 of them server errors: 30 % over a 5-minute window.
    store_events(
        store,
        pricer,
        [
            event(f"alerting-{i}", tenant="alerting", at=now - 60 + i, status="error" if i < 3 else "ok")
            for i in range(10)
        ],
    )
    rule = AlertRule(
        id="r1", tenant="alerting", kind="error_rate_pct", threshold=20, window_s=300, min_requests=5
    )
    strict = msgspec.structs.replace(rule, id="r2", min_requests=50)  # too few requests to judge

    async def scenario() -> tuple[list[list[AlertEvent]], list[str]]:
        nc = await nats.connect(server.url)
        evaluator = Evaluator(store, 1.0, streams.DEFAULT)
        await evaluator.open(nc)
        js = nc.jetstream()
        for r in (rule, strict):
            await (await js.key_value(streams.ALERT_RULES.bucket)).put(
                alerts.key(r.tenant, r.id), msgspec.json.encode(r)
            )
        rounds = [
            await evaluator.evaluate(now),  # fires
            await evaluator.evaluate(now + 1),  # still firing: nothing new
            await evaluator.evaluate(now + 600),  # the errors are out of the window: resolves
        ]
        # A rule deleted (by an edge): its state goes at the next round.
        await (await js.key_value(streams.ALERT_RULES.bucket)).delete(alerts.key("alerting", "r1"))
        await evaluator.evaluate(now + 601)
        states = [key async for key, _ in streams.entries(js, streams.ALERT_STATE, ">")]
        assert alerts.key("alerting", "r1") not in states
        sub = await js.subscribe(subjects.alerts("alerting"), deliver_policy=DeliverPolicy.ALL)
        published = []
        with contextlib.suppress(TimeoutError):
            while True:
                published.append(alert_decoder.decode((await sub.next_msg(timeout=1)).data).state)
        await nc.close()
        return rounds, published

    rounds, published = asyncio.run(scenario())
    assert [[(e.rule_id, e.state) for e in r] for r in rounds] == [
        [("r1", "firing")],
        [],
        [("r1", "resolved")],
    ]
    assert rounds[0][0].value == pytest.approx(30.0)
    assert published == ["firing", "resolved"]
    history = store.query(
        "SELECT rule_id, state, value FROM alert_events WHERE tenant = 'alerting' ORDER BY at"
    ).rows
    assert [(r[0], r[1]) for r in history] == [("r1", "firing"), ("r1", "resolved")]
