"""Placement: each filter and scorer with its table, then the policies' picker."""

from __future__ import annotations

import random

import pytest

from llmaas.fleet import WorkerView
from workers.scheduler.placement import POLICIES, Ask, Candidate, Placer, weighted
from workers.scheduler.placement.cost import RECOMPUTE_WEIGHT, predicted_ttft
from workers.scheduler.placement.filters import accepting, serves_model
from workers.scheduler.placement.load import kv_headroom, least_loaded, queue
from workers.scheduler.placement.prefix import prefix_affinity
from workers.scheduler.prefixes import PrefixIndex
from workers.simulation.profiles import PROFILES

PERF = PROFILES["llama-8b-h100"]
ASK = Ask("m", blocks=tuple(range(100)), prompt_tokens=1600)


def worker(
    wid: str = "w",
    *,
    models: tuple[str, ...] = ("m",),
    running: int = 0,
    waiting: int = 0,
    capacity: int = 10,
    leaving: bool = False,
    kv: float = 0.0,
    prefill: int = 0,
) -> WorkerView:
    return WorkerView(
        worker_id=wid,
        engine="simulated",
        models=frozenset(models),
        running=running,
        waiting=waiting,
        capacity=capacity,
        started_at=0.0,
        leaving=leaving,
        kv_cache_usage=kv,
        queued_prefill_tokens=prefill,
        perf=PERF,
    )


def scores(scorer: object, *candidates: Candidate, ask: Ask = ASK) -> list[float]:
    return [round(s, 3) for s in scorer(ask, list(candidates))]  # type: ignore[operator]


# --- filters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("models", "expected"), [(("m",), True), (("a", "b"), False), ((), False)])
def test_serves_model(models: tuple[str, ...], expected: bool) -> None:
    assert serves_model(ASK, worker(models=models)) is expected


@pytest.mark.parametrize(("leaving", "expected"), [(False, True), (True, False)])
def test_accepting(leaving: bool, expected: bool) -> None:
    assert accepting(ASK, worker(leaving=leaving)) is expected


# --- scorers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("running", "capacity", "expected"),
    [(0, 10, 1.0), (5, 10, 0.5), (10, 10, 0.0), (15, 10, 0.0), (0, 0, 1.0)],
)
def test_least_loaded(running: int, capacity: int, expected: float) -> None:
    assert scores(least_loaded, Candidate(worker(running=running, capacity=capacity))) == [expected]


@pytest.mark.parametrize(
    ("waiting", "expected"),
    [((0, 5, 10), [1.0, 0.5, 0.0]), ((3, 3), [1.0, 1.0]), ((2, 4, 4), [1.0, 0.0, 0.0])],
)
def test_queue_is_min_max_normalised_over_the_candidates(
    waiting: tuple[int, ...], expected: list[float]
) -> None:
    assert scores(queue, *(Candidate(worker(str(i), waiting=w)) for i, w in enumerate(waiting))) == expected


@pytest.mark.parametrize(("kv", "expected"), [(0.0, 1.0), (0.25, 0.75), (1.0, 0.0)])
def test_kv_headroom(kv: float, expected: float) -> None:
    assert scores(kv_headroom, Candidate(worker(kv=kv))) == [expected]


@pytest.mark.parametrize(
    ("cached_blocks", "prompt_tokens", "expected"),
    [(0, 1600, 0.0), (50, 1600, 0.5), (100, 1600, 0.999), (200, 1600, 0.999), (10, 0, 0.0)],
)
def test_prefix_affinity_is_the_share_of_the_prompt_held(
    cached_blocks: int, prompt_tokens: int, expected: float
) -> None:
    ask = Ask("m", blocks=ASK.blocks, prompt_tokens=prompt_tokens)
    # Never the whole prompt: its last token is always computed, for the first token's logits.
    assert scores(prefix_affinity, Candidate(worker(), cached_blocks), ask=ask) == [expected]


def test_predicted_ttft_is_the_prefill_of_an_idle_worker_in_seconds() -> None:
    idle = predicted_ttft(ASK, Candidate(worker()))
    assert idle == pytest.approx(PERF.step_seconds(1600, 0) + RECOMPUTE_WEIGHT * 1600 * PERF.token_s)


@pytest.mark.parametrize(
    ("slower", "why"),
    [
        (Candidate(worker(prefill=20_000)), "prompts queued before it"),
        (Candidate(worker(running=300, kv=0.5)), "sequences decoding beside it"),
        (Candidate(worker(running=1024)), "every sequence slot taken"),
        (Candidate(worker(kv=0.999, running=10)), "a KV cache too full for the prompt"),
    ],
)
def test_predicted_ttft_grows_with_what_stands_in_the_way(slower: Candidate, why: str) -> None:
    assert predicted_ttft(ASK, slower) > predicted_ttft(ASK, Candidate(worker())), why


def test_a_cached_prefix_cuts_the_predicted_ttft() -> None:
    cold, warm = Candidate(worker()), Candidate(worker(), cached_blocks=90)
    assert predicted_ttft(ASK, warm) < predicted_ttft(ASK, cold) / 5


# --- policies -------------------------------------------------------------------------------------


def placer(policy: str, seed: int = 1) -> Placer:
    return Placer(POLICIES[policy], rng=random.Random(seed))


def test_no_candidate_is_none() -> None:
    for name in POLICIES:
        assert placer(name).pick(ASK, (worker(leaving=True), worker(models=("x",)))) is None
        assert placer(name).pick(ASK, ()) is None


def test_round_robin_takes_turns_whatever_the_load() -> None:
    fleet = (worker("a", running=9), worker("b"), worker("c"))
    rr = placer("round-robin")
    chosen = [rr.pick(ASK, fleet).worker.worker_id for _ in range(6)]  # type: ignore[union-attr]
    assert sorted(chosen) == ["a", "a", "b", "b", "c", "c"]


def test_least_loaded_prefers_the_idle_and_spreads_ties() -> None:
    assert (
        placer("least-loaded")
        .pick(ASK, (worker("busy", running=8), worker("idle", running=1)))
        .worker.worker_id
        == "idle"
    )  # type: ignore[union-attr]
    ties = (worker("a"), worker("b"), worker("c"))
    ll = placer("least-loaded")
    assert {ll.pick(ASK, ties).worker.worker_id for _ in range(60)} == {"a", "b", "c"}  # type: ignore[union-attr]


def test_llm_d_follows_where_it_sent_a_prefix_before() -> None:
    fleet = (worker("a"), worker("b"), worker("c"))
    llmd = placer("llm-d")
    first = llmd.pick(ASK, fleet)
    assert first is not None and first.cached_blocks == 0
    again = [llmd.pick(ASK, fleet) for _ in range(5)]
    assert {c.worker.worker_id for c in again if c} == {first.worker.worker_id}
    assert all(c is not None and c.cached_blocks == len(ASK.blocks) for c in again)


def test_default_goes_where_the_prefix_is_cached_unless_that_worker_is_far_slower() -> None:
    index = PrefixIndex()
    index.stored("warm", "m", ASK.blocks)
    default = placer("default")
    fleet = (worker("cold"), worker("warm", prefill=3000))
    assert default.pick(ASK, fleet, index).worker.worker_id == "warm"  # type: ignore[union-attr]
    swamped = (worker("cold"), worker("warm", prefill=400_000))
    assert default.pick(ASK, swamped, index).worker.worker_id == "cold"  # type: ignore[union-attr]


def test_default_does_not_use_prefixes_of_another_model() -> None:
    index = PrefixIndex()
    index.stored("warm", "other-model", ASK.blocks)
    fleet = (worker("cold"), worker("warm", prefill=3000))
    assert placer("default").pick(ASK, fleet, index).worker.worker_id == "cold"  # type: ignore[union-attr]


def test_weights_from_settings_replace_a_policys_by_scorer_name() -> None:
    heavier = weighted(POLICIES["llm-d"], {"prefix_affinity": 10.0})
    assert [(w.scorer.__name__, w.weight) for w in heavier.scorers] == [
        ("prefix_affinity", 10.0),
        ("queue", 2.0),
        ("kv_headroom", 2.0),
    ]
    with pytest.raises(ValueError, match="has no scorer nonsense"):
        weighted(POLICIES["default"], {"nonsense": 1.0})
