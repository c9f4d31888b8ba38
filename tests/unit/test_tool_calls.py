"""Tool calls chosen by the model (tool_choice auto), read with vLLM's own parsers from real text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmaas.wire import ChatMessage, Tool
from workers.engines.tool_calls import ToolCallReader, load_parser_class

pytest.importorskip("vllm")

WEATHER = Tool(
    name="get_weather",
    description="Current weather in a city",
    parameters='{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}',
)
ASKED = [ChatMessage(role="user", content="Weather in Paris?")]


def reader(tokenizer: Any, parser: str) -> ToolCallReader:
    return ToolCallReader(load_parser_class(parser), tokenizer, [WEATHER], ASKED)


def test_hermes_calls_become_tool_calls(tokenizer: Any) -> None:
    r = reader(tokenizer, "hermes")
    assert r.skip_special_tokens is False  # the markers must survive detokenisation
    text = 'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    content, calls = r.read(text)
    assert content == "Let me check."
    assert [c.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    assert calls[0].id


def test_two_calls_in_one_answer(tokenizer: Any) -> None:
    one = '<tool_call>{"name": "get_weather", "arguments": {"city": "%s"}}</tool_call>'
    _, calls = reader(tokenizer, "hermes").read(one % "Paris" + one % "Lyon")
    assert [json.loads(c.arguments)["city"] for c in calls] == ["Paris", "Lyon"]
    assert len({c.id for c in calls}) == 2


def test_plain_text_stays_text(tokenizer: Any) -> None:
    assert reader(tokenizer, "hermes").read("It is sunny in Paris.") == ("It is sunny in Paris.", [])


def test_an_unknown_parser_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="hermes"):
        load_parser_class("no-such-parser")
