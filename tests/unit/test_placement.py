"""Placement: each filter and scorer with its table, then the picker."""

import random

import pytest

from llmaas.fleet import WorkerView
from workers.scheduler.placement import accepting, least_loaded, pick, serves_model


def worker(
    wid: str, models: tuple[str, ...] = ("m",), running: int = 0, capacity: int = 10, leaving: bool = False
) -> WorkerView:
    return WorkerView(
        worker_id=wid,
        engine="synthetic",
        models=frozenset(models),
        running=running,
        waiting=0,
        capacity=capacity,
        started_at=0.0,
        leaving=leaving,
    )


@pytest.mark.parametrize(
    ("models", "model", "expected"), [(("m",), "m", True), (("a", "b"), "m", False), ((), "m", False)]
)
def test_serves_model(models: tuple[str, ...], model: str, expected: bool) -> None:
    assert serves_model(model, worker("w", models)) is expected


@pytest.mark.parametrize(("leaving", "expected"), [(False, True), (True, False)])
def test_accepting(leaving: bool, expected: bool) -> None:
    assert accepting("m", worker("w", leaving=leaving)) is expected


@pytest.mark.parametrize(
    ("running", "capacity", "expected"),
    [(0, 10, 1.0), (5, 10, 0.5), (10, 10, 0.0), (15, 10, 0.0), (0, 0, 1.0)],
)
def test_least_loaded(running: int, capacity: int, expected: float) -> None:
    assert least_loaded("m", worker("w", running=running, capacity=capacity)) == pytest.approx(expected)


def test_pick_prefers_the_least_loaded_worker_serving_the_model() -> None:
    fleet = (worker("busy", running=8), worker("idle", running=1), worker("other", models=("x",)))
    chosen = pick("m", fleet)
    assert chosen is not None and chosen.worker_id == "idle"


def test_pick_skips_leaving_workers_and_returns_none_without_candidates() -> None:
    assert pick("m", (worker("a", leaving=True),)) is None
    assert pick("m", (worker("a", models=("x",)),)) is None
    assert pick("m", ()) is None


def test_ties_are_spread_over_equal_workers() -> None:
    fleet = (worker("a"), worker("b"), worker("c"))
    rng = random.Random(1)
    chosen = {pick("m", fleet, rng=rng).worker_id for _ in range(60)}  # type: ignore[union-attr]
    assert chosen == {"a", "b", "c"}
