"""One generation request through the pipeline: submit, wait for a worker, then stream or collect.

The HTTP status is decided before any byte is sent: the edge waits for the worker's ``Accepted``
and the guard's verdict (or a stage's ``Failed``), so a rejected or unplaceable request gets a real
4xx/5xx, not a 200 with an error inside. After that, a failure becomes one error event and the stream ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from edge.context import EdgeContext
from edge.errors import error_body
from edge.gate import Principal
from edge.metrics import EdgeMetrics
from edge.pipeline import OUT_OF_ORDER, Stream
from edge.rendering import DONE_EVENT, Collected, Renderer, event
from edge.sse import EventStreamResponse
from edge.usage import Tally
from llmaas.errors import RemoteError
from llmaas.wire import Delta, Done, Failed, GenerateJob, Usage


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
    """The answer to one generation request: admitted under the caller's limits, then metered and
    settled with the real usage however it ends."""
    pipeline = edge.pipeline
    job = edge.gate.bounded(job)
    rid = job.request_id
    tally = edge.tally(job)
    try:
        reserve = job.sampling.max_tokens
        assert reserve is not None  # bounded() gave every job one
        tally.grant = await edge.gate.admit(request, principal, reserve)
        frames = await pipeline.submit(job)
    except BaseException as exc:
        tally.failed(exc)
        tally.close()
        raise
    watcher = tally.watch_client(request, pipeline.cancel)
    try:
        first = await frames.started()
    except RemoteError as error:
        watcher.cancel()
        pipeline.finish(rid)
        tally.failed(error)
        tally.close()
        raise
    tally.worker = first.worker_id
    if stream:
        events = _events(
            edge=edge, job=job, frames=frames, renderer=renderer, include_usage=include_usage, tally=tally
        )

        return EventStreamResponse(events, watcher)
    try:
        collected, done = await collect(edge.metrics, job, frames, tally)
    except BaseException as exc:
        tally.failed(exc)
        raise
    finally:
        watcher.cancel()
        pipeline.finish(rid)
        settling = tally.close()
    if settling is not None:
        await settling  # a client that waits for this answer then sees its usage in the limits
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
    *,
    edge: EdgeContext,
    job: GenerateJob,
    frames: Stream,
    renderer: Renderer,
    include_usage: bool,
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
                        edge.metrics.ttft.labels(job.model).observe(tally.first_token())
                        first_text = False
                    pending.append(renderer.delta(frame))
                    tally.generated += frame.tokens
                elif kind is Done:
                    assert isinstance(frame, Done)
                    _count(edge.metrics, job.model, frame.usage)
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
        edge.pipeline.finish(job.request_id)
        tally.close()
