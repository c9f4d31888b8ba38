"""The engine model: steps as vLLM schedules them, and its prefix cache in blocks."""

from __future__ import annotations

import msgspec
import pytest

from workers.simulation.engine import EngineModel, Seq
from workers.simulation.profiles import PROFILES

PERF = msgspec.structs.replace(PROFILES["llama-8b-h100"], kv_tokens=64 * 16, token_budget=512, max_seqs=4)
"""A small engine: 64 blocks of 16 tokens, 512 tokens a step, 4 sequences."""


def seq(name: str, prompt: int, output: int, base: int = 1000) -> Seq:
    blocks = tuple(base + b for b in range((prompt + output) // 16))
    return Seq(name, prompt, output, blocks)


def drain(engine: EngineModel) -> tuple[dict[str, int], dict[str, int], float]:
    """Run to the end: the step of each first token, of each end, and the time it took."""
    first, ended, steps, seconds = {}, {}, 0, 0.0
    while (duration := engine.begin()) is not None:
        seconds += duration
        steps += 1
        got, done = engine.end()
        first.update({s.request_id: steps for s in got})
        ended.update({s.request_id: steps for s in done})
    return first, ended, seconds


def test_a_prompt_is_prefilled_in_chunks_of_the_step_budget_then_decoded_a_token_a_step() -> None:
    engine = EngineModel(PERF)
    engine.submit(seq("a", prompt=700, output=5))
    first, ended, seconds = drain(engine)
    assert first == {"a": 2}  # 512 + 188 tokens
    assert ended == {"a": 6}  # the first token with the last chunk, then four decode steps
    expected = PERF.step_seconds(512, 0) + PERF.step_seconds(188, 0)
    expected += sum(PERF.step_seconds(1, 701 + i) for i in range(4))
    assert seconds == pytest.approx(expected)


def test_a_cached_prefix_is_not_computed_again_and_the_last_token_always_is() -> None:
    stored: list[int] = []
    engine = EngineModel(PERF, on_stored=stored.extend)
    engine.submit(seq("a", prompt=320, output=1))
    drain(engine)
    assert stored == [1000 + b for b in range(20)]  # 20 full prompt blocks (the answer fills none)
    again = seq("b", prompt=320, output=1)
    engine.submit(again)
    drain(engine)
    assert again.cached_tokens == 304  # 19 blocks: the 20th holds the last prompt token
    longer = seq("c", prompt=400, output=1)
    engine.submit(longer)
    drain(engine)
    assert longer.cached_tokens == 320


def test_another_tenants_blocks_are_other_ids_and_never_hit() -> None:
    engine = EngineModel(PERF)
    engine.submit(seq("a", prompt=320, output=1, base=1000))
    drain(engine)
    other = seq("b", prompt=320, output=1, base=5000)
    engine.submit(other)
    drain(engine)
    assert other.cached_tokens == 0


def test_the_least_recently_freed_blocks_are_evicted_first_and_reported() -> None:
    removed: list[int] = []
    engine = EngineModel(PERF, on_removed=removed.extend)
    engine.submit(seq("old", prompt=480, output=1, base=1000))  # 30 blocks
    drain(engine)
    engine.submit(seq("new", prompt=480, output=1, base=2000))  # 30 more: 60 of 64 cached
    drain(engine)
    assert removed == []
    engine.submit(seq("big", prompt=320, output=1, base=3000))  # 21 blocks for 4 free: 17 go
    drain(engine)
    # "old" freed its tail first, so its tail goes first and its head stays usable longest.
    assert removed == [1000 + b for b in range(29, 12, -1)]
    assert engine.holds(1000) and not engine.holds(1029) and engine.holds(2029)


def test_a_sequence_larger_than_the_whole_cache_is_refused() -> None:
    with pytest.raises(ValueError, match="KV cache"):
        EngineModel(PERF).submit(seq("a", prompt=1000, output=100))


def test_sequences_wait_for_slots_and_memory() -> None:
    engine = EngineModel(PERF)
    for i in range(6):
        engine.submit(seq(f"s{i}", prompt=16, output=50, base=1000 * (i + 1)))
    engine.begin()
    load = engine.load()
    assert (load.running, load.waiting) == (4, 2)  # max_seqs 4
    engine.end()
    huge = EngineModel(PERF)
    huge.submit(seq("a", prompt=600, output=200, base=1))  # 50 blocks
    huge.submit(seq("b", prompt=600, output=200, base=9000))  # 50 more do not fit in 64
    huge.begin()
    assert (huge.load().running, huge.load().waiting) == (1, 1)
    first, ended, _ = drain(huge)
    assert first["b"] > ended["a"] - 1  # b starts once a has ended and freed its blocks
