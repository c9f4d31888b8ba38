"""Response bodies and stream chunks in OpenAI's shapes, as msgspec Structs (encoded on the hot path).

Field order and nulls follow what OpenAI sends, so strict clients parse them unchanged.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class _Body(msgspec.Struct, kw_only=True):
    pass


class _Omitting(msgspec.Struct, kw_only=True, omit_defaults=True):
    pass


class PromptTokensDetails(_Body, kw_only=True):
    cached_tokens: int = 0


class CompletionTokensDetails(_Body, kw_only=True):
    reasoning_tokens: int = 0


class Usage(_Body, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = msgspec.field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = msgspec.field(
        default_factory=CompletionTokensDetails
    )


class FunctionCall(_Body, kw_only=True):
    name: str
    arguments: str


class MessageToolCall(_Body, kw_only=True):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(_Body, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    # Present only when there is something to say: clients that do not know them never see them.
    reasoning_content: str | msgspec.UnsetType = msgspec.UNSET
    tool_calls: list[MessageToolCall] | msgspec.UnsetType = msgspec.UNSET


class ChatChoice(_Body, kw_only=True):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


class ChatCompletion(_Body, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ChunkToolCall(_Body, kw_only=True):
    index: int
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChunkDelta(_Omitting, kw_only=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None


class ChunkChoice(_Body, kw_only=True):
    index: int = 0
    delta: ChunkDelta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Body, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChunkChoice]


class ChatCompletionUsageChunk(ChatCompletionChunk, kw_only=True):
    """Chunks sent when ``stream_options.include_usage`` is set carry ``usage`` (null until the last)."""

    usage: Usage | None = None


class TextChoice(_Body, kw_only=True):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: str | None = None


class TextCompletion(_Body, kw_only=True):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    system_fingerprint: str | None = None
    usage: Usage | None = None


class Embedding(_Body, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(_Body, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Body, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Model(_Omitting, kw_only=True):
    id: str
    object: Literal["model"]
    """No default: the omitting struct would leave a default out, and OpenAI's schema requires it."""
    created: int
    owned_by: str
    # The catalog's lifecycle, for models it lists (clients that do not know these fields skip them).
    state: str | None = None
    kind: str | None = None
    context_length: int | None = None
    dmp: str | None = None
    dsp: str | None = None
    successor: str | None = None
    publisher: str | None = None


class ModelList(_Body, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorBody(_Body, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(_Body, kw_only=True):
    error: ErrorBody


encode = msgspec.json.Encoder().encode
