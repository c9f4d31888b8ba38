"""A digest of an engine's prefix cache, for an engine that does not tell its own in the
scheduler's terms: the llmaas.blocks ids of every prompt it computed, the least recently used
forgotten first once they would not fit in its KV cache.

vLLM names its cached blocks by hashes of token ids, which the scheduler (no tokenizer, no chat
template) cannot compute; this digest names them as the scheduler does, from the prompt's text.
It is an estimate, as llm-d's approximate prefix scorer is, but kept by the worker that ran the
prompts, with the cache's real size and with every prompt that ran there (whichever scheduler
placed it), and told to every scheduler replica through the worker's cache events.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from workers.engines.base import CacheSink


class CacheDigest:
    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = max(1, capacity_blocks)
        self._held: OrderedDict[int, None] = OrderedDict()
        self._sink: CacheSink = lambda stored, removed: None

    def watch(self, sink: CacheSink) -> None:
        self._sink = sink

    def computed(self, ids: Sequence[int]) -> None:
        """A prompt with these block ids was computed (or found cached): held, most recent."""
        stored = []
        for block in ids:
            if block in self._held:
                self._held.move_to_end(block)
            else:
                self._held[block] = None
                stored.append(block)
        removed = []
        while len(self._held) > self.capacity:
            removed.append(self._held.popitem(last=False)[0])
        if stored or removed:
            self._sink(stored, removed)
