"""Rendered bodies parse as the official SDK's own types (the contract clients rely on)."""

import json

from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from edge.rendering import DONE_EVENT, ChatRenderer, Collected, TextRenderer
from llmaas.wire import Delta, ToolCall, Usage

USAGE = Usage(prompt_tokens=3, completion_tokens=2, reasoning_tokens=1, cached_tokens=1)


def answer(text: str) -> Collected:
    collected = Collected()
    collected.add(Delta(text=text))
    return collected


def data(event: bytes) -> dict[str, object]:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    parsed: dict[str, object] = json.loads(event[6:])
    return parsed


def test_chat_chunks_and_whole_answer_parse_as_sdk_types() -> None:
    r = ChatRenderer("rid", "m", 123, include_usage=True)
    opening = ChatCompletionChunk.model_validate(data(r.opening()))
    assert opening.choices[0].delta.role == "assistant"
    delta = ChatCompletionChunk.model_validate(data(r.delta(Delta(text="hé"))))
    assert delta.choices[0].delta.content == "hé" and delta.usage is None
    closing = ChatCompletionChunk.model_validate(data(r.closing("length")))
    assert closing.choices[0].finish_reason == "length"
    usage = ChatCompletionChunk.model_validate(data(r.usage(USAGE)))
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.total_tokens == 5
    assert usage.usage.completion_tokens_details.reasoning_tokens == 1  # type: ignore[union-attr]
    whole = ChatCompletion.model_validate_json(r.whole(answer("hi"), "stop", USAGE))
    assert whole.id == "chatcmpl-rid" and whole.choices[0].message.content == "hi"
    assert whole.usage is not None and whole.usage.prompt_tokens_details.cached_tokens == 1  # type: ignore[union-attr]


def test_chat_chunks_without_include_usage_have_no_usage_key() -> None:
    assert "usage" not in data(ChatRenderer("rid", "m", 1, include_usage=False).delta(Delta(text="x")))


def test_text_completion_bodies_parse_as_sdk_types() -> None:
    r = TextRenderer("rid", "m", 123, include_usage=False)
    assert r.opening() == b""
    # Mid-stream chunks carry finish_reason null, as OpenAI's do (the SDK does not validate them).
    chunk = data(r.delta(Delta(text="abc")))
    assert chunk["object"] == "text_completion"
    assert chunk["choices"] == [{"text": "abc", "index": 0, "logprobs": None, "finish_reason": None}]
    closing = Completion.model_validate(data(r.closing("stop")))
    assert closing.choices[0].finish_reason == "stop"
    whole = Completion.model_validate_json(r.whole(answer("abc"), "length", USAGE))
    assert whole.id == "cmpl-rid" and whole.usage is not None and whole.usage.total_tokens == 5


def test_done_event() -> None:
    assert DONE_EVENT == b"data: [DONE]\n\n"


CALL = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')


def test_reasoning_and_tool_calls_in_chunks_parse_as_sdk_types() -> None:
    r = ChatRenderer("rid", "m", 1, include_usage=False)
    thinking = data(r.delta(Delta(text="", reasoning="Let me think.")))
    assert thinking["choices"][0]["delta"] == {"reasoning_content": "Let me think."}  # type: ignore[index]
    first = ChatCompletionChunk.model_validate(data(r.delta(Delta(text="", tool_calls=[CALL]))))
    second = ChatCompletionChunk.model_validate(data(r.delta(Delta(text="", tool_calls=[CALL]))))
    calls = [c.choices[0].delta.tool_calls[0] for c in (first, second)]  # type: ignore[index]
    assert [c.index for c in calls] == [0, 1]  # indices count over the whole stream
    assert calls[0].function is not None and calls[0].function.arguments == '{"city": "Paris"}'
    assert calls[0].id == "call_1" and calls[0].type == "function"


def test_a_whole_answer_with_reasoning_and_tool_calls() -> None:
    collected = Collected()
    collected.add(Delta(text="", reasoning="Weather needs a tool."))
    collected.add(Delta(text="", tool_calls=[CALL]))
    body = ChatRenderer("rid", "m", 1, include_usage=False).whole(collected, "tool_calls", USAGE)
    whole = ChatCompletion.model_validate_json(body)
    message = whole.choices[0].message
    assert message.content is None  # OpenAI: null content beside tool calls
    assert message.tool_calls is not None and message.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(body)["choices"][0]["message"]["reasoning_content"] == "Weather needs a tool."
    assert whole.choices[0].finish_reason == "tool_calls"


def test_plain_answers_carry_no_reasoning_or_tool_fields() -> None:
    body = json.loads(ChatRenderer("rid", "m", 1, include_usage=False).whole(answer("hi"), "stop", USAGE))
    assert set(body["choices"][0]["message"]) == {"role", "content", "refusal"}
