"""A client slower than its engine: its frames are bounded at the edge, its answer cancelled, and
what was generated but never read is still counted for billing (edge.pipeline)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from edge.metrics import EdgeMetrics
from edge.pipeline import Pipeline, Stream
from edge.settings import EdgeSettings
from llmaas import codec, subjects
from llmaas.wire import Accepted, Delta, Failed


def test_a_full_buffer_cancels_the_answer_and_keeps_the_count_of_unread_tokens() -> None:
    pipeline = Pipeline(EdgeSettings(stream_buffer_frames=16), EdgeMetrics(), edge_id="e1")
    cancels: list[tuple[str, str]] = []
    pipeline._send_cancel = lambda worker, rid: cancels.append((worker, rid))  # type: ignore[method-assign]

    async def scenario() -> None:
        stream = pipeline._streams["r1"] = Stream("r1", 0.0)
        reply = subjects.reply("e1", "r1")
        frames = [Accepted(worker_id="w1"), *(Delta(text="x", tokens=2) for _ in range(40))]
        for frame in frames:
            await pipeline._on_frame(SimpleNamespace(subject=reply, data=codec.encode(frame), headers=None))  # type: ignore[arg-type]
        # 16 frames waited (the Accepted and 15 deltas); the 17th arrival cancelled the answer.
        assert cancels == [("w1", "r1")]
        assert stream.dropped_tokens == 15 * 2
        assert stream.queue.qsize() == 1 and isinstance(stream.queue.get_nowait(), Failed)
        assert "r1" not in pipeline._streams  # later frames are let go
        assert pipeline.metrics.slow_readers._value.get() == 1

    asyncio.run(scenario())
