"""Reasoning models: split a stream of generated tokens into reasoning and answer.

vLLM ships one reasoning parser per model family (``deepseek_r1``, ``qwen3``, ``granite``…); a
worker names its model's parser (``--reasoning-parser``) and this wraps it for our streams. The
split is done on token ids as they are generated, so streamed and non-streamed answers agree, and
the reasoning tokens are counted by the parser (they are billed at their own price).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def load_parser(name: str, tokenizer: Any) -> Any:
    """vLLM's reasoning parser ``name`` for this tokenizer; ValueError names the known ones."""
    from vllm.reasoning import ReasoningParserManager

    try:
        parser_class = ReasoningParserManager.get_reasoning_parser(name)
    except KeyError as exc:
        known = ", ".join(sorted(ReasoningParserManager.list_registered()))
        raise ValueError(f"unknown reasoning parser '{name}' (known: {known})") from exc
    return parser_class(tokenizer)


class ReasoningSplitter:
    """Feeds each delta (text and token ids) to a vLLM reasoning parser; returns (reasoning, answer)."""

    def __init__(self, parser: Any, prompt_token_ids: Sequence[int]) -> None:
        self.parser = parser
        # Some chat templates open the reasoning block in the prompt itself (e.g. "<think>\n").
        parser.adjust_initial_state_from_prompt(prompt_token_ids)
        self.text = ""
        self.token_ids: list[int] = []

    def feed(self, delta_text: str, delta_token_ids: Sequence[int]) -> tuple[str, str]:
        previous_text, previous_ids = self.text, list(self.token_ids)
        self.text += delta_text
        self.token_ids.extend(delta_token_ids)
        message = self.parser.extract_reasoning_streaming(
            previous_text, self.text, delta_text, previous_ids, self.token_ids, delta_token_ids
        )
        if message is None:
            return "", ""
        return message.reasoning or "", message.content or ""

    @property
    def reasoning_tokens(self) -> int:
        count: int = self.parser.count_reasoning_tokens(self.token_ids)
        return count
