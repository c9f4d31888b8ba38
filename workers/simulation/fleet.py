"""A fleet of simulated engines in virtual time, placed by the scheduler's own code.

No NATS and no clock: events (arrivals, engine steps, heartbeats) are taken from a heap in time
order. What the scheduler decides with is what it has in production: a ``Fleet`` fed by heartbeats
every ``heartbeat_s`` (each worker at its own phase) plus its own count of what it placed, first
tokens and ends; a ``PrefixIndex`` fed by the engines' cache events; ``Placer.pick`` of the policy.
Several scheduler replicas can place (requests shared out at random, as a NATS queue group does):
each has its own fleet view and placements, all hear the same heartbeats and cache events.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from llmaas.fleet import Fleet
from llmaas.wire import Heartbeat, Perf
from workers.scheduler.placement import Ask, Placer, Policy
from workers.scheduler.prefixes import PrefixIndex
from workers.simulation.engine import EngineModel, Seq

MODEL = "simulated"


@dataclass(frozen=True, slots=True)
class Request:
    request_id: str
    arrival: float
    blocks: tuple[int, ...]
    """Salted ids of the sequence's full blocks (prompt, then answer)."""
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Outcome:
    request: Request
    worker: str
    first_token_at: float
    ended_at: float
    cached_tokens: int

    @property
    def ttft(self) -> float:
        return self.first_token_at - self.request.arrival


FollowUp = Callable[[Request, float], Request | None]
"""The request that a finished one leads to (a chat's next turn), given the time it ended."""


@dataclass
class Knobs:
    """What the scheduler is allowed to know, for ablations."""

    heartbeat_s: float = 1.0
    own_accounting: bool = True
    """Count placements between heartbeats (else heartbeats alone)."""
    progress: bool = True
    """Also hear each placed request's first token and end (else only placements are counted)."""
    cache_events: bool = True
    """Feed the precise prefix index from the engines' cache events."""
    schedulers: int = 1


@dataclass
class _Worker:
    worker_id: str
    engine: EngineModel
    stepping: bool = False
    seq_seconds: float = 0.0
    """Integral of sequences in the worker over time: its load, averaged later."""


@dataclass
class Simulation:
    policy: Policy
    perf: Perf
    workers: int = 12
    knobs: Knobs = field(default_factory=Knobs)
    seed: int = 0
    follow_up: FollowUp | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.index = PrefixIndex()
        self.placers = [
            Placer(self.policy, rng=random.Random(self.seed * 31 + i)) for i in range(self.knobs.schedulers)
        ]
        self.views = [Fleet() for _ in self.placers]
        self.fleet: list[_Worker] = []
        for i in range(self.workers):
            wid = f"w{i:02d}"
            engine = EngineModel(
                self.perf, on_stored=self._feed(wid, stored=True), on_removed=self._feed(wid, stored=False)
            )
            self.fleet.append(_Worker(wid, engine))
        self._heap: list[tuple[float, int, int, object]] = []
        self._order = 0
        self._open: dict[str, tuple[Request, int, int, int, float]] = {}
        """Request id -> (request, worker index, scheduler index, the prompt tokens its scheduler
        expected the worker to compute, first-token time or -1)."""
        self._pending = 0
        self.outcomes: list[Outcome] = []
        self.now = 0.0

    def _feed(self, wid: str, stored: bool) -> Callable[[Iterable[int]], None]:
        def feed(blocks: Iterable[int]) -> None:
            if not self.knobs.cache_events:
                return
            if stored:
                self.index.stored(wid, MODEL, blocks)
            else:
                self.index.removed(wid, MODEL, blocks)

        return feed

    # --- the event loop ------------------------------------------------------------------------------

    _ARRIVE, _STEP, _BEAT = 0, 1, 2

    def _at(self, when: float, kind: int, what: object) -> None:
        self._order += 1
        heapq.heappush(self._heap, (when, self._order, kind, what))

    def run(self, requests: Iterable[Request]) -> list[Outcome]:
        for request in requests:
            self._at(request.arrival, self._ARRIVE, request)
            self._pending += 1
        for i in range(self.workers):
            self._beat(i, again=False)  # workers announce themselves at start, then beat at their phase
            self._at(self._rng.uniform(0, self.knobs.heartbeat_s), self._BEAT, i)
        while self._heap and (self._pending or self._open):
            when, _, kind, what = heapq.heappop(self._heap)
            self.now = when
            if kind == self._ARRIVE:
                assert isinstance(what, Request)
                self._pending -= 1
                self._arrive(what)
            elif kind == self._STEP:
                assert isinstance(what, int)
                self._step_end(what)
            else:
                assert isinstance(what, int)
                self._beat(what)
        return self.outcomes

    def _beat(self, i: int, again: bool = True) -> None:
        worker = self.fleet[i]
        load = worker.engine.load()
        beat = Heartbeat(
            worker_id=worker.worker_id,
            engine="simulated",
            models=[MODEL],
            running=load.running,
            waiting=load.waiting,
            capacity=self.perf.max_seqs,
            started_at=0.0,
            interval_s=self.knobs.heartbeat_s,
            kv_cache_usage=load.kv_cache_usage,
            queued_prefill_tokens=load.queued_prefill_tokens,
            perf=self.perf,
        )
        for view in self.views:
            view.observe(beat, self.now)
        if again:
            self._at(self.now + self.knobs.heartbeat_s, self._BEAT, i)

    def _arrive(self, request: Request) -> None:
        s = self._rng.randrange(len(self.placers))
        prompt_blocks = request.blocks[: request.prompt_tokens // self.perf.block_size]
        ask = Ask(
            MODEL, blocks=prompt_blocks, prompt_tokens=request.prompt_tokens, block_size=self.perf.block_size
        )
        chosen = self.placers[s].pick(ask, self.views[s].snapshot(self.now), self.index)
        assert chosen is not None, "every simulated worker serves the model"
        i = int(chosen.worker.worker_id[1:])
        if self.knobs.own_accounting:
            self.views[s].note_assigned(chosen.worker.worker_id, chosen.uncached_tokens(ask))
        self._open[request.request_id] = (request, i, s, chosen.uncached_tokens(ask), -1.0)
        seq = Seq(request.request_id, request.prompt_tokens, request.output_tokens, request.blocks)
        self.fleet[i].engine.submit(seq)
        self._kick(i)

    def _kick(self, i: int) -> None:
        worker = self.fleet[i]
        if worker.stepping:
            return
        duration = worker.engine.begin()
        if duration is None:
            return
        worker.stepping = True
        worker.seq_seconds += worker.engine.sequences * duration
        self._at(self.now + duration, self._STEP, i)

    def _step_end(self, i: int) -> None:
        worker = self.fleet[i]
        worker.stepping = False
        first, ended = worker.engine.end()
        for seq in first:
            request, wi, s, predicted, _ = self._open[seq.request_id]
            self._open[seq.request_id] = (request, wi, s, predicted, self.now)
            if self.knobs.own_accounting and self.knobs.progress:
                self.views[s].note_first_token(worker.worker_id, predicted)
        for seq in ended:
            request, _, s, _, first_at = self._open.pop(seq.request_id)
            if self.knobs.own_accounting and self.knobs.progress:
                self.views[s].note_ended(worker.worker_id)
            self.outcomes.append(Outcome(request, worker.worker_id, first_at, self.now, seq.cached_tokens))
            if self.follow_up is not None:
                following = self.follow_up(request, self.now)
                if following is not None:
                    self._pending += 1
                    self._at(max(following.arrival, self.now), self._ARRIVE, following)
        self._kick(i)

    def load_cv(self) -> float:
        """Coefficient of variation of the workers' time-averaged sequence counts (0: even)."""
        loads = [w.seq_seconds for w in self.fleet]
        mean = sum(loads) / len(loads)
        if mean <= 0:
            return 0.0
        var = sum((x - mean) ** 2 for x in loads) / len(loads)
        return float(var**0.5 / mean)
