"""The synthetic engine: deterministic text, honest finish reasons, stop sequences, usage."""

import asyncio
import math

import pytest

from llmaas.errors import InvalidRequest
from llmaas.wire import ChatMessage, Delta, Done, EmbedJob, GenerateJob, SamplingParams
from workers.engines.synthetic import CHAT_TEMPLATE_OVERHEAD, SyntheticConfig, SyntheticEngine

FAST = SyntheticConfig(tokens_per_s=0, completion_tokens=12)


def job(max_tokens: int | None = None, stop: list[str] | None = None, seed: int | None = 1) -> GenerateJob:
    return GenerateJob(
        request_id="r",
        model=FAST.chat_model,
        kind="chat",
        created=0,
        messages=[ChatMessage(role="user", content="three little words")],
        sampling=SamplingParams(max_tokens=max_tokens, stop=stop or [], seed=seed),
    )


async def run(engine: SyntheticEngine, j: GenerateJob) -> tuple[str, Done]:
    parts: list[str] = []
    async for frame in engine.generate(j):
        if isinstance(frame, Delta):
            parts.append(frame.text)
        else:
            return "".join(parts), frame
    raise AssertionError("no Done frame")


async def test_same_job_same_text_and_seed_changes_it() -> None:
    engine = SyntheticEngine(FAST)
    first, _ = await run(engine, job())
    again, _ = await run(engine, job())
    other, _ = await run(engine, job(seed=2))
    assert first == again
    assert first != other


async def test_natural_end_is_stop_and_max_tokens_is_length() -> None:
    engine = SyntheticEngine(FAST)
    text, done = await run(engine, job())
    assert done.finish_reason == "stop"
    assert done.usage.completion_tokens == 12 == len(text.split())
    assert done.usage.prompt_tokens == 3 + CHAT_TEMPLATE_OVERHEAD
    short, done = await run(engine, job(max_tokens=4))
    assert done.finish_reason == "length"
    assert done.usage.completion_tokens == 4
    assert text.startswith(short)


async def test_stop_sequence_cuts_before_it_and_never_leaks_a_prefix() -> None:
    engine = SyntheticEngine(FAST)
    full, _ = await run(engine, job())
    words = full.split()
    stop = f"{words[4]} {words[5]}"
    text, done = await run(engine, job(stop=[stop]))
    assert done.finish_reason == "stop"
    assert text == full[: full.index(stop)]
    assert stop not in text


async def test_embeddings_are_unit_vectors_and_deterministic() -> None:
    engine = SyntheticEngine(FAST)
    j = EmbedJob(request_id="e", model=FAST.embedding_model, created=0, inputs=["a b", "c"])
    result = await engine.embed(j)
    assert len(result.vectors) == 2 and len(result.vectors[0]) == FAST.embedding_dim
    assert math.isclose(sum(v * v for v in result.vectors[0]), 1.0, rel_tol=1e-9)
    assert (await engine.embed(j)).vectors == result.vectors
    assert result.usage.prompt_tokens == 3


def test_check_refuses_the_wrong_kind_of_model() -> None:
    engine = SyntheticEngine(FAST)
    with pytest.raises(InvalidRequest):
        engine.check(EmbedJob(request_id="e", model=FAST.chat_model, created=0, inputs=["x"]))
    with pytest.raises(InvalidRequest):
        engine.check(GenerateJob(request_id="g", model="unknown", kind="chat", created=0))


async def test_closing_the_stream_stops_generation_and_frees_the_slot() -> None:
    engine = SyntheticEngine(SyntheticConfig(tokens_per_s=1000, completion_tokens=10_000))
    stream = engine.generate(job())
    assert isinstance(await anext(stream), Delta)
    assert engine.load().running == 1
    await stream.aclose()  # what cancelling the worker's task does
    assert engine.load().running == 0


async def test_many_streams_run_concurrently() -> None:
    engine = SyntheticEngine(SyntheticConfig(tokens_per_s=0, completion_tokens=5))
    results = await asyncio.gather(*(run(engine, job(seed=i)) for i in range(50)))
    assert all(done.usage.completion_tokens == 5 for _, done in results)
    assert engine.load().running == 0
