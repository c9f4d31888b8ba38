"""One engine as vLLM schedules it, step by step, with no clock of its own.

``begin()`` plans the next step as vLLM's scheduler does (every decoding sequence gets one token,
then prompt chunks fill the step's token budget, first the partly prefilled sequences, then new
ones in arrival order while blocks and sequence slots last) and says how long it takes; ``end()``
applies it. A caller turns the durations into time: the discrete-event fleet (workers.simulation.
fleet) in virtual time, the simulated worker engine (workers.engines.simulated) in real time.

The KV cache is counted in blocks with an LRU prefix cache: a sequence's full blocks carry ids (its
prefix identity: equal ids, equal tokens before them, the tenant's salt included), a computed block is
stored and found again by later sequences until it is evicted, least recently freed first. Blocks
for the whole sequence are taken when it is admitted; vLLM grows them step by step and preempts
when it runs out, which this model leaves out (the steady-state pressure on the cache is the same).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llmaas.wire import Perf

BlockEvents = Callable[[Sequence[int]], None]


@dataclass(slots=True, eq=False)
class Seq:
    """A sequence to run: its prompt and answer lengths, and the ids of its full blocks."""

    request_id: str
    prompt_tokens: int
    output_tokens: int
    blocks: tuple[int, ...]
    """Ids of the sequence's full blocks in order (prompt, then answer); fewer where ids run out."""
    cached_tokens: int = 0
    computed: int = 0
    stored: int = 0
    """Blocks of this sequence in the prefix cache (a prefix of ``blocks``)."""
    private: int = 0
    """Blocks held that are in no cache."""
    finish_step: int = 0
    first_token: bool = False


@dataclass(frozen=True, slots=True)
class Load:
    running: int
    waiting: int
    kv_cache_usage: float
    queued_prefill_tokens: int


@dataclass
class EngineModel:
    perf: Perf
    on_stored: BlockEvents = lambda ids: None
    on_removed: BlockEvents = lambda ids: None
    waiting: deque[Seq] = field(default_factory=deque)
    prefilling: list[Seq] = field(default_factory=list)
    _decoding: list[tuple[int, int, Seq]] = field(default_factory=list)
    """Heap of (step at which the sequence ends, tie-breaker, sequence)."""
    _steps: int = 0
    _context_base: int = 0
    """Context of the decoding sequences is ``_context_base + len(decoding) * _steps``."""
    _table: dict[int, int] = field(default_factory=dict)
    """Cached block id -> sequences using it."""
    _lru: OrderedDict[int, None] = field(default_factory=OrderedDict)
    """Cached blocks no sequence uses, least recently freed first: evicted in this order."""
    _private: int = 0
    _plan: list[tuple[Seq, int]] = field(default_factory=list)
    _planned_decodes: int = 0
    _tie: int = 0

    def __post_init__(self) -> None:
        self.blocks = self.perf.kv_tokens // self.perf.block_size

    # --- what the worker reports ---------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.prefilling or self._decoding)

    @property
    def sequences(self) -> int:
        """Sequences in the engine, running or waiting."""
        return len(self.waiting) + len(self.prefilling) + len(self._decoding)

    def load(self) -> Load:
        used = self._private + len(self._table) - len(self._lru)
        queued = sum(s.prompt_tokens for s in self.waiting)
        queued += sum(s.prompt_tokens - s.computed for s in self.prefilling)
        return Load(
            running=len(self.prefilling) + len(self._decoding),
            waiting=len(self.waiting),
            kv_cache_usage=used / self.blocks,
            queued_prefill_tokens=queued,
        )

    def holds(self, block: int) -> bool:
        return block in self._table

    def decoding(self) -> list[Seq]:
        return [seq for _, _, seq in self._decoding]

    def abort(self, request_id: str) -> None:
        """Drop a sequence wherever it is (its client went away); its computed blocks stay cached."""
        for seq in self.waiting:
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                return
        for seq in self.prefilling:
            if seq.request_id == request_id:
                self.prefilling.remove(seq)
                self._plan = [(s, c) for s, c in self._plan if s is not seq]
                self._release(seq)
                return
        for i, (_, _, seq) in enumerate(self._decoding):
            if seq.request_id == request_id:
                self._decoding.pop(i)
                heapq.heapify(self._decoding)
                start = seq.finish_step - seq.output_tokens + 1
                self._context_base -= seq.prompt_tokens + 1 - start
                self._release(seq)
                return

    # --- a step ----------------------------------------------------------------------------------

    def submit(self, seq: Seq) -> None:
        """Queue a sequence; ValueError if it could never fit in the KV cache (vLLM refuses a
        prompt longer than its context the same way, before it queues)."""
        if -(-(seq.prompt_tokens + seq.output_tokens) // self.perf.block_size) > self.blocks:
            raise ValueError(f"{seq.request_id} needs more blocks than the whole KV cache holds")
        self.waiting.append(seq)

    def begin(self) -> float | None:
        """Plan the next step; its duration in seconds, None when there is nothing to run."""
        decodes = len(self._decoding)
        budget = self.perf.token_budget - decodes
        plan: list[tuple[Seq, int]] = []
        for seq in self.prefilling:
            if budget <= 0:
                break
            chunk = min(seq.prompt_tokens - seq.computed, budget)
            plan.append((seq, chunk))
            budget -= chunk
        slots = self.perf.max_seqs - decodes - len(self.prefilling)
        while self.waiting and budget > 0 and slots > 0 and self._admit(self.waiting[0]):
            seq = self.waiting.popleft()
            self.prefilling.append(seq)
            chunk = min(seq.prompt_tokens - seq.computed, budget)
            plan.append((seq, chunk))
            budget -= chunk
            slots -= 1
        if not plan and not decodes:
            return None
        self._plan, self._planned_decodes = plan, decodes
        context = self._context_base + decodes * self._steps
        return self.perf.step_seconds(decodes + sum(c for _, c in plan), context)

    def end(self) -> tuple[list[Seq], list[Seq]]:
        """Apply the planned step: the sequences that got their first token, and those that ended."""
        self._steps += 1
        first: list[Seq] = []
        ended: list[Seq] = []
        if self._planned_decodes:
            while self._decoding and self._decoding[0][0] <= self._steps:
                _, _, seq = heapq.heappop(self._decoding)
                self._context_base -= seq.prompt_tokens + 1 - (seq.finish_step - seq.output_tokens + 1)
                ended.append(seq)
        for seq, chunk in self._plan:
            seq.computed += chunk
            self._store(seq, seq.computed // self.perf.block_size)
            if seq.computed < seq.prompt_tokens:
                continue
            self.prefilling.remove(seq)
            seq.first_token = True
            first.append(seq)
            if seq.output_tokens <= 1:
                ended.append(seq)
                continue
            # One token now; one more per step from the next, the last at step finish_step.
            seq.finish_step = self._steps + seq.output_tokens - 1
            self._context_base += seq.prompt_tokens + 1 - self._steps
            self._tie += 1
            heapq.heappush(self._decoding, (seq.finish_step, self._tie, seq))
        self._plan = []
        for seq in ended:
            self._release(seq)
        return first, ended

    # --- blocks ----------------------------------------------------------------------------------

    def _admit(self, seq: Seq) -> bool:
        """Take the cached prefix and the blocks the rest needs; False (nothing taken) if they do
        not fit even after evicting every unused cached block."""
        size = self.perf.block_size
        # As vLLM: at least the prompt's last token is computed, for the logits of the first one.
        usable = min(len(seq.blocks), (seq.prompt_tokens - 1) // size)
        hit = reusable = 0
        table = self._table
        while hit < usable:
            users = table.get(seq.blocks[hit])
            if users is None:
                break
            reusable += users == 0
            hit += 1
        need = -(-(seq.prompt_tokens + seq.output_tokens) // size) - hit
        if self._free() + len(self._lru) - reusable < need:
            return False
        for block in seq.blocks[:hit]:
            if self._table[block] == 0:
                del self._lru[block]
            self._table[block] += 1
        self._evict(need)
        self._private += need
        seq.private, seq.stored = need, hit
        seq.cached_tokens = seq.computed = hit * size
        return True

    def _free(self) -> int:
        return self.blocks - self._private - len(self._table)

    def _evict(self, need: int) -> None:
        removed: list[int] = []
        while self._free() < need:
            block, _ = self._lru.popitem(last=False)
            del self._table[block]
            removed.append(block)
        if removed:
            self.on_removed(removed)

    def _store(self, seq: Seq, full: int) -> None:
        """Put the sequence's computed full blocks (up to ``full``) in the prefix cache."""
        stored: list[int] = []
        for block in seq.blocks[seq.stored : min(full, len(seq.blocks))]:
            seq.private -= 1
            self._private -= 1
            if block in self._table:  # computed twice at once: keep one copy
                if self._table[block] == 0:
                    del self._lru[block]
                self._table[block] += 1
            else:
                self._table[block] = 1
                stored.append(block)
            seq.stored += 1
        if stored:
            self.on_stored(stored)

    def _release(self, seq: Seq) -> None:
        # The answer's full blocks are cached too: the next turn of a chat begins with them.
        self._store(seq, (seq.prompt_tokens + seq.output_tokens) // self.perf.block_size)
        self._private -= seq.private
        seq.private = 0
        # Freed last block first, so that a prompt's tail is evicted before its shared head.
        for block in reversed(seq.blocks[: seq.stored]):
            self._table[block] -= 1
            if self._table[block] == 0:
                self._lru[block] = None
