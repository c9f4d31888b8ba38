"""What one request used and how it ended: its limits settled and its usage event recorded, once.

A ``Tally`` is opened when a request has a tenant, a key and a model, before admission, so every
request from then on is metered whatever its end: answered (``ok``), refused by the limits
(``rejected``), blocked by the guard (``blocked``), failed (``error``), or left by its client
(``aborted``, billed for the tokens generated until the engine stopped).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

from starlette.requests import Request

from edge.limits import Grant, Limiter
from edge.sse import wait_disconnect
from llmaas.errors import LlmaasError
from llmaas.usage import UsageOutbox
from llmaas.wire import GenerateJob, Job, Usage, UsageEvent, UsageStatus, WireError

Endpoint = Literal["chat", "completion", "embedding"]
CLIENT_CLOSED = 499
"""The status recorded for a request its client left (nginx's convention): it never got one."""
_BLOCKED = "prompt_rejected"


class Tally:
    __slots__ = (
        "aborted", "batch_id", "closed", "edge_id", "endpoint", "error", "finish_reason", "generated",
        "grant", "job", "limiter", "outbox", "started", "ttft_ms", "usage", "worker",
    )  # fmt: skip

    def __init__(
        self, outbox: UsageOutbox | None, limiter: Limiter, edge_id: str, job: Job, batch_id: str = ""
    ) -> None:
        """``outbox``: where the usage event goes when the request ends; None for a batch line, whose
        event is stored with its result and published from there (``event``)."""
        self.outbox = outbox
        self.batch_id = batch_id
        self.limiter = limiter
        self.edge_id = edge_id
        self.job = job
        self.endpoint: Endpoint = job.kind if isinstance(job, GenerateJob) else "embedding"
        self.started = time.perf_counter()
        self.grant: Grant | None = None
        self.worker = ""
        self.generated = 0
        self.ttft_ms: float | None = None
        self.usage: Usage | None = None
        self.finish_reason = ""
        self.error: WireError | None = None
        self.aborted = False
        self.closed = False

    def first_token(self) -> float:
        """Marks the first generated token; seconds since the request started."""
        elapsed = time.perf_counter() - self.started
        if self.ttft_ms is None:
            self.ttft_ms = elapsed * 1000
        return elapsed

    def watch_client(self, request: Request, cancel: Callable[[str], None]) -> asyncio.Task[None]:
        """Until cancelled: if the client disconnects, the request is aborted and ``cancel`` called."""

        def left() -> None:
            self.aborted = True
            cancel(self.job.request_id)

        return asyncio.create_task(wait_disconnect(request.receive, left))

    def failed(self, exc: BaseException) -> None:
        """The request ends with ``exc`` (kept only if nothing ended it before)."""
        if self.error is None and self.usage is None:
            error = exc if isinstance(exc, LlmaasError) else None
            self.error = error.to_wire() if error else WireError(status=500, type="server_error", message="")

    def close(self) -> asyncio.Task[None] | None:
        """Record the usage event and settle the grant; the settling task, if any, may be awaited
        (an answer sent after it lets the client see its own usage in its next request's limits)."""
        if self.closed:
            return None
        self.closed = True
        if self.outbox is not None:
            self.outbox.record(self.event())
        if self.grant is None:
            return None
        return self.limiter.settle(self.grant, self.usage, self.generated)

    def event(self) -> UsageEvent:
        """The usage event of the request as it ended."""
        status, http_status = self._outcome()
        usage = self.usage or Usage(prompt_tokens=0, completion_tokens=self.generated)
        job = self.job
        return UsageEvent(
            request_id=job.request_id,
            at=time.time(),
            tenant=job.caller.tenant,
            token_id=job.caller.token_id,
            model=job.model,
            endpoint=self.endpoint,
            status=status,
            http_status=http_status,
            error_code=(self.error.code or self.error.type) if self.error else "",
            finish_reason=self.finish_reason,
            worker=self.worker,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cached_tokens=usage.cached_tokens,
            ttft_ms=self.ttft_ms,
            duration_ms=(time.perf_counter() - self.started) * 1000,
            edge=self.edge_id,
            batch=bool(self.batch_id),
            batch_id=self.batch_id,
        )

    def _outcome(self) -> tuple[UsageStatus, int]:
        if self.usage is not None and self.error is None:
            return "ok", 200
        if self.aborted:
            return "aborted", CLIENT_CLOSED
        if self.error is None:  # cancelled from inside (the edge stopping): the client got nothing
            return "aborted", CLIENT_CLOSED
        if self.error.code == _BLOCKED:
            return "blocked", self.error.status
        if self.error.status == 429:
            return "rejected", self.error.status
        return "error", self.error.status
