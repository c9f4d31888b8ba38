"""Queries to the metering service, which owns the ClickHouse data and enforces, in the database,
that a tenant's query reads that tenant's rows only (``SqlQuery.tenant``)."""

from __future__ import annotations

import datetime as dt

from edge.pipeline import Pipeline
from llmaas import codec, durations, subjects
from llmaas.errors import InvalidRequest, RemoteError
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


def since_epoch(text: str, now: float, param: str = "since") -> float:
    """``7d``/``24h``/``30m`` before ``now``, or an ISO 8601 date or time (UTC unless it says);
    a bad one is a 400 naming ``param``."""
    shown = text if len(text) <= 40 else text[:40] + "…"
    try:
        epoch = now - durations.seconds(text)
    except ValueError:
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidRequest(
                f"Invalid time {shown!r}: use a duration (7d, 24h, 30m) or an ISO 8601 date (2026-11-01).",
                param=param,
            ) from None
        epoch = (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
    if not _EARLIEST <= epoch <= now + _LATEST_AHEAD_S:
        raise InvalidRequest(
            f"Invalid time {shown!r}: out of range (from 1970 to a day from now).", param=param
        )
    return epoch


_EARLIEST = 0.0
_LATEST_AHEAD_S = 86_400.0
