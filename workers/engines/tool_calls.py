"""Tool calls a model chose by itself (``tool_choice: auto``), read with vLLM's tool-call parsers.

Each model family writes calls in its own format (Hermes ``<tool_call>{…}</tool_call>``, Llama's
JSON, Mistral's ``[TOOL_CALLS]``…); vLLM ships one parser per format and a worker names its model's
(``--tool-parser``). The answer is read once it is complete, so a client sees either text or calls,
never a half-written call as text.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from llmaas.wire import ChatMessage, Tool, ToolCall


def call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def openai_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    """Tools as OpenAI writes them (what chat templates and vLLM's parsers expect)."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": json.loads(t.parameters) if t.parameters else {},
            },
        }
        for t in tools
    ]


def load_parser_class(name: str) -> Any:
    """vLLM's tool parser class ``name``; ValueError names the known ones."""
    from vllm.tool_parsers import ToolParserManager

    try:
        return ToolParserManager.get_tool_parser(name)
    except KeyError as exc:
        known = ", ".join(sorted(ToolParserManager.list_registered()))
        raise ValueError(f"unknown tool parser '{name}' (known: {known})") from exc


class ToolCallReader:
    """Reads the calls out of one complete answer, with the parser of the model's family."""

    def __init__(
        self, parser_class: Any, tokenizer: Any, tools: list[Tool], messages: list[ChatMessage]
    ) -> None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        self.request = ChatCompletionRequest(
            model="-",
            messages=[{"role": m.role, "content": m.content} for m in messages],
            tools=openai_tools(tools),
            tool_choice="auto",
        )
        self.parser = parser_class(tokenizer, self.request.tools)
        # Some parsers need the markers kept in the text (e.g. Hermes asks not to skip special tokens).
        self.request = self.parser.adjust_request(self.request)

    @property
    def skip_special_tokens(self) -> bool:
        return bool(self.request.skip_special_tokens)

    def read(self, text: str) -> tuple[str, list[ToolCall]]:
        """(text meant for the user, calls) from the model's whole answer."""
        found = self.parser.extract_tool_calls(text, self.request)
        if not found.tools_called:
            return text, []
        calls = [
            ToolCall(id=call.id or call_id(), name=call.function.name, arguments=call.function.arguments)
            for call in found.tool_calls
        ]
        return found.content or "", calls
