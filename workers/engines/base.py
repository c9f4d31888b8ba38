"""The engine interface every worker drives: generate (streamed deltas), embed, report load."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from llmaas.wire import Delta, Done, Embeddings, EmbedJob, GenerateJob, Perf

CacheSink = Callable[[Sequence[int], Sequence[int]], None]
"""Told (blocks stored, blocks removed) when an engine's prefix cache changes (ids of llmaas.blocks)."""


@dataclass(frozen=True, slots=True)
class EngineLoad:
    running: int
    waiting: int
    capacity: int
    kv_cache_usage: float = 0.0
    """Share of the KV cache in use (0..1); 0 where the engine has none."""
    generated_tokens: int = 0
    """Tokens generated since start, as the engine counts them (aborted sequences included)."""
    queued_prefill_tokens: int = 0
    """Prompt tokens accepted and not yet computed; 0 where the engine cannot tell."""
    perf: Perf | None = None
    """What a step costs, where the engine knows it (for placement's predicted first token)."""


class Engine(Protocol):
    """An inference engine in the worker's process.

    ``generate`` yields ``Delta`` frames then exactly one ``Done``; cancelling the consuming task
    (closing the iterator) must stop the generation in the engine. ``check`` raises a
    ``ClientError`` for a job this engine cannot run, before the worker accepts it.
    """

    name: str

    @property
    def models(self) -> list[str]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def check(self, job: GenerateJob | EmbedJob) -> None: ...

    def generate(self, job: GenerateJob) -> AsyncIterator[Delta | Done]: ...

    async def embed(self, job: EmbedJob) -> Embeddings: ...

    def load(self) -> EngineLoad: ...

    def watch_cache(self, sink: CacheSink) -> None:
        """Call ``sink`` as the prefix cache changes; an engine that cannot tell never calls it."""
        ...

    def healthy(self) -> bool:
        """False once the engine has died; the worker then leaves the pool."""
        ...
