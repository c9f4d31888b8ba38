"""An outbox: events recorded without waiting, published to a JetStream stream in the background.

The caller records an event and goes on (a request is never held by its bookkeeping); the outbox
publishes it with an id of its own as ``Nats-Msg-Id``, so a retried publish is stored once (the
stream's duplicate window). While the stream is unreachable, or without a leader during a cluster
election (publishes then fail at once, with no responders), events wait in memory and are retried
with backoff for as long as it takes; only a process killed in that time, or a queue over
``max_queued``, loses events, and each loss is counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from nats.aio.client import Client
from nats.js.client import JetStreamContext

from llmaas import streams

log = logging.getLogger(__name__)

E = TypeVar("E")

Publish = Callable[[JetStreamContext, E], Awaitable[None]]
"""Publishes one event; raises (a nats-py error, TimeoutError) when the stream did not take it."""


class Outbox(Generic[E]):
    """Publishes recorded events in the background, in order of recording, many at a time."""

    def __init__(
        self,
        spec: streams.StreamSpec,
        publish: Publish[E],
        what: str,
        *,
        max_queued: int = 100_000,
        concurrency: int = 256,
        on_lost: Callable[[int], None] | None = None,
    ) -> None:
        self.spec = spec
        self.publish = publish
        self.what = what
        self.max_queued = max_queued
        self.concurrency = concurrency
        self.on_lost = on_lost
        self._queue: asyncio.Queue[E] = asyncio.Queue()
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def open(self, nc: Client, policy: streams.Policy = streams.DEFAULT) -> None:
        self._js = nc.jetstream()
        await streams.ensure(self._js, self.spec, policy)
        self._task = asyncio.create_task(self._run())

    def record(self, event: E) -> None:
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
            self._lose(left, "the process stopped before NATS took them")

    def _lose(self, count: int, why: str) -> None:
        log.error("%d %s(s) lost: %s", count, self.what, why)
        if self.on_lost is not None:
            self.on_lost(count)

    async def _run(self) -> None:
        assert self._js is not None
        js, queue, publish, delay = self._js, self._queue, self.publish, 0.0
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
                        log.warning("%d %s(s) not stored yet (%r); retrying", len(failed), self.what, error)
                    delay = min(max(delay * 2, 0.1), 5.0)  # the message id makes a retry safe
                    await asyncio.sleep(delay)
                else:
                    delay = 0.0
                batch = failed
