"""Turns wire frames into OpenAI bodies: chat completions and text completions, whole or as chunks."""

from __future__ import annotations

from typing import Protocol

from edge import responses as r
from llmaas.wire import Usage

DONE_EVENT = b"data: [DONE]\n\n"


def usage_of(usage: Usage) -> r.Usage:
    return r.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=r.PromptTokensDetails(cached_tokens=usage.cached_tokens),
        completion_tokens_details=r.CompletionTokensDetails(reasoning_tokens=usage.reasoning_tokens),
    )


def event(body: bytes) -> bytes:
    return b"data: " + body + b"\n\n"


class Renderer(Protocol):
    def opening(self) -> bytes: ...

    def delta(self, text: str) -> bytes: ...

    def closing(self, finish_reason: str) -> bytes: ...

    def usage(self, usage: Usage) -> bytes: ...

    def whole(self, text: str, finish_reason: str, usage: Usage) -> bytes: ...


class ChatRenderer:
    """``chat.completion`` and ``chat.completion.chunk`` bodies for one request."""

    def __init__(self, request_id: str, model: str, created: int, include_usage: bool) -> None:
        self.id = f"chatcmpl-{request_id}"
        self.model = model
        self.created = created
        # With include_usage, OpenAI puts "usage": null on every chunk but the last one.
        self._chunk = r.ChatCompletionUsageChunk if include_usage else r.ChatCompletionChunk

    def _encode(self, delta: r.ChunkDelta, finish_reason: str | None = None) -> bytes:
        choice = r.ChunkChoice(delta=delta, finish_reason=finish_reason)
        return event(
            r.encode(self._chunk(id=self.id, created=self.created, model=self.model, choices=[choice]))
        )

    def opening(self) -> bytes:
        return self._encode(r.ChunkDelta(role="assistant", content=""))

    def delta(self, text: str) -> bytes:
        return self._encode(r.ChunkDelta(content=text))

    def closing(self, finish_reason: str) -> bytes:
        return self._encode(r.ChunkDelta(), finish_reason)

    def usage(self, usage: Usage) -> bytes:
        chunk = r.ChatCompletionUsageChunk(
            id=self.id, created=self.created, model=self.model, choices=[], usage=usage_of(usage)
        )
        return event(r.encode(chunk))

    def whole(self, text: str, finish_reason: str, usage: Usage) -> bytes:
        choice = r.ChatChoice(message=r.AssistantMessage(content=text), finish_reason=finish_reason)
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

    def delta(self, text: str) -> bytes:
        return event(self._encode([r.TextChoice(text=text)]))

    def closing(self, finish_reason: str) -> bytes:
        return event(self._encode([r.TextChoice(text="", finish_reason=finish_reason)]))

    def usage(self, usage: Usage) -> bytes:
        return event(self._encode([], usage))

    def whole(self, text: str, finish_reason: str, usage: Usage) -> bytes:
        return self._encode([r.TextChoice(text=text, finish_reason=finish_reason)], usage)
