"""One generation request through the pipeline: submit, wait for a worker, then stream or collect.

The HTTP status is decided before any byte is sent: the edge waits for the worker's ``Accepted``
(or a stage's ``Failed``), so a rejected or unplaceable request gets a real 4xx/5xx, not a 200
with an error inside. After that, a failure becomes one error event and the stream ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from edge.context import EdgeContext
from edge.errors import error_body
from edge.limits import Grant
from edge.pipeline import Stream
from edge.rendering import DONE_EVENT, Collected, Renderer, event
from edge.sse import EventStreamResponse, wait_disconnect
from llmaas.errors import RemoteError, ServerError
from llmaas.wire import Accepted, Delta, Done, Failed, GenerateJob, Usage

_UNEXPECTED = ServerError("A worker sent frames out of order.")


async def answer(
    request: Request,
    edge: EdgeContext,
    job: GenerateJob,
    renderer: Renderer,
    grant: Grant,
    *,
    stream: bool,
    include_usage: bool,
) -> Response:
    """The answer to one generation request; ``grant`` is settled with the real usage however it ends."""
    pipeline = edge.pipeline
    rid = job.request_id
    tally = Tally(edge, grant)
    try:
        frames = await pipeline.submit(job)
    except BaseException:
        tally.close()
        raise
    watcher = asyncio.create_task(wait_disconnect(request.receive, lambda: pipeline.cancel(rid)))
    first = await frames.next()
    if type(first) is not Accepted:
        watcher.cancel()
        pipeline.finish(rid)
        tally.close()
        raise RemoteError(first.error) if isinstance(first, Failed) else _UNEXPECTED
    started = time.perf_counter()
    if stream:
        events = _events(
            edge=edge,
            job=job,
            frames=frames,
            renderer=renderer,
            include_usage=include_usage,
            started=started,
            tally=tally,
        )
        return EventStreamResponse(events, watcher)
    try:
        collected, done = await _collect(edge, job, frames, started, tally)
    finally:
        watcher.cancel()
        pipeline.finish(rid)
        settling = tally.close()
    if settling is not None:
        await settling  # a client that waits for this answer then sees its usage in the limits
    return Response(renderer.whole(collected, done.finish_reason, done.usage), media_type="application/json")


class Tally:
    """The tokens a request really produced, for its grant: the usage, or the deltas if it broke off."""

    __slots__ = ("edge", "generated", "grant", "usage")

    def __init__(self, edge: EdgeContext, grant: Grant) -> None:
        self.edge = edge
        self.grant = grant
        self.generated = 0
        self.usage: Usage | None = None

    def close(self) -> asyncio.Task[None] | None:
        return self.edge.gate.limiter.settle(self.grant, self.usage, self.generated)


def _count(edge: EdgeContext, model: str, usage: Usage) -> None:
    edge.metrics.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
    edge.metrics.tokens.labels(model, "completion").inc(usage.completion_tokens)


async def _collect(
    edge: EdgeContext, job: GenerateJob, frames: Stream, started: float, tally: Tally
) -> tuple[Collected, Done]:
    collected = Collected()
    first = True
    while True:
        frame = await frames.next()
        if type(frame) is Delta:
            if first:
                edge.metrics.ttft.labels(job.model).observe(time.perf_counter() - started)
                first = False
            collected.add(frame)
            tally.generated += frame.tokens
        elif type(frame) is Done:
            _count(edge, job.model, frame.usage)
            tally.usage = frame.usage
            return collected, frame
        elif type(frame) is Failed:
            raise RemoteError(frame.error)
        else:
            raise _UNEXPECTED


async def _events(
    *,
    edge: EdgeContext,
    job: GenerateJob,
    frames: Stream,
    renderer: Renderer,
    include_usage: bool,
    started: float,
    tally: Tally,
) -> AsyncIterator[bytes]:
    """SSE events; frames already queued are sent together, so a busy edge makes fewer writes."""
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
                        edge.metrics.ttft.labels(job.model).observe(time.perf_counter() - started)
                        first_text = False
                    pending.append(renderer.delta(frame))
                    tally.generated += frame.tokens
                elif kind is Done:
                    assert isinstance(frame, Done)
                    _count(edge, job.model, frame.usage)
                    tally.usage = frame.usage
                    pending.append(renderer.closing(frame.finish_reason))
                    if include_usage:
                        pending.append(renderer.usage(frame.usage))
                    pending.append(DONE_EVENT)
                    yield b"".join(pending)
                    return
                else:
                    error = frame.error if isinstance(frame, Failed) else _UNEXPECTED.to_wire()
                    pending.append(event(error_body(error.message, error.type, error.param, error.code)))
                    yield b"".join(pending)
                    return
                if frames.queue.empty():
                    break
                frame = frames.queue.get_nowait()
            yield b"".join(pending)
            pending = []
    finally:
        edge.pipeline.finish(job.request_id)
        tally.close()
