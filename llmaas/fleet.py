"""The fleet as seen from heartbeats: which workers are alive, what they serve, how loaded they are.

The edge keeps one (for /v1/models and to notice a worker that dies mid-stream) and so does the
scheduler (for placement). Time is passed in, so the logic is pure and testable without sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmaas.wire import Heartbeat, Perf

MISSED_BEATS_BEFORE_DEAD = 3.0


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker in a fleet snapshot: its last heartbeat, plus what this process saw change since
    (``assigned``: sequences placed less those ended; ``queued_prefill_tokens`` includes the prompt
    tokens placed and not yet computed)."""

    worker_id: str
    engine: str
    models: frozenset[str]
    running: int
    waiting: int
    capacity: int
    started_at: float
    leaving: bool
    assigned: int = 0
    kv_cache_usage: float = 0.0
    queued_prefill_tokens: int = 0
    perf: Perf | None = None

    @property
    def load(self) -> int:
        return max(0, self.running + self.waiting + self.assigned)


@dataclass(slots=True)
class _Entry:
    beat: Heartbeat
    seen_at: float
    models: frozenset[str]
    assigned: int = 0
    prefill: int = 0


@dataclass
class Fleet:
    """Latest heartbeat of each worker; a worker is dead after ``MISSED_BEATS_BEFORE_DEAD`` intervals."""

    _entries: dict[str, _Entry] = field(default_factory=dict)
    _ever: set[str] = field(default_factory=set)
    """Every model a worker has served since this process started."""

    def observe(self, beat: Heartbeat, now: float) -> None:
        # A heartbeat reports everything the worker has accepted, so our own count starts over.
        self._entries[beat.worker_id] = _Entry(beat, now, frozenset(beat.models))
        self._ever.update(beat.models)

    def note_assigned(self, worker_id: str, prefill_tokens: int = 0) -> None:
        """A sequence placed on the worker, with the prompt tokens it is expected to compute."""
        entry = self._entries.get(worker_id)
        if entry is not None:
            entry.assigned += 1
            entry.prefill += prefill_tokens

    def note_first_token(self, worker_id: str, prefill_tokens: int) -> None:
        """A sequence's prompt is computed: it no longer waits for prefill."""
        entry = self._entries.get(worker_id)
        if entry is not None:
            entry.prefill -= prefill_tokens

    def note_ended(self, worker_id: str) -> None:
        entry = self._entries.get(worker_id)
        if entry is not None:
            entry.assigned -= 1

    def _alive(self, entry: _Entry, now: float) -> bool:
        return now - entry.seen_at <= entry.beat.interval_s * MISSED_BEATS_BEFORE_DEAD

    def expire(self, now: float) -> list[str]:
        """Forget workers whose heartbeats stopped; return their ids."""
        dead = [wid for wid, e in self._entries.items() if not self._alive(e, now)]
        for wid in dead:
            del self._entries[wid]
        return dead

    def forget(self, worker_id: str) -> None:
        """The worker is gone (nobody took a job sent to it): placed nowhere until it beats again."""
        self._entries.pop(worker_id, None)

    def is_alive(self, worker_id: str, now: float) -> bool:
        entry = self._entries.get(worker_id)
        return entry is not None and self._alive(entry, now)

    def snapshot(self, now: float) -> tuple[WorkerView, ...]:
        """Immutable view of the live workers, for placement and listings."""
        return tuple(
            WorkerView(
                worker_id=wid,
                engine=e.beat.engine,
                models=e.models,
                running=e.beat.running,
                waiting=e.beat.waiting,
                capacity=e.beat.capacity,
                started_at=e.beat.started_at,
                leaving=e.beat.leaving,
                assigned=e.assigned,
                kv_cache_usage=e.beat.kv_cache_usage,
                queued_prefill_tokens=max(0, e.beat.queued_prefill_tokens + e.prefill),
                perf=e.beat.perf,
            )
            for wid, e in self._entries.items()
            if self._alive(e, now)
        )

    def unheard_of(self, model: str) -> bool:
        """No worker has served ``model`` since this process started, though workers were heard:
        the model does not exist here (one whose workers are restarting, or an edge that has heard
        no heartbeat yet, cannot tell, and must not say so)."""
        return bool(self._ever) and model not in self._ever

    def models(self, now: float) -> dict[str, float]:
        """Models served by live, non-leaving workers, with the earliest start time of any of them."""
        served: dict[str, float] = {}
        for view in self.snapshot(now):
            if view.leaving:
                continue
            for model in view.models:
                served[model] = min(served.get(model, view.started_at), view.started_at)
        return served
