"""One request through the pipeline: admit, submit, wait for a worker, then stream or collect.

The HTTP status is decided before any byte is sent: the edge waits for the worker's ``Accepted``
and the guard's verdict (or a stage's ``Failed``), so a rejected or unplaceable request gets a real
4xx/5xx, not a 200 with an error inside. After that, a failure becomes one error event and the stream ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from edge.context import EdgeContext, answer_with
from edge.errors import error_body
from edge.keys import Principal
from edge.metrics import EdgeMetrics
from edge.pipeline import OUT_OF_ORDER, Stream
from edge.rendering import DONE_EVENT, Collected, Renderer, event
from edge.sse import EventStreamResponse
from edge.usage import Tally
from llmaas.errors import RemoteError
from llmaas.wire import Delta, Done, Failed, GenerateJob, Job, Usage


class Exchange:
    """One request through the pipeline, with the one accounting context that owns it: admitted
    under the caller's limits, submitted, watched for a client that leaves, and metered into one
    tally that is recorded and settled once, however the request ends."""

    def __init__(self, request: Request, edge: EdgeContext, job: Job, principal: Principal) -> None:
        self.request = request
        self.edge = edge
        self.job = job
        self.principal = principal
        self.tally = edge.tally(job)
        self.watcher: asyncio.Task[None] | None = None

    async def start(self, reserve: int) -> Stream:
        """The frames after the worker's ``Accepted`` (and the guard's verdict), with ``reserve``
        output tokens admitted; raises what refused or failed the request, the tally settled."""
        edge, tally = self.edge, self.tally
        try:
            p = self.principal
            tally.grant = await edge.gate.limiter.admit(p.tenant, p.key, p.tier, reserve, time.time())
            answer_with(self.request, tally.grant.headers)
            frames = await edge.pipeline.submit(self.job)
            self.watcher = tally.watch_client(self.request, edge.pipeline.cancel)
            tally.worker = (await frames.started()).worker_id
        except BaseException as exc:
            self.end(exc)
            raise
        return frames

    def end(self, error: BaseException | None = None) -> asyncio.Task[None] | None:
        """Stop watching the client, let go of the frames, record the usage and settle the grant
        (once; later calls do nothing). The settling task, if any, may be awaited."""
        if self.watcher is not None:
            self.watcher.cancel()
        self.edge.pipeline.finish(self.job.request_id)
        if error is not None:
            self.tally.failed(error)
        return self.tally.close()

    async def settle(self) -> None:
        """``end`` for a request answered whole: the answer goes out once its usage is in the
        limits, so that the client's next request sees it there."""
        settling = self.end()
        if settling is not None:
            await settling


async def answer(
    request: Request,
    edge: EdgeContext,
    job: GenerateJob,
    renderer: Renderer,
    principal: Principal,
    *,
    stream: bool,
    include_usage: bool,
) -> Response:
    """The answer to one generation request, streamed or whole."""
    job = edge.gate.models.bounded(job)
    exchange = Exchange(request, edge, job, principal)
    reserve = job.sampling.max_tokens
    assert reserve is not None  # bounded() gave every job one
    frames = await exchange.start(reserve)
    if stream:
        assert exchange.watcher is not None
        events = _events(exchange, frames, renderer, include_usage)
        return EventStreamResponse(events, exchange.watcher)
    try:
        collected, done = await collect(edge.metrics, job, frames, exchange.tally)
    except BaseException as exc:
        exchange.end(exc)
        raise
    await exchange.settle()
    return Response(renderer.whole(collected, done.finish_reason, done.usage), media_type="application/json")


def _count(metrics: EdgeMetrics, model: str, usage: Usage) -> None:
    metrics.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
    metrics.tokens.labels(model, "completion").inc(usage.completion_tokens)


async def collect(
    metrics: EdgeMetrics, job: GenerateJob, frames: Stream, tally: Tally
) -> tuple[Collected, Done]:
    """The whole answer of ``job`` from its frames (after ``Accepted``), metered into ``tally``."""
    collected = Collected()
    first = True
    while True:
        frame = await frames.next()
        if type(frame) is Delta:
            if first:
                metrics.ttft.labels(job.model).observe(tally.first_token())
                first = False
            collected.add(frame)
            tally.generated += frame.tokens
        elif type(frame) is Done:
            _count(metrics, job.model, frame.usage)
            tally.usage = frame.usage
            tally.finish_reason = frame.finish_reason
            return collected, frame
        elif type(frame) is Failed:
            tally.generated += frames.dropped_tokens
            raise RemoteError(frame.error)
        else:
            raise OUT_OF_ORDER


async def _events(
    exchange: Exchange, frames: Stream, renderer: Renderer, include_usage: bool
) -> AsyncIterator[bytes]:
    """SSE events; frames already queued are sent together, so a busy edge makes fewer writes."""
    metrics, model, tally = exchange.edge.metrics, exchange.job.model, exchange.tally
    first_text = True
    try:
        pending = [renderer.opening()]
        while True:
            frame = await frames.next()
            while True:
                kind = type(frame)
                if kind is Delta:
                    assert isinstance(frame, Delta)
                    if first_text:
                        metrics.ttft.labels(model).observe(tally.first_token())
                        first_text = False
                    pending.append(renderer.delta(frame))
                    tally.generated += frame.tokens
                elif kind is Done:
                    assert isinstance(frame, Done)
                    _count(metrics, model, frame.usage)
                    tally.usage = frame.usage
                    tally.finish_reason = frame.finish_reason
                    pending.append(renderer.closing(frame.finish_reason))
                    if include_usage:
                        pending.append(renderer.usage(frame.usage))
                    pending.append(DONE_EVENT)
                    yield b"".join(pending)
                    return
                else:
                    error = frame.error if isinstance(frame, Failed) else OUT_OF_ORDER.to_wire()
                    tally.error = error
                    tally.generated += frames.dropped_tokens  # generated, never read: billed too
                    pending.append(event(error_body(error.message, error.type, error.param, error.code)))
                    yield b"".join(pending)
                    return
                if frames.queue.empty():
                    break
                frame = frames.queue.get_nowait()
            yield b"".join(pending)
            pending = []
    finally:
        exchange.end()
