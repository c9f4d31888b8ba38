"""The metering service: migrations at start, one consumer per event stream, report queries.

Report queries arrive by NATS request/reply (``llmaas.v1.metering.query``, queue group
``metering``): the embedded chDB can be opened by one process only, so this process answers for
everyone (the edge's usage and SQL endpoints, ``llmaas usage``, ``llmaas sql``). They run on
reader threads beside ingestion, one at a time per tenant (a few more wait their turn, beyond that
429), so one tenant's heavy query neither delays another tenant's report nor the usage behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.aio.msg import Msg

from llmaas import catalog, codec, natsconn, private, privileges, streams, subjects
from llmaas.errors import InvalidRequest, LlmaasError, PayloadTooLarge, RateLimited, Unavailable
from llmaas.handlers import Handler, Handlers
from llmaas.metrics_server import expose
from llmaas.pricing import PriceList
from llmaas.wire import Failed, Query
from metering.alerts import Evaluator
from metering.consumer import Consumer, sinks
from metering.metrics import MeteringMetrics
from metering.reports import Reports
from metering.rows import Pricer
from metering.settings import MeteringSettings
from metering.store import Store
from metering.store import directory as store_directory

log = logging.getLogger(__name__)


def use_utc() -> None:
    """Naive datetimes mean UTC in this process (clickhouse-connect converts them as local time)."""
    os.environ["TZ"] = "UTC"
    time.tzset()


def private_files() -> None:
    """Files this process creates (chDB's data, its logs) readable by its user only."""
    os.umask(0o077)


class MeteringService:
    def __init__(self, settings: MeteringSettings, metrics: MeteringMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or MeteringMetrics()
        self.pricer = Pricer(PriceList.load(settings.prices_file), catalog.load(settings.catalog_file))
        self.store: Store | None = None
        self.reports: Reports | None = None
        self._nc: Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._turns: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}
        self.handlers = Handlers("metering", self.metrics.registry)
        self.handlers.add(
            Handler(
                "query",
                subjects.METERING_QUERY,
                codec.query_decoder,
                self._on_query,
                subjects.METERING_QUEUE,
                self._undecodable,
            )
        )

    async def start(self) -> None:
        use_utc()
        private_files()
        s = self.settings
        url = s.clickhouse_url.get_secret_value() if s.clickhouse_url else None
        key = None
        if url is None and s.metering_encrypt:
            given = s.clickhouse_key.get_secret_value() if s.clickhouse_key else None
            key = private.secret(s.data_dir / "clickhouse.key", given)
        # Credentials read (seed, TLS key) while they still can be, then root given up for good
        # before the engine that runs tenants' SQL starts.
        nc = self._nc = await natsconn.connect_as(s, "metering")
        if s.metering_user:
            account = privileges.Account.named(s.metering_user)
            privileges.become(account, owned=[store_directory(s.data_dir)] if url is None else [])
            log.info("running as %s (uid %d)", account.name, account.uid)
        store = self.store = await asyncio.to_thread(
            Store.connect,
            data_dir=s.data_dir,
            url=url,
            database=s.clickhouse_database,
            readers=s.metering_report_threads,
            key=key,
        )
        applied = await store.run(store.migrate)
        log.info("schema: %s", f"applied {', '.join(applied)}" if applied else "up to date")
        if key is not None and (clear := await store.run(store.in_clear)):
            log.warning("tables made in clear by an older version stay so: %s", ", ".join(clear))
        self.reports = Reports(store, s)
        await store.run(self.reports.load_tables)
        js = nc.jetstream()
        metered = sinks(self.pricer, s)
        await asyncio.gather(*(streams.ensure(js, sink.stream, streams.Policy.of(s)) for sink in metered))
        for sink in metered:
            consumer = Consumer(js, store, sink, s, self.metrics)
            self._tasks.append(asyncio.create_task(consumer.run(), name=f"metering-{sink.name}"))
        evaluator = Evaluator(store, s.metering_alerts_every_s, streams.Policy.of(s))
        await evaluator.open(nc)
        self._tasks.append(asyncio.create_task(evaluator.run(), name="metering-alerts"))
        await self.handlers.attach(nc)
        await nc.flush()
        expose(self.metrics.registry, s.metrics_host, s.metrics_port)
        log.info(
            "metering ready (batches of up to %d events or %.1f s)",
            s.metering_batch_size,
            s.metering_batch_wait_s,
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._nc is not None:
            await natsconn.close(self._nc)
        if self.store is not None:
            self.store.close()

    async def _undecodable(self, msg: Msg) -> None:
        await self._reply(msg, InvalidRequest("The query could not be decoded.", code="invalid_query"))

    async def _on_query(self, query: Query, msg: Msg) -> None:
        try:
            async with self._turn(query.tenant):
                answer = await self._answer(query)
        except LlmaasError as exc:
            await self._reply(msg, exc)
            return
        assert self._nc is not None
        if len(answer) > self._nc.max_payload - 1024:
            await self._reply(
                msg,
                PayloadTooLarge(
                    f"The result is {len(answer)} bytes, over the {self._nc.max_payload} a reply may "
                    "carry: select fewer rows or columns (LIMIT), or aggregate.",
                    param="query",
                    code="result_too_large",
                ),
            )
            return
        self.metrics.queries.labels("ok").inc()
        await msg.respond(answer)

    async def _answer(self, query: Query) -> bytes:
        assert self.store is not None and self.reports is not None
        try:
            return codec.encode(await self.store.report(self.reports.answer, query))
        except LlmaasError:
            raise
        except Exception as exc:
            log.exception("report query failed")
            raise Unavailable(f"The usage database failed ({type(exc).__name__}); retry shortly.") from None

    @contextlib.asynccontextmanager
    async def _turn(self, tenant: str | None) -> AsyncIterator[None]:
        """One query at a time per tenant; a few more wait, beyond that a 429."""
        if tenant is None:  # an administrator's
            yield
            return
        if self._waiting.get(tenant, 0) >= self.settings.metering_tenant_queued_queries + 1:
            raise RateLimited(
                "Too many report queries of this tenant at once: wait for the running ones.",
                type_="requests",
                retry_after_s=1.0,
            )
        lock = self._turns.setdefault(tenant, asyncio.Lock())
        self._waiting[tenant] = self._waiting.get(tenant, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._waiting[tenant] -= 1
            if not self._waiting[tenant]:
                del self._waiting[tenant], self._turns[tenant]

    async def _reply(self, msg: Msg, error: LlmaasError) -> None:
        self.metrics.queries.labels(error.code or "error").inc()
        await msg.respond(codec.encode(Failed(error=error.to_wire())))
