"""Increments of JetStream counters (``Nats-Incr``), coalesced per counter while one is in flight.

A request's limits are a handful of counters shared by every request of its tenant (requests this
minute, tokens this hour and day, budget, the key's requests in flight). Sent one message per
request and counter, a busy tenant costs the edge and nats-server a round trip each per counter and
request. Here an increment is sent at once when its counter has none in flight; the increments
that arrive for that counter meanwhile wait and go together as one message (their sum) when it
returns. Nothing waits on a timer: one request alone pays one round trip, as before.

Each increment still learns its own total, exactly as if they had been sent one after another in
the order they arrived: the server's total after the sum, minus what the later ones in the batch
added. The server orders the batches of every edge, so limits stay exact across edges.

``durable`` counters (settlements) retry a batch while NATS is away, each batch with its own message
id so that a retried batch whose first ack was lost is applied once (the stream's duplicate window).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from itertools import count

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext

from llmaas import retry
from llmaas.errors import Unavailable

log = logging.getLogger(__name__)

_Pending = list[tuple[int, "asyncio.Future[int]"]]


class Counters:
    def __init__(self, *, durable: retry.Backoff | None = None, within_s: float = 0.0) -> None:
        """``durable``: the backoff with which a batch is retried for up to ``within_s`` seconds
        while NATS is away (None: not retried)."""
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._durable = durable
        self._within_s = within_s
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = count()
        self._prefix = secrets.token_hex(6)

    def open(self, nc: Client) -> None:
        self._nc, self._js = nc, nc.jetstream()

    async def add(self, subject: str, amount: int) -> int:
        """Add ``amount`` to the counter ``subject``; its total just after this increment."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiting = self._pending.get(subject)
        if waiting is not None:  # a batch of this counter is in flight: go with the next one
            waiting.append((amount, future))
        else:
            self._pending[subject] = []
            self._start(subject, [(amount, future)])
        return await future

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    def _start(self, subject: str, batch: _Pending) -> None:
        # A task, not the first caller's own coroutine: a caller that goes away (its client hung up)
        # must not cancel the increments of the others in its batch.
        task = asyncio.create_task(self._flush(subject, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, subject: str, batch: _Pending) -> None:
        try:
            total = await self._send(subject, sum(amount for amount, _ in batch))
        except Exception as exc:  # every waiter learns why (Unavailable, or a bug)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            later = 0
            for amount, future in reversed(batch):  # each one's total: without those after it
                if not future.done():
                    future.set_result(total - later)
                later += amount
        finally:
            following = self._pending.pop(subject, [])
            if following:
                self._pending[subject] = []
                self._start(subject, following)

    async def _send(self, subject: str, amount: int) -> int:
        if self._durable is None:
            return await self._publish(subject, amount, None)
        msg_id = f"{self._prefix}:{next(self._ids)}"

        async def publish() -> int:
            return await self._publish(subject, amount, msg_id)

        return await retry.retried(publish, on=Unavailable, backoff=self._durable, within_s=self._within_s)

    async def _publish(self, subject: str, amount: int, msg_id: str | None) -> int:
        if self._nc is None or self._js is None:
            raise RuntimeError("Counters.open was not called")
        return await increment(self._nc, self._js, subject, amount, msg_id)


async def increment(
    nc: Client, js: JetStreamContext, subject: str, amount: int, msg_id: str | None = None
) -> int:
    """One increment of the counter ``subject``, alone; its total after it. Raises Unavailable
    when NATS cannot be reached (``msg_id``: applied once however often it is sent)."""
    if not nc.is_connected:
        raise Unavailable("The platform's message bus is unreachable; retry shortly.", retry_after_s=1)
    headers = {"Nats-Incr": f"{amount:+d}"}
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    try:
        ack = await js.publish(subject, b"", headers=headers)
    except (NatsError, TimeoutError) as exc:
        raise Unavailable(
            "The platform cannot check this tenant's limits right now; retry shortly.", retry_after_s=1
        ) from exc
    return int(ack.val or 0)
