"""Turns wire frames into OpenAI bodies: chat completions and text completions, whole or as chunks,
and embedding lists."""

from __future__ import annotations

import base64
from array import array
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from edge import responses as r
from llmaas.errors import RemoteError, ServerError
from llmaas.wire import Delta, Embeddings, Failed, Frame, ToolCall, Usage

DONE_EVENT = b"data: [DONE]\n\n"


def usage_of(usage: Usage) -> r.Usage:
    return r.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=r.PromptTokensDetails(cached_tokens=usage.cached_tokens),
        completion_tokens_details=r.CompletionTokensDetails(reasoning_tokens=usage.reasoning_tokens),
    )


def embeddings_of(frame: Frame) -> Embeddings:
    """The vectors a worker answered with; its failure, or frames out of order, raised."""
    if isinstance(frame, Failed):
        raise RemoteError(frame.error)
    if not isinstance(frame, Embeddings):
        raise ServerError("A worker sent frames out of order.")
    return frame


def _as_base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32 values."""
    values = array("f", vector)
    if values.itemsize != 4:  # pragma: no cover - every platform we run on has 4-byte floats
        raise ServerError("float32 encoding unavailable")
    return base64.b64encode(values.tobytes()).decode()


def embedding_list(result: Embeddings, model: str, encoding_format: str | None) -> bytes:
    """OpenAI's embedding list of ``result`` (``encoding_format`` base64: float32, base64'd)."""
    encode_b64 = encoding_format == "base64"
    data = [
        r.Embedding(index=i, embedding=_as_base64(v) if encode_b64 else v)
        for i, v in enumerate(result.vectors)
    ]
    tokens = result.usage.prompt_tokens
    usage = r.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    return r.encode(r.EmbeddingList(data=data, model=model, usage=usage))


def event(body: bytes) -> bytes:
    return b"data: " + body + b"\n\n"


@dataclass(slots=True)
class Collected:
    """A whole answer gathered from its deltas (for non-streamed responses)."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)

    def add(self, frame: Delta) -> None:
        self.text.append(frame.text)
        if frame.reasoning:
            self.reasoning.append(frame.reasoning)
        if frame.tool_calls:
            self.tool_calls.extend(frame.tool_calls)


class Renderer(Protocol):
    def opening(self) -> bytes: ...

    def delta(self, frame: Delta) -> bytes: ...

    def closing(self, finish_reason: str) -> bytes: ...

    def usage(self, usage: Usage) -> bytes: ...

    def whole(self, answer: Collected, finish_reason: str, usage: Usage) -> bytes: ...


def _function(call: ToolCall) -> r.FunctionCall:
    return r.FunctionCall(name=call.name, arguments=call.arguments)


class ChatRenderer:
    """``chat.completion`` and ``chat.completion.chunk`` bodies for one request."""

    def __init__(self, request_id: str, model: str, created: int, include_usage: bool) -> None:
        self.id = f"chatcmpl-{request_id}"
        self.model = model
        self.created = created
        # With include_usage, OpenAI puts "usage": null on every chunk but the last one.
        self._chunk = r.ChatCompletionUsageChunk if include_usage else r.ChatCompletionChunk
        self._tool_calls = 0

    def _encode(self, delta: r.ChunkDelta, finish_reason: str | None = None) -> bytes:
        choice = r.ChunkChoice(delta=delta, finish_reason=finish_reason)
        return event(
            r.encode(self._chunk(id=self.id, created=self.created, model=self.model, choices=[choice]))
        )

    def opening(self) -> bytes:
        return self._encode(r.ChunkDelta(role="assistant", content=""))

    def delta(self, frame: Delta) -> bytes:
        if not frame.reasoning and not frame.tool_calls:
            return self._encode(r.ChunkDelta(content=frame.text))
        calls = None
        if frame.tool_calls:
            first, self._tool_calls = self._tool_calls, self._tool_calls + len(frame.tool_calls)
            calls = [
                r.ChunkToolCall(index=first + i, id=call.id, function=_function(call))
                for i, call in enumerate(frame.tool_calls)
            ]
        return self._encode(
            r.ChunkDelta(
                content=frame.text or None, reasoning_content=frame.reasoning or None, tool_calls=calls
            )
        )

    def closing(self, finish_reason: str) -> bytes:
        return self._encode(r.ChunkDelta(), finish_reason)

    def usage(self, usage: Usage) -> bytes:
        chunk = r.ChatCompletionUsageChunk(
            id=self.id, created=self.created, model=self.model, choices=[], usage=usage_of(usage)
        )
        return event(r.encode(chunk))

    def whole(self, answer: Collected, finish_reason: str, usage: Usage) -> bytes:
        text = "".join(answer.text)
        message = r.AssistantMessage(
            # OpenAI: content is null in a message that only calls tools.
            content=None if answer.tool_calls and not text else text,
            reasoning_content="".join(answer.reasoning) if answer.reasoning else msgspec.UNSET,
            tool_calls=[r.MessageToolCall(id=c.id, function=_function(c)) for c in answer.tool_calls]
            if answer.tool_calls
            else msgspec.UNSET,
        )
        choice = r.ChatChoice(message=message, finish_reason=finish_reason)
        return r.encode(
            r.ChatCompletion(
                id=self.id, created=self.created, model=self.model, choices=[choice], usage=usage_of(usage)
            )
        )


class TextRenderer:
    """``text_completion`` bodies (whole and streamed) for one request."""

    def __init__(self, request_id: str, model: str, created: int, include_usage: bool) -> None:
        self.id = f"cmpl-{request_id}"
        self.model = model
        self.created = created

    def _encode(self, choices: list[r.TextChoice], usage: Usage | None = None) -> bytes:
        return r.encode(
            r.TextCompletion(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=choices,
                usage=None if usage is None else usage_of(usage),
            )
        )

    def opening(self) -> bytes:
        return b""

    def delta(self, frame: Delta) -> bytes:
        return event(self._encode([r.TextChoice(text=frame.text)]))

    def closing(self, finish_reason: str) -> bytes:
        return event(self._encode([r.TextChoice(text="", finish_reason=finish_reason)]))

    def usage(self, usage: Usage) -> bytes:
        return event(self._encode([], usage))

    def whole(self, answer: Collected, finish_reason: str, usage: Usage) -> bytes:
        return self._encode([r.TextChoice(text="".join(answer.text), finish_reason=finish_reason)], usage)
