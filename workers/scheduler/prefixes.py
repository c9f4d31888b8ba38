"""Which worker holds which prefix blocks, per model and tenant: what placement asks to find the
worker that can skip most of a prompt's prefill.

Fed two ways. Precisely, from the workers' own cache events (a block stored, a block evicted, a
worker gone). Or approximately, as llm-d's approximate prefix scorer does, from the scheduler's own
placements (``remember``): a prompt sent to a worker is assumed cached there until that worker's
share of the table is full, oldest forgotten first.

Keys are (model, block id), and block ids are salted with the tenant the way the engines salt their
caches (vLLM's ``cache_salt`` enters the first block's hash, so every later block's): two tenants'
equal prompts are different blocks, here as there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Key = tuple[str, int]


@dataclass
class PrefixIndex:
    capacity: int | None = None
    """Blocks remembered per worker when fed by ``remember`` (None: unbounded, events evict)."""
    _holders: dict[Key, set[str]] = field(default_factory=dict)
    _held: dict[str, OrderedDict[Key, None]] = field(default_factory=dict)

    def stored(self, worker: str, model: str, blocks: Iterable[int]) -> None:
        held = self._held.setdefault(worker, OrderedDict())
        for block in blocks:
            key = (model, block)
            self._holders.setdefault(key, set()).add(worker)
            held[key] = None
            held.move_to_end(key)
        if self.capacity is not None:
            while len(held) > self.capacity:
                self._drop(worker, held.popitem(last=False)[0])

    def removed(self, worker: str, model: str, blocks: Iterable[int]) -> None:
        held = self._held.get(worker)
        if held is None:
            return
        for block in blocks:
            key = (model, block)
            if key in held:
                del held[key]
                self._drop(worker, key)

    def remember(self, worker: str, model: str, blocks: Sequence[int]) -> None:
        """The scheduler sent these blocks to ``worker``: assume they are cached there now."""
        self.stored(worker, model, blocks)

    def forget(self, worker: str) -> None:
        """The worker is gone, or its cache was reset: it holds nothing."""
        for key in self._held.pop(worker, ()):
            self._drop(worker, key)

    def _drop(self, worker: str, key: Key) -> None:
        holders = self._holders.get(key)
        if holders is not None:
            holders.discard(worker)
            if not holders:
                del self._holders[key]

    def blocks_of(self, worker: str) -> int:
        return len(self._held.get(worker, ()))

    def matches(self, model: str, blocks: Sequence[int]) -> dict[str, int]:
        """For each worker holding the first block: how many of ``blocks`` it holds in a row from
        the start (a cached prefix is only usable up to its first missing block)."""
        found: dict[str, int] = {}
        alive: set[str] = set()
        for depth, block in enumerate(blocks):
            holders = self._holders.get((model, block), set())
            still = set(holders) if depth == 0 else alive & holders
            for worker in alive - still:
                found[worker] = depth
            alive = still
            if not alive:
                return found
        for worker in alive:
            found[worker] = len(blocks)
        return found
