"""vLLM's ``AsyncLLM`` in the worker's process: one engine, one model, streamed token deltas.

The worker gives the engine token ids, not text: the chat template is applied here with the model's
own tokenizer, so prompt lengths are checked (and rejected with a 400) before the worker accepts a
job, and token counts in ``usage`` are the engine's, never estimates.

vLLM is imported when the engine starts, so importing this module costs nothing and the synthetic
engine runs where vLLM is not installed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmaas import blocks
from llmaas.errors import InvalidRequest, UpstreamFailed
from llmaas.wire import (
    ChatMessage,
    Delta,
    Done,
    Embeddings,
    EmbedJob,
    FinishReason,
    GenerateJob,
    Tool,
    ToolCall,
    Usage,
)
from workers.engines.base import CacheSink, EngineLoad
from workers.engines.control_tokens import Shield
from workers.engines.digest import CacheDigest
from workers.engines.reasoning import ReasoningSplitter, load_parser
from workers.engines.tool_calls import ToolCallReader, call_id, load_parser_class, openai_tools

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

log = logging.getLogger(__name__)

CPU_ENV_DEFAULTS = {
    # Nothing is ever fetched from a model hub: weights come from local folders only.
    "HF_HUB_OFFLINE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_LOGGING_LEVEL": "WARNING",
}
"""Environment vLLM reads at import; set only where the operator has not set them."""

_FINISH: dict[str | None, FinishReason] = {"stop": "stop", "length": "length", "abort": "abort"}


@dataclass(frozen=True, slots=True)
class VllmSpec:
    """What one vLLM worker serves and how: the catalog name, the weights and the engine's knobs."""

    model: str
    path: str
    task: Literal["generate", "embed"] = "generate"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    dtype: str = "auto"
    enforce_eager: bool | None = None
    """None: eager on CPU (compilation costs ~100 s at start there), compiled graphs on GPU."""
    cpu_kv_cache_gb: float = 1.0
    reasoning_parser: str | None = None
    """vLLM's reasoning parser for this model family (e.g. ``deepseek_r1``, ``qwen3``), if it reasons."""
    tool_parser: str | None = None
    """vLLM's tool-call parser for this model family (e.g. ``hermes``, ``llama3_json``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other ``AsyncEngineArgs`` field, passed through as is."""


class _Load:
    """Filled by vLLM's stat-logger hook after every engine step (scheduler stats)."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0
        self.generated_tokens = 0


def _stat_logger_factory(load: _Load) -> Any:
    from vllm.v1.metrics.loggers import StatLoggerBase

    class LoadProbe(StatLoggerBase):  # type: ignore[misc]
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None:
                load.running = scheduler_stats.num_running_reqs
                load.waiting = scheduler_stats.num_waiting_reqs
                load.kv_cache_usage = scheduler_stats.kv_cache_usage
            if iteration_stats is not None:
                load.generated_tokens += iteration_stats.num_generation_tokens

        def log_engine_initialized(self) -> None:
            pass

    return LoadProbe


def _prompt(ids: list[int], tenant: str) -> dict[str, Any]:
    """The engine's input, salted with the tenant: vLLM's prefix cache then never shares a block
    between tenants, so no tenant can learn from a fast first token what another one sent."""
    prompt: dict[str, Any] = {"prompt_token_ids": ids}
    if tenant:
        prompt["cache_salt"] = tenant
    return prompt


class VllmEngine:
    name = "vllm"

    def __init__(self, spec: VllmSpec) -> None:
        self.spec = spec
        self._llm: AsyncLLM | None = None
        self._tokenizer: Any = None
        self._max_model_len = 0
        self._capacity = 1
        self._load = _Load()
        self._active = 0
        self._prioritized = False
        self._prepared: dict[str, list[int]] = {}
        self._tool_parser: Any = None
        self._digest: CacheDigest | None = None
        """Only where the engine has a prefix cache: without one there is nothing to tell."""
        self._cache_sink: CacheSink | None = None

    @property
    def models(self) -> list[str]:
        return [self.spec.model]

    @property
    def llm(self) -> AsyncLLM:
        assert self._llm is not None, "start() first"
        return self._llm

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        spec = self.spec
        for name, value in CPU_ENV_DEFAULTS.items():
            os.environ.setdefault(name, value)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{spec.cpu_kv_cache_gb:g}")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        on_cpu = current_platform.is_cpu()
        dtype = spec.dtype
        if on_cpu and dtype == "auto":
            # vLLM 0.32's CPU path computes bfloat16 wrongly on CPUs with AMX (Sapphire Rapids and
            # later): the same weights, greedy, answered "L'Étoile, la Marseillaise, la femme…" in
            # bfloat16 and "The capital of France is Paris." in float32. Float32 is right everywhere.
            dtype = "float32"
        args = AsyncEngineArgs(
            model=spec.path,
            served_model_name=spec.model,
            runner="pooling" if spec.task == "embed" else "generate",
            tensor_parallel_size=spec.tensor_parallel_size,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            max_model_len=spec.max_model_len,
            max_num_seqs=spec.max_num_seqs,
            dtype=dtype,
            enforce_eager=on_cpu if spec.enforce_eager is None else spec.enforce_eager,
            # Batch lines (priority 1) wait behind interactive requests and are preempted first.
            **({"scheduling_policy": "priority"} | spec.extra),
        )
        # An operator's own policy (extra) takes no priorities: vLLM refuses them under "fcfs".
        self._prioritized = args.scheduling_policy == "priority"
        log.info("starting vLLM for %s from %s (%s)", spec.model, spec.path, "CPU" if on_cpu else "GPU")
        self._llm = AsyncLLM.from_engine_args(args, stat_loggers=[_stat_logger_factory(self._load)])
        self._tokenizer = self._llm.get_tokenizer()
        self._shield = Shield(self._tokenizer)
        # Unknown parser names fail here, at start, not on a request.
        if spec.reasoning_parser:
            load_parser(spec.reasoning_parser, self._tokenizer)
        self._tool_parser = load_parser_class(spec.tool_parser) if spec.tool_parser else None
        self._max_model_len = self._llm.model_config.max_model_len
        self._capacity = self._llm.vllm_config.scheduler_config.max_num_seqs
        cache = self._llm.vllm_config.cache_config
        if spec.task == "generate" and cache.enable_prefix_caching and cache.num_gpu_blocks:
            self._digest = CacheDigest(cache.num_gpu_blocks * cache.block_size // blocks.BLOCK_TOKENS)
            if self._cache_sink is not None:
                self._digest.watch(self._cache_sink)

    async def stop(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    def healthy(self) -> bool:
        return self._llm is not None and not self._llm.errored

    def watch_cache(self, sink: CacheSink) -> None:
        """The digest of the prefix cache (workers.engines.digest), told as prompts are computed."""
        self._cache_sink = sink
        if self._digest is not None:
            self._digest.watch(sink)

    def load(self) -> EngineLoad:
        load = self._load
        # Jobs the engine has not scheduled yet (still being added) count as waiting.
        waiting = max(load.waiting, self._active - load.running)
        return EngineLoad(
            running=load.running,
            waiting=waiting,
            capacity=self._capacity,
            kv_cache_usage=load.kv_cache_usage,
            generated_tokens=load.generated_tokens,
        )

    # --- validation and prompt rendering -------------------------------------------------------

    def check(self, job: GenerateJob | EmbedJob) -> None:
        wanted = "embed" if isinstance(job, EmbedJob) else "generate"
        if job.model != self.spec.model or wanted != self.spec.task:
            kind = "embeddings" if wanted == "embed" else "text generation"
            raise InvalidRequest(f"Model '{job.model}' does not support {kind}.", param="model")
        if isinstance(job, GenerateJob):
            if job.tools and job.tool_choice == "auto" and self._tool_parser is None:
                # Deciding alone between text and a call needs the model family's tool-call format;
                # a forced call (required, or a named function) works for any model (see _structured).
                raise InvalidRequest(
                    f"Model '{job.model}' cannot decide by itself when to call tools on this platform; "
                    "set 'tool_choice' to 'required' or to a function.",
                    param="tool_choice",
                )
            # Rendered once here so that a prompt too long is a 400 before the worker accepts.
            self._prepared[job.request_id] = self._render(job)

    def _render(self, job: GenerateJob) -> list[int]:
        if job.kind == "completion":
            ids: list[int] = self._tokenizer.encode(job.prompt)
        else:
            tools = openai_tools(job.tools) if job.tools and job.tool_choice != "none" else None
            hidden: list[str] = []  # control tokens' text written inside the messages (see Shield)
            messages = [_template_message(m, lambda t: self._shield.hide(t, hidden)) for m in job.messages]
            if hidden:
                rendered = self._tokenizer.apply_chat_template(
                    messages, tools=tools, add_generation_prompt=True, tokenize=False
                )
                ids = self._shield.encode(rendered, hidden)
            else:
                ids = self._tokenizer.apply_chat_template(
                    messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
                )
        wanted = job.sampling.max_tokens or 0
        if len(ids) + wanted > self._max_model_len or len(ids) >= self._max_model_len:
            where = "prompt" if job.kind == "completion" else "messages"
            raise InvalidRequest(
                f"This model's maximum context length is {self._max_model_len} tokens. However, you "
                f"requested {len(ids) + wanted} tokens ({len(ids)} in the {where}, {wanted} in the "
                f"completion). Please reduce the length of the {where} or completion.",
                param="messages" if job.kind == "chat" else "prompt",
                code="context_length_exceeded",
            )
        return ids

    def _structured(self, job: GenerateJob) -> Any:
        """vLLM's structured outputs for a JSON answer or a forced tool call (None: free text)."""
        from vllm.sampling_params import StructuredOutputsParams

        # Arguments are read by programs: compact JSON, with no room for a model to ramble in spaces.
        if job.tools and job.tool_choice == "function":
            tool = next(t for t in job.tools if t.name == job.tool_name)
            return StructuredOutputsParams(json=_parameters(tool), disable_any_whitespace=True)
        if job.tools and job.tool_choice == "required":
            # A list of one or more calls, each naming a given tool and matching its parameters.
            calls = [
                {
                    "type": "object",
                    "properties": {
                        "name": {"const": t.name},
                        "arguments": _parameters(t),
                    },
                    "required": ["name", "arguments"],
                }
                for t in job.tools
            ]
            return StructuredOutputsParams(
                json={"type": "array", "minItems": 1, "items": {"anyOf": calls}}, disable_any_whitespace=True
            )
        if job.response_format.type == "json_object":
            return StructuredOutputsParams(json_object=True)
        if job.response_format.type == "json_schema":
            return StructuredOutputsParams(json=json.loads(job.response_format.schema))
        return None

    def _sampling(self, job: GenerateJob, prompt_len: int, skip_special_tokens: bool = True) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = job.sampling
        return SamplingParams(
            max_tokens=s.max_tokens or self._max_model_len - prompt_len,
            # OpenAI's defaults, not the model's generation_config: clients expect the API's.
            temperature=1.0 if s.temperature is None else s.temperature,
            top_p=1.0 if s.top_p is None else s.top_p,
            stop=s.stop or None,
            seed=s.seed,
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
            structured_outputs=self._structured(job),
            skip_special_tokens=skip_special_tokens,
            output_kind=RequestOutputKind.DELTA,
        )

    # --- work ---------------------------------------------------------------------------------

    async def generate(self, job: GenerateJob) -> AsyncIterator[Delta | Done]:
        ids = self._prepared.pop(job.request_id, None) or self._render(job)
        answer = _Answer(job)
        if self.spec.reasoning_parser and job.kind == "chat":
            answer.splitter = ReasoningSplitter(load_parser(self.spec.reasoning_parser, self._tokenizer), ids)
        if job.tools and job.tool_choice == "auto" and self._tool_parser is not None:
            answer.reader = ToolCallReader(self._tool_parser, self._tokenizer, job.tools, job.messages)
        params = self._sampling(job, len(ids), answer.reader.skip_special_tokens if answer.reader else True)
        generated, pending, cached, finished = 0, 0, 0, False
        self._active += 1
        try:
            stream = self.llm.generate(
                _prompt(ids, job.caller.tenant),
                params,
                request_id=job.request_id,
                priority=job.priority if self._prioritized else 0,
            )
            async for out in stream:
                piece = out.outputs[0]
                generated += len(piece.token_ids)
                pending += len(piece.token_ids)
                if self._digest is not None and generated == len(piece.token_ids):
                    self._digest.computed(blocks.of_job(job))  # the first output: the prompt is cached
                cached = out.num_cached_tokens or 0
                text, reasoning = answer.step(piece.text, piece.token_ids)
                # A token may decode to no text yet (part of a character, or held back as the start
                # of a stop string): its count rides with the next delta that has text.
                if text or reasoning:
                    yield Delta(text=text, reasoning=reasoning, tokens=pending)
                    pending = 0
                if out.finished:
                    finished = True
                    last, finish = answer.end(_FINISH.get(piece.finish_reason, "stop"))
                    if last is not None:
                        yield Delta(text=last[0], tool_calls=last[1], tokens=pending)
                    yield Done(
                        finish_reason=finish,
                        usage=Usage(
                            prompt_tokens=len(ids),
                            completion_tokens=generated,
                            reasoning_tokens=answer.reasoning_tokens,
                            cached_tokens=cached,
                        ),
                    )
        except ValueError as exc:
            # vLLM validates sampling values against the model (e.g. a logit bias out of range).
            raise InvalidRequest(str(exc)) from exc
        finally:
            self._active -= 1
            self._prepared.pop(job.request_id, None)
            if not finished and self._llm is not None and not self._llm.errored:
                # The client went away (our task was cancelled): free the sequence in the engine now,
                # not when the garbage collector finalises vLLM's generator.
                await asyncio.shield(self._llm.abort(job.request_id))

    async def embed(self, job: EmbedJob) -> Embeddings:
        from vllm import PoolingParams

        prompts: list[list[int]] = [self._tokenizer.encode(text) for text in job.inputs]
        for index, ids in enumerate(prompts):
            if len(ids) > self._max_model_len:
                raise InvalidRequest(
                    f"Input {index} has {len(ids)} tokens; this model's maximum is {self._max_model_len}.",
                    param="input",
                    code="context_length_exceeded",
                )

        async def one(index: int, ids: list[int]) -> list[float]:
            request_id = f"{job.request_id}-{index}"
            async for out in self.llm.encode(
                {"prompt_token_ids": ids}, PoolingParams(task="embed"), request_id=request_id
            ):
                if out.finished:
                    vector: list[float] = out.outputs.data.tolist()
                    return vector
            raise UpstreamFailed("The engine ended an embedding without a result.", code="engine_error")

        self._active += 1
        try:
            vectors = await asyncio.gather(*(one(i, ids) for i, ids in enumerate(prompts)))
        finally:
            self._active -= 1
        return Embeddings(vectors=list(vectors), usage=Usage(prompt_tokens=sum(map(len, prompts))))


def _template_message(message: ChatMessage, text: Callable[[str], str] = str) -> dict[str, Any]:
    """A wire message as chat templates expect it (tool-call arguments as objects, not text), its
    free text passed through ``text`` (the control-token shield)."""
    out: dict[str, Any] = {"role": message.role, "content": text(message.content)}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": _arguments(text(c.arguments))},
            }
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.name:
        out["name"] = message.name
    return out


def _parameters(tool: Tool) -> Any:
    """A tool's parameter schema for the grammar (any object when the tool declares none)."""
    return json.loads(tool.parameters) if tool.parameters else {"type": "object"}


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class _Answer:
    """Shapes the engine's raw text into what the client sees: the reasoning split off (reasoning
    models), and tool calls held back until complete, then sent as calls rather than text."""

    def __init__(self, job: GenerateJob) -> None:
        self.job = job
        self.splitter: ReasoningSplitter | None = None
        self.reader: ToolCallReader | None = None
        # A forced call (required, or a named function) is JSON written under a grammar.
        self.forced = bool(job.tools) and job.tool_choice in ("required", "function")
        self.held: list[str] = []

    def step(self, text: str, token_ids: list[int]) -> tuple[str, str]:
        """(answer text, reasoning text) to send now for one engine delta."""
        reasoning = ""
        if self.splitter is not None:
            reasoning, text = self.splitter.feed(text, token_ids)
        if self.forced or self.reader is not None:
            self.held.append(text)
            text = ""
        return text, reasoning

    def end(self, finish: FinishReason) -> tuple[tuple[str, list[ToolCall]] | None, FinishReason]:
        """The last (text, calls) to send, if any, and the finish reason to report."""
        held = "".join(self.held)
        if self.forced and self.job.tool_choice == "function":
            assert self.job.tool_name is not None
            # The JSON written is the arguments; cut short by max_tokens, the unfinished JSON is what
            # there is (OpenAI does the same) and the finish reason says so.
            call = ToolCall(id=call_id(), name=self.job.tool_name, arguments=held)
            return ("", [call]), ("tool_calls" if finish == "stop" else finish)
        if self.forced:
            if finish == "stop":
                return ("", _required_calls(held)), "tool_calls"
            return (held, []), finish
        if self.reader is not None:
            content, calls = self.reader.read(held)
            if not content and not calls:
                return None, finish
            return (content, calls), ("tool_calls" if calls else finish)
        return None, finish

    @property
    def reasoning_tokens(self) -> int:
        return self.splitter.reasoning_tokens if self.splitter is not None else 0


def _required_calls(text: str) -> list[ToolCall]:
    """The calls of ``tool_choice: required``: the JSON list the grammar let the model write."""
    return [
        ToolCall(id=call_id(), name=call["name"], arguments=json.dumps(call["arguments"]))
        for call in json.loads(text)
    ]
