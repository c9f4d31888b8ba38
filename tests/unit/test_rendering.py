"""Rendered bodies parse as the official SDK's own types (the contract clients rely on)."""

import json

from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from edge.rendering import DONE_EVENT, ChatRenderer, TextRenderer
from llmaas.wire import Usage

USAGE = Usage(prompt_tokens=3, completion_tokens=2, reasoning_tokens=1, cached_tokens=1)


def data(event: bytes) -> dict[str, object]:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    parsed: dict[str, object] = json.loads(event[6:])
    return parsed


def test_chat_chunks_and_whole_answer_parse_as_sdk_types() -> None:
    r = ChatRenderer("rid", "m", 123, include_usage=True)
    opening = ChatCompletionChunk.model_validate(data(r.opening()))
    assert opening.choices[0].delta.role == "assistant"
    delta = ChatCompletionChunk.model_validate(data(r.delta("hé")))
    assert delta.choices[0].delta.content == "hé" and delta.usage is None
    closing = ChatCompletionChunk.model_validate(data(r.closing("length")))
    assert closing.choices[0].finish_reason == "length"
    usage = ChatCompletionChunk.model_validate(data(r.usage(USAGE)))
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.total_tokens == 5
    assert usage.usage.completion_tokens_details.reasoning_tokens == 1  # type: ignore[union-attr]
    whole = ChatCompletion.model_validate_json(r.whole("hi", "stop", USAGE))
    assert whole.id == "chatcmpl-rid" and whole.choices[0].message.content == "hi"
    assert whole.usage is not None and whole.usage.prompt_tokens_details.cached_tokens == 1  # type: ignore[union-attr]


def test_chat_chunks_without_include_usage_have_no_usage_key() -> None:
    assert "usage" not in data(ChatRenderer("rid", "m", 1, include_usage=False).delta("x"))


def test_text_completion_bodies_parse_as_sdk_types() -> None:
    r = TextRenderer("rid", "m", 123, include_usage=False)
    assert r.opening() == b""
    # Mid-stream chunks carry finish_reason null, as OpenAI's do (the SDK does not validate them).
    chunk = data(r.delta("abc"))
    assert chunk["object"] == "text_completion"
    assert chunk["choices"] == [{"text": "abc", "index": 0, "logprobs": None, "finish_reason": None}]
    closing = Completion.model_validate(data(r.closing("stop")))
    assert closing.choices[0].finish_reason == "stop"
    whole = Completion.model_validate_json(r.whole("abc", "length", USAGE))
    assert whole.id == "cmpl-rid" and whole.usage is not None and whole.usage.total_tokens == 5


def test_done_event() -> None:
    assert DONE_EVENT == b"data: [DONE]\n\n"
