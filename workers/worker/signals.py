"""What the schedulers hear from a worker between heartbeats: its jobs' first tokens and ends
(``Progress``) and its prefix cache's changes (``CacheEvents``), gathered and sent at most every
``FLUSH_S``, so that a busy worker sends a few small messages a second, not two per job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.aio.client import Client
from nats.errors import Error as NatsError

from llmaas import codec, subjects
from llmaas.wire import CacheEvents, Progress

log = logging.getLogger(__name__)

FLUSH_S = 0.02
"""Longest a first token or an end waits to be told: fresh next to a 1 s heartbeat, and few messages."""


class Signals:
    def __init__(self, nc: Client, worker_id: str, model: str) -> None:
        self._nc = nc
        self._progress_subject = subjects.progress(worker_id)
        self._cache_subject = subjects.cache_events(worker_id)
        self._model = model
        self._started: list[str] = []
        self._ended: list[str] = []
        self._stored: list[int] = []
        self._removed: list[int] = []
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flushes())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._flush()

    def started(self, request_id: str) -> None:
        self._started.append(request_id)
        self._due.set()

    def ended(self, request_id: str) -> None:
        self._ended.append(request_id)
        self._due.set()

    def cache(self, stored: Sequence[int], removed: Sequence[int]) -> None:
        """The engine's prefix cache changed (called from the engine, in the event loop's thread)."""
        self._stored.extend(stored)
        self._removed.extend(removed)
        self._due.set()

    async def _flushes(self) -> None:
        while True:
            await self._due.wait()
            await asyncio.sleep(FLUSH_S)
            self._due.clear()
            try:
                await self._flush()
            except NatsError as exc:  # reconnecting: the heartbeats carry the load meanwhile
                log.debug("progress not sent: %s", type(exc).__name__)

    async def _flush(self) -> None:
        if self._started or self._ended:
            progress = Progress(started=self._started, ended=self._ended)
            self._started, self._ended = [], []
            await self._nc.publish(self._progress_subject, codec.encode(progress))
        await self.publish_cache()

    async def publish_cache(self) -> None:
        """Send the cache's changes now: called before a job's first frame goes out, so that the
        schedulers know where its prompt is cached before its client can send the next turn."""
        if self._stored or self._removed:
            events = CacheEvents(model=self._model, stored=self._stored, removed=self._removed)
            self._stored, self._removed = [], []
            await self._nc.publish(self._cache_subject, codec.encode(events))
