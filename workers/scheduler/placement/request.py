"""What placement knows of a request, and of each worker it may go to."""

from __future__ import annotations

from dataclasses import dataclass

from llmaas import blocks as prompt_blocks
from llmaas.fleet import WorkerView


@dataclass(frozen=True, slots=True)
class Ask:
    model: str
    blocks: tuple[int, ...] = ()
    """Ids of the prompt's full blocks, in order: its prefix identity, salted with the tenant (two
    tenants' equal prompts have different ids, as in the engines' caches)."""
    prompt_tokens: int = 0
    block_size: int = prompt_blocks.BLOCK_TOKENS
    """Tokens per block of ``blocks`` (the simulated fleet's engines may use others)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    worker: WorkerView
    cached_blocks: int = 0
    """Blocks of the prompt's prefix the worker holds, as far as the scheduler knows."""

    def cached_tokens(self, ask: Ask) -> int:
        return min(self.cached_blocks * ask.block_size, max(ask.prompt_tokens - 1, 0))

    def uncached_tokens(self, ask: Ask) -> int:
        return ask.prompt_tokens - self.cached_tokens(ask)
