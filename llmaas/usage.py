"""Usage events: the JetStream stream LLMAAS_USAGE, and the outbox an edge fills it from.

The edge records one ``UsageEvent`` per finished request and returns at once; the outbox publishes
it in the background, with the request id as ``Nats-Msg-Id``, so a retried publish is stored once
(the stream's duplicate window; metering deduplicates again by request id in ClickHouse). While
NATS is away the events wait in memory, retried with backoff; only an edge killed in that time, or
a queue over ``max_queued``, loses events, and each loss is counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from llmaas import streams, subjects
from llmaas.wire import UsageEvent

log = logging.getLogger(__name__)

STREAM = streams.USAGE.name
encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(UsageEvent)


async def publish(js: JetStreamContext, event: UsageEvent, timeout_s: float = 2.0) -> None:
    """Raises the nats-py error (or TimeoutError) when the stream did not acknowledge the event."""
    headers = {"Nats-Msg-Id": event.request_id}
    await js.publish(subjects.USAGE, encoder.encode(event), timeout=timeout_s, headers=headers)


class Outbox:
    """Publishes recorded events in the background, in order of recording, many at a time."""

    def __init__(
        self, max_queued: int = 100_000, concurrency: int = 256, on_lost: Callable[[int], None] | None = None
    ) -> None:
        self.max_queued = max_queued
        self.concurrency = concurrency
        self.on_lost = on_lost
        self._queue: asyncio.Queue[UsageEvent] = asyncio.Queue()
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def open(self, nc: Client, policy: streams.Policy = streams.DEFAULT) -> None:
        self._js = nc.jetstream()
        await streams.ensure(self._js, streams.USAGE, policy)
        self._task = asyncio.create_task(self._run())

    def record(self, event: UsageEvent) -> None:
        if self._queue.qsize() >= self.max_queued:
            self._lose(1, "the outbox is full (NATS unreachable for long?)")
            return
        self._queue.put_nowait(event)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued (for up to ``timeout_s``), then stop; what is left is counted lost."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        self._task.cancel()
        left = self._queue.qsize()
        if left:
            self._lose(left, "the edge stopped before NATS took them")

    def _lose(self, count: int, why: str) -> None:
        log.error("%d usage event(s) lost: %s", count, why)
        if self.on_lost is not None:
            self.on_lost(count)

    async def _run(self) -> None:
        assert self._js is not None
        js, queue, delay = self._js, self._queue, 0.0
        while True:
            batch = [await queue.get()]
            while len(batch) < self.concurrency and not queue.empty():
                batch.append(queue.get_nowait())
            while batch:
                results = await asyncio.gather(*(publish(js, e) for e in batch), return_exceptions=True)
                failed = [e for e, r in zip(batch, results, strict=True) if isinstance(r, BaseException)]
                for _ in range(len(batch) - len(failed)):
                    queue.task_done()
                if failed:
                    if delay == 0:
                        error = next(r for r in results if isinstance(r, BaseException))
                        log.warning("%d usage event(s) not stored yet (%r); retrying", len(failed), error)
                    delay = min(max(delay * 2, 0.1), 5.0)  # the message id makes a retry safe
                    await asyncio.sleep(delay)
                else:
                    delay = 0.0
                batch = failed
