"""The simulated engine: the vLLM-like performance model of workers.simulation, in real time.

Steps take the time the profile says (times ``time_scale``), sequences share steps as in vLLM,
prompts already in the prefix cache skip their prefill, and the cache's changes are told to the
worker, which publishes them for the schedulers' prefix index. The text is synthetic; the timing,
the batching and the cache are what is simulated. It is what a GPU-less fleet runs to try
placement for real: worker processes, NATS, schedulers and edges as in production.

Tokens are counted as the scheduler guesses them (llmaas.blocks: 4 bytes of prompt a token), and
the cache's blocks are the prompt's llmaas.blocks ids, so the index and the cache name the same
blocks. A sequence's answer is not cached (its text is made up after the fact).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from llmaas import blocks
from llmaas.errors import InvalidRequest
from llmaas.wire import Delta, Done, Embeddings, EmbedJob, FinishReason, GenerateJob, Perf, Usage
from workers.engines.base import CacheSink, EngineLoad
from workers.simulation.engine import EngineModel, Seq

_WORDS = "tokens arrive one step at a time from a simulated engine with a real prefix cache".split()


@dataclass(frozen=True, slots=True)
class SimulatedConfig:
    model: str
    perf: Perf
    completion_tokens: int = 32
    """Length of an answer when the job sets no ``max_tokens``."""
    time_scale: float = 1.0
    """Seconds of real time per simulated second (below 1: faster than the hardware profiled)."""


class SimulatedEngine:
    name = "simulated"

    def __init__(self, config: SimulatedConfig) -> None:
        self.config = config
        self._sink: CacheSink = lambda stored, removed: None
        self._engine = EngineModel(config.perf, on_stored=self._stored, on_removed=self._removed)
        self._streams: dict[str, asyncio.Queue[int]] = {}
        """Request id -> tokens produced by each step (0: the sequence has ended)."""
        self._wake = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None
        self._generated = 0

    @property
    def models(self) -> list[str]:
        return [self.config.model]

    async def start(self) -> None:
        self._driver = asyncio.create_task(self._drive())

    async def stop(self) -> None:
        if self._driver is not None:
            self._driver.cancel()

    def healthy(self) -> bool:
        return self._driver is None or not self._driver.done()

    def watch_cache(self, sink: CacheSink) -> None:
        self._sink = sink

    def _stored(self, ids: Sequence[int]) -> None:
        self._sink(ids, ())

    def _removed(self, ids: Sequence[int]) -> None:
        self._sink((), ids)

    def load(self) -> EngineLoad:
        load = self._engine.load()
        return EngineLoad(
            running=load.running,
            waiting=load.waiting,
            capacity=self.config.perf.max_seqs,
            kv_cache_usage=load.kv_cache_usage,
            generated_tokens=self._generated,
            queued_prefill_tokens=load.queued_prefill_tokens,
            perf=self.config.perf,
        )

    def check(self, job: GenerateJob | EmbedJob) -> None:
        if isinstance(job, EmbedJob) or job.model != self.config.model:
            raise InvalidRequest(f"Model '{job.model}' is not served by this worker.", param="model")
        if (job.tools and job.tool_choice != "none") or job.response_format.type != "text":
            raise InvalidRequest(f"Model '{job.model}' answers plain text only.", param="model")
        tokens = self._prompt_tokens(job) + self._answer_tokens(job)
        if tokens > self.config.perf.kv_tokens:
            raise InvalidRequest(
                f"This model's maximum context length is {self.config.perf.kv_tokens} tokens; "
                f"the request needs {tokens}.",
                param="messages",
                code="context_length_exceeded",
            )

    @staticmethod
    def _prompt_tokens(job: GenerateJob) -> int:
        return blocks.prompt_tokens(job)  # as the scheduler counts them

    def _answer_tokens(self, job: GenerateJob) -> int:
        return job.sampling.max_tokens or self.config.completion_tokens

    async def generate(self, job: GenerateJob) -> AsyncIterator[Delta | Done]:
        prompt, answer = self._prompt_tokens(job), self._answer_tokens(job)
        seq = Seq(job.request_id, prompt, answer, blocks.of_job(job))
        tokens: asyncio.Queue[int] = asyncio.Queue()
        self._streams[job.request_id] = tokens
        self._engine.submit(seq)
        self._wake.set()
        rng = random.Random(job.request_id)
        produced, ended = 0, False
        try:
            while not ended:
                got = await tokens.get()
                ended = got == 0
                if got:
                    produced += got
                    yield Delta(text="".join(" " + rng.choice(_WORDS) for _ in range(got)), tokens=got)
            finish: FinishReason = "length" if job.sampling.max_tokens else "stop"
            usage = Usage(prompt_tokens=prompt, completion_tokens=produced, cached_tokens=seq.cached_tokens)
            yield Done(finish_reason=finish, usage=usage)
        finally:
            self._streams.pop(job.request_id, None)
            if not ended:
                self._engine.abort(job.request_id)

    async def embed(self, job: EmbedJob) -> Embeddings:
        raise InvalidRequest(f"Model '{job.model}' does not embed.", param="model")

    async def _drive(self) -> None:
        """Run steps back to back while there is work, each taking its modelled time."""
        while True:
            decoding = [seq.request_id for seq in self._engine.decoding()]
            duration = self._engine.begin()
            if duration is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.sleep(duration * self.config.time_scale)
            first, ended = self._engine.end()
            for request_id in [*decoding, *(seq.request_id for seq in first)]:
                self._emit(request_id, 1)
            for seq in ended:
                self._emit(seq.request_id, 0)

    def _emit(self, request_id: str, tokens: int) -> None:
        stream = self._streams.get(request_id)
        if stream is not None:
            stream.put_nowait(tokens)
            self._generated += tokens
