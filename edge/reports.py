"""Queries to the metering service, which owns the ClickHouse data and enforces, in the database,
that a tenant's query reads that tenant's rows only (``SqlQuery.tenant``)."""

from __future__ import annotations

from edge.pipeline import Pipeline
from llmaas import codec, subjects
from llmaas.errors import RemoteError
from llmaas.wire import Failed, Query, Rows

TIMEOUT_S = 30.0


async def rows(pipeline: Pipeline, query: Query, timeout_s: float = TIMEOUT_S) -> Rows:
    """The rows answering ``query``; raises RemoteError with metering's error (a refused query's
    4xx among them) or Unavailable when metering does not answer."""
    raw = await pipeline.ask(subjects.METERING_QUERY, codec.encode(query), timeout_s, "metering")
    answer = codec.rows_decoder.decode(raw)
    if isinstance(answer, Failed):
        raise RemoteError(answer.error)
    return answer
