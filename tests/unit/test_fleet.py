"""The fleet view: liveness from heartbeats, with time passed in."""

from llmaas.fleet import MISSED_BEATS_BEFORE_DEAD, Fleet
from llmaas.wire import Heartbeat


def beat(wid: str, models: list[str], running: int = 0, leaving: bool = False) -> Heartbeat:
    return Heartbeat(
        worker_id=wid,
        engine="synthetic",
        models=models,
        running=running,
        waiting=0,
        capacity=8,
        started_at=100.0 + len(wid),
        interval_s=1.0,
        leaving=leaving,
    )


def test_a_worker_is_alive_until_it_misses_its_beats() -> None:
    fleet = Fleet()
    fleet.observe(beat("w1", ["a"]), now=10.0)
    assert fleet.is_alive("w1", 10.0 + MISSED_BEATS_BEFORE_DEAD)
    assert not fleet.is_alive("w1", 10.0 + MISSED_BEATS_BEFORE_DEAD + 0.01)
    assert fleet.expire(10.0 + MISSED_BEATS_BEFORE_DEAD + 0.01) == ["w1"]
    assert fleet.snapshot(11.0) == ()


def test_models_lists_what_live_non_leaving_workers_serve() -> None:
    fleet = Fleet()
    fleet.observe(beat("w1", ["a", "b"]), now=0.0)
    fleet.observe(beat("w22", ["b"]), now=0.0)
    fleet.observe(beat("w3", ["c"], leaving=True), now=0.0)
    assert fleet.models(1.0) == {"a": 102.0, "b": 102.0}  # earliest start among servers


def test_local_assignments_count_until_the_next_heartbeat() -> None:
    fleet = Fleet()
    fleet.observe(beat("w1", ["a"], running=2), now=0.0)
    fleet.note_assigned("w1")
    fleet.note_assigned("w1")
    (view,) = fleet.snapshot(0.5)
    assert view.load == 4
    fleet.observe(beat("w1", ["a"], running=3), now=1.0)
    (view,) = fleet.snapshot(1.0)
    assert view.load == 3


def test_prefill_and_ends_seen_between_heartbeats_adjust_the_last_one() -> None:
    fleet = Fleet()
    fleet.observe(beat("w1", ["a"], running=2), now=0.0)
    fleet.note_assigned("w1", prefill_tokens=500)
    fleet.note_assigned("w1", prefill_tokens=300)
    (view,) = fleet.snapshot(0.1)
    assert (view.load, view.queued_prefill_tokens) == (4, 800)
    fleet.note_first_token("w1", 500)
    fleet.note_ended("w1")
    fleet.note_ended("w1")
    fleet.note_ended("w1")  # one placed before the beat: the beat had counted it
    (view,) = fleet.snapshot(0.2)
    assert (view.load, view.queued_prefill_tokens) == (1, 300)
    fleet.note_ended("w1")
    fleet.note_ended("w1")  # more ends than the beat knew of (a stale beat): never below zero
    (view,) = fleet.snapshot(0.3)
    assert view.load == 0


def test_a_model_is_unheard_of_only_once_workers_were_heard_and_none_ever_served_it() -> None:
    fleet = Fleet()
    assert not fleet.unheard_of("a")  # nothing heard yet: cannot tell
    fleet.observe(beat("w1", ["a"]), now=0.0)
    assert fleet.unheard_of("z") and not fleet.unheard_of("a")
    fleet.expire(100.0)  # its worker gone (restarting): "a" still exists, it is only unserved
    assert fleet.snapshot(100.0) == () and not fleet.unheard_of("a")
