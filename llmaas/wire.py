"""The wire contract: every message that crosses NATS, as frozen msgspec Structs.

Evolution is append-only: new fields get defaults, existing fields never change type.
Families are tagged unions (tag field ``t``) so one decoder reads a whole family.
"""

from __future__ import annotations

from typing import Literal

import msgspec

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "abort", "error"]


class _Wire(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base for all wire messages: immutable, keyword-only, defaults left off the wire."""


# --- jobs: edge -> guard -> scheduler -> worker --------------------------------------------------


class ToolCall(_Wire, frozen=True, kw_only=True):
    """A function call the model made (in an answer) or made earlier (in the conversation)."""

    id: str
    name: str
    arguments: str
    """JSON text, exactly as generated."""


class ChatMessage(_Wire, frozen=True, kw_only=True):
    role: str
    content: str = ""
    name: str | None = None
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None


class Tool(_Wire, frozen=True, kw_only=True):
    """A function the model may call; ``parameters`` is its JSON Schema as JSON text."""

    name: str
    description: str = ""
    parameters: str = ""


class ResponseFormat(_Wire, frozen=True, kw_only=True):
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: str = ""
    """For ``json_schema``: the JSON Schema as JSON text."""


class SamplingParams(_Wire, frozen=True, kw_only=True):
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = []
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


class Caller(_Wire, frozen=True, kw_only=True):
    """Who sent the request; filled by the edge (tenant and token arrive with authentication)."""

    tenant: str = ""
    token_id: str = ""
    user: str | None = None


class GenerateJob(_Wire, frozen=True, kw_only=True, tag="gen", tag_field="t"):
    """A chat or text completion to run. ``messages`` for chat, ``prompt`` for completions."""

    request_id: str
    model: str
    kind: Literal["chat", "completion"]
    created: int
    messages: list[ChatMessage] = []
    prompt: str = ""
    sampling: SamplingParams = SamplingParams()
    caller: Caller = Caller()
    tools: list[Tool] = []
    tool_choice: Literal["none", "auto", "required", "function"] = "auto"
    tool_name: str | None = None
    """With ``tool_choice="function"``: the function the model must call."""
    response_format: ResponseFormat = ResponseFormat()
    reply: str = ""
    """Where the frames go (the edge's subject of this request); each hop's own NATS reply is the
    previous hop's, for the ack that says it took the job. Empty: the message's reply."""
    seal: str = ""
    """The edge's HMAC over who asked for what (llmaas.seals): a worker's record of work done for
    this job can be billed if its edge never bills it (killed mid-answer), and no other."""
    priority: int = 0
    """0: interactive; 1: a batch line, which yields to interactive work in the worker and the
    engine (vLLM's priority scheduling: a lower value runs first)."""
    screening: bool = False
    """The edge waits for the guard's ``Screened`` frame before it lets any output go, so the guard
    may forward the job as soon as its fast layers passed it and score it with its model while the
    engine prefills. False (a sender that holds nothing back): the guard decides before forwarding."""


class EmbedJob(_Wire, frozen=True, kw_only=True, tag="emb", tag_field="t"):
    """Inputs to embed with an embedding model."""

    request_id: str
    model: str
    created: int
    inputs: list[str]
    caller: Caller = Caller()
    reply: str = ""
    """As ``GenerateJob.reply``."""
    seal: str = ""
    """As ``GenerateJob.seal``."""
    screening: bool = False
    """As ``GenerateJob.screening``."""


Job = GenerateJob | EmbedJob


# --- frames: worker (or any stage that fails a job) -> edge, on the job's reply subject ---------


class Usage(_Wire, frozen=True, kw_only=True):
    prompt_tokens: int
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0


class Accepted(_Wire, frozen=True, kw_only=True, tag="acc", tag_field="t"):
    """A worker took the job; the edge watches this worker's liveness from now on."""

    worker_id: str


class Delta(_Wire, frozen=True, kw_only=True, tag="d", tag_field="t"):
    """Generated text since the previous delta: answer, reasoning (reasoning models), tool calls."""

    text: str
    tokens: int = 1
    reasoning: str = ""
    tool_calls: list[ToolCall] = []


class Done(_Wire, frozen=True, kw_only=True, tag="done", tag_field="t"):
    finish_reason: FinishReason
    usage: Usage


class Embeddings(_Wire, frozen=True, kw_only=True, tag="emb", tag_field="t"):
    vectors: list[list[float]]
    usage: Usage


class WireError(_Wire, frozen=True, kw_only=True):
    """An error on the wire: the edge renders it as an OpenAI error with this status."""

    status: int
    type: str
    message: str
    code: str | None = None
    param: str | None = None
    retry_after_s: float | None = None


class Failed(_Wire, frozen=True, kw_only=True, tag="err", tag_field="t"):
    error: WireError


class Screened(_Wire, frozen=True, kw_only=True, tag="scr", tag_field="t"):
    """The guard's last word on a job sent with ``screening``: cleared (``error`` None) or blocked.
    It may arrive before or after the worker's frames; the edge holds those until it has it."""

    error: WireError | None = None


Frame = Accepted | Delta | Done | Embeddings | Failed | Screened


# --- control: fleet state and cancellation -------------------------------------------------------


class Perf(_Wire, frozen=True, kw_only=True):
    """What one engine step costs on a worker's hardware: a step that runs ``tokens`` tokens (prompt
    chunks plus one per decoding sequence) over ``context`` tokens of running sequences takes
    ``step_s + tokens * token_s + context * context_token_s`` seconds. Placement predicts first
    tokens in seconds from it (workers.scheduler.placement.cost)."""

    step_s: float
    """Fixed cost of a step: reading the weights once (memory-bound)."""
    token_s: float
    """Compute per token in the step (prefill and decode tokens alike)."""
    context_token_s: float
    """Attention's reading of the KV cache, per token of context of the decoding sequences."""
    token_budget: int
    """Tokens one step may run (vLLM's ``max_num_batched_tokens``; longer prompts are chunked)."""
    max_seqs: int
    """Sequences one step may run (vLLM's ``max_num_seqs``); more wait."""
    kv_tokens: int
    """Tokens the KV cache holds."""
    block_size: int = 16
    """Tokens per KV-cache block, the unit of prefix caching."""

    def step_seconds(self, tokens: int, context: int) -> float:
        return self.step_s + tokens * self.token_s + context * self.context_token_s


class Heartbeat(_Wire, frozen=True, kw_only=True):
    """A worker's state, published every ``interval_s``; missing beats mean the worker is gone."""

    worker_id: str
    engine: str
    models: list[str]
    running: int
    waiting: int
    capacity: int
    started_at: float
    interval_s: float
    leaving: bool = False
    kv_cache_usage: float = 0.0
    queued_prefill_tokens: int = 0
    """Prompt tokens accepted but not yet computed (waiting and partly prefilled sequences)."""
    perf: Perf | None = None
    """The engine's step costs, where it knows them (the simulated engine's profile)."""


class CacheEvents(_Wire, frozen=True, kw_only=True):
    """What a worker's prefix cache gained and lost since its last report (ids of llmaas.blocks),
    on the worker's own subject: the scheduler's prefix index follows it."""

    model: str
    stored: list[int] = []
    removed: list[int] = []


class Progress(_Wire, frozen=True, kw_only=True):
    """Jobs of a worker that got their first token, and that ended, since its last report: the
    schedulers count them against what they placed there, so load is fresh between heartbeats."""

    started: list[str] = []
    ended: list[str] = []


class Cancel(_Wire, frozen=True, kw_only=True):
    """Stop generating for this request (its client went away)."""

    request_id: str


# --- events: what happened, for metering, billing and security reports ---------------------------


AlertKind = Literal["ttft_p95_ms", "error_rate_pct", "budget_used_pct", "tokens_per_hour"]


class AlertEvent(_Wire, frozen=True, kw_only=True):
    """An alert rule starting or ending to fire (stream LLMAAS_ALERTS, subject per tenant, JSON)."""

    rule_id: str
    tenant: str
    kind: AlertKind
    state: Literal["firing", "resolved"]
    value: float
    """What was measured (in the kind's unit), when the state changed."""
    threshold: float
    at: float
    model: str | None = None
    window_s: float = 0.0


class SecurityEvent(_Wire, frozen=True, kw_only=True):
    """A prompt the guard blocked (stream LLMAAS_SECURITY). Never the prompt itself: its hash."""

    request_id: str
    at: float
    tenant: str
    token_id: str
    model: str
    layer: str
    rules: list[str]
    prompt_sha256: str
    """SHA-256 of the texts the guard screened (``guard.screening.user_texts``) joined by U+001E."""
    guard: str


UsageStatus = Literal["ok", "aborted", "blocked", "rejected", "error", "orphaned"]
"""``orphaned``: billed from the worker's record, the request's edge having never reported it."""


class UsageEvent(_Wire, frozen=True, kw_only=True):
    """One finished request, for metering and billing (stream LLMAAS_USAGE, JSON, id = request id).

    ``completion_tokens`` includes ``reasoning_tokens`` (as in OpenAI's usage). A request that broke
    off (``aborted``, or ``error`` after its answer began) counts the tokens generated until then.
    """

    request_id: str
    at: float
    """When the request finished (epoch seconds)."""
    tenant: str
    token_id: str
    model: str
    endpoint: Literal["chat", "completion", "embedding"]
    status: UsageStatus
    http_status: int
    error_code: str = ""
    finish_reason: str = ""
    worker: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    ttft_ms: float | None = None
    """From the request's start at the edge to its first generated token; None without one."""
    duration_ms: float = 0.0
    batch: bool = False
    """Asynchronous batch work (billed at the price list's batch factor)."""
    edge: str = ""
    batch_id: str = ""
    """The batch of a batch line."""


class WorkRecord(_Wire, frozen=True, kw_only=True):
    """What a worker did for one sealed job (stream LLMAAS_WORK, JSON, id = request id): billed by
    metering only when no usage event of that request arrives (its edge died), within the seal's
    bounds (``max_tokens``; the model's context)."""

    request_id: str
    at: float
    tenant: str
    token_id: str
    model: str
    endpoint: Literal["chat", "completion", "embedding"]
    max_tokens: int
    seal: str
    worker: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: str = ""


# --- reports: the edge (or an operator's tool) -> metering, request/reply -------------------------


class SqlQuery(_Wire, frozen=True, kw_only=True, tag="sql", tag_field="t"):
    """Read-only SQL over the metering tables; ``tenant`` set: that tenant's rows only."""

    sql: str
    tenant: str | None = None
    """None for an administrator (every row)."""


class UsageQuery(_Wire, frozen=True, kw_only=True, tag="usage", tag_field="t"):
    """Tokens, euros and kWh of one tenant (or all, ``tenant`` None) since ``since``."""

    since: float
    until: float | None = None
    tenant: str | None = None
    by: Literal["total", "model", "day"] = "total"


Query = SqlQuery | UsageQuery


class Rows(_Wire, frozen=True, kw_only=True, tag="rows", tag_field="t"):
    """A query's answer: values are JSON types (times as ISO 8601 UTC text, decimals as text)."""

    columns: list[str]
    types: list[str]
    rows: list[list[object]]
