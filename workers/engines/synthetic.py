"""A deterministic synthetic engine for tests and benchmarks: no model, configurable speed.

It is named ``synthetic`` everywhere it shows (engine name, model names) so nobody mistakes it for
a model. The same job and seed always give the same text; speed follows ``tokens_per_s`` and
``ttft_s`` measured from the job's arrival, so scheduling delays do not accumulate.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from llmaas.errors import InvalidRequest
from llmaas.wire import Delta, Done, Embeddings, EmbedJob, FinishReason, GenerateJob, Usage
from workers.engines.base import CacheSink, EngineLoad

_VOCABULARY = (
    "the model streams tokens through a pipeline of small services that screen place and serve "
    "each request while every token is metered once and billed to its tenant on sovereign machines"
).split()

CHAT_TEMPLATE_OVERHEAD = 3
"""Tokens a chat template adds per message (role markers), mimicking real templates."""


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    chat_model: str = "synthetic-chat"
    embedding_model: str = "synthetic-embed"
    tokens_per_s: float = 200.0
    """0 means as fast as the event loop allows."""
    ttft_s: float = 0.0
    completion_tokens: int = 32
    """Length of an answer when the job sets no ``max_tokens`` (then it ends with ``stop``)."""
    capacity: int = 256
    embedding_dim: int = 64


def count_tokens(text: str) -> int:
    """The synthetic tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def _seed(job: GenerateJob) -> int:
    material = job.prompt if job.kind == "completion" else "\x1e".join(m.content for m in job.messages)
    digest = hashlib.blake2b(f"{job.sampling.seed}\x1f{material}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that could still begin a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class SyntheticEngine:
    name = "synthetic"

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        self._running = 0
        self._generated = 0

    @property
    def models(self) -> list[str]:
        return [self.config.chat_model, self.config.embedding_model]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def check(self, job: GenerateJob | EmbedJob) -> None:
        expected = self.config.embedding_model if isinstance(job, EmbedJob) else self.config.chat_model
        if job.model != expected:
            kind = "embeddings" if isinstance(job, EmbedJob) else "text generation"
            raise InvalidRequest(
                f"Model '{job.model}' does not support {kind} on this worker.", param="model"
            )
        if isinstance(job, GenerateJob):
            if job.tools and job.tool_choice != "none":
                raise InvalidRequest(f"Model '{job.model}' does not support tools.", param="tools")
            if job.response_format.type != "text":
                raise InvalidRequest(
                    f"Model '{job.model}' does not support structured output.", param="response_format"
                )

    def healthy(self) -> bool:
        return True

    def watch_cache(self, sink: CacheSink) -> None:
        """No view of a prefix cache here (placement then goes by load alone)."""

    def load(self) -> EngineLoad:
        return EngineLoad(
            running=self._running,
            waiting=0,
            capacity=self.config.capacity,
            generated_tokens=self._generated,
        )

    def _prompt_tokens(self, job: GenerateJob) -> int:
        if job.kind == "completion":
            return count_tokens(job.prompt)
        return sum(count_tokens(m.content) + CHAT_TEMPLATE_OVERHEAD for m in job.messages)

    async def generate(self, job: GenerateJob) -> AsyncIterator[Delta | Done]:
        cfg = self.config
        loop = asyncio.get_running_loop()
        start = loop.time()
        limit = job.sampling.max_tokens
        # The answer's natural length is ``completion_tokens``; a smaller max_tokens cuts it short.
        finish: FinishReason
        if limit is not None and limit <= cfg.completion_tokens:
            length, finish = limit, "length"
        else:
            length, finish = cfg.completion_tokens, "stop"
        rng = random.Random(_seed(job))
        stops = job.sampling.stop
        text, emitted, pending, generated = "", 0, 0, 0
        self._running += 1
        try:
            for index in range(length):
                await self._pace(start, index)
                text += (" " if index else "") + rng.choice(_VOCABULARY)
                generated += 1
                self._generated += 1
                pending += 1
                hit = min((p for p in (text.find(s) for s in stops) if p >= 0), default=-1)
                if hit >= 0:
                    text, finish = text[:hit], "stop"
                    break
                safe = len(text) - _held_back(text, stops) if stops else len(text)
                if safe > emitted:
                    yield Delta(text=text[emitted:safe], tokens=pending)
                    emitted, pending = safe, 0
            if len(text) > emitted:
                yield Delta(text=text[emitted:], tokens=pending)
            yield Done(
                finish_reason=finish,
                usage=Usage(prompt_tokens=self._prompt_tokens(job), completion_tokens=generated),
            )
        finally:
            self._running -= 1

    async def _pace(self, start: float, index: int) -> None:
        """Wait until token ``index`` is due (or just yield to the loop when speed is unlimited)."""
        cfg = self.config
        if cfg.tokens_per_s > 0:
            due = start + cfg.ttft_s + index / cfg.tokens_per_s
            await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
        elif index == 0 and cfg.ttft_s > 0:
            await asyncio.sleep(cfg.ttft_s)
        else:
            await asyncio.sleep(0)

    async def embed(self, job: EmbedJob) -> Embeddings:
        vectors = [self._vector(text) for text in job.inputs]
        return Embeddings(
            vectors=vectors, usage=Usage(prompt_tokens=sum(count_tokens(t) for t in job.inputs))
        )

    def _vector(self, text: str) -> list[float]:
        dim = self.config.embedding_dim
        raw = hashlib.shake_256(text.encode()).digest(dim * 4)
        values = [v / 2**32 - 0.5 for v in struct.unpack(f"<{dim}I", raw)]
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        return [v / norm for v in values]
