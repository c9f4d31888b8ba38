"""Reasoning split on real token streams, with vLLM's own parsers (no reasoning model's weights).

The tokenizer is SmolLM2's with the ``<think>`` markers added as tokens (see conftest), as
reasoning models' tokenizers have them. Each stream is fed the way vLLM's detokenizer delivers
it: one token at a time, with the text that token adds.
"""

from __future__ import annotations

from typing import Any

import pytest

from workers.engines.reasoning import ReasoningSplitter, load_parser

pytest.importorskip("vllm")

THOUGHT = "The user asks for the capital of France. That is Paris."
ANSWER = "The capital of France is Paris."


def stream(tokenizer: Any, text: str) -> list[tuple[str, list[int]]]:
    """(delta text, delta token ids) per generated token, as the engine streams them."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    deltas, previous = [], ""
    for end in range(1, len(ids) + 1):
        current = tokenizer.decode(ids[:end])
        deltas.append((current[len(previous) :], ids[end - 1 : end]))
        previous = current
    return deltas


def split(tokenizer: Any, parser_name: str, output: str, prompt: str = "") -> tuple[str, str, int, int]:
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
    splitter = ReasoningSplitter(load_parser(parser_name, tokenizer), prompt_ids)
    reasoning, answer, tokens = "", "", 0
    for text, ids in stream(tokenizer, output):
        r, a = splitter.feed(text, ids)
        reasoning, answer, tokens = reasoning + r, answer + a, tokens + len(ids)
    return reasoning, answer, splitter.reasoning_tokens, tokens


@pytest.mark.parametrize("parser", ["deepseek_r1", "qwen3"])
def test_reasoning_and_answer_are_separated(tokenizer: Any, parser: str) -> None:
    reasoning, answer, reasoning_tokens, total = split(tokenizer, parser, f"<think>{THOUGHT}</think>{ANSWER}")
    assert reasoning.strip() == THOUGHT
    assert answer.strip() == ANSWER
    thought_tokens = len(tokenizer.encode(THOUGHT, add_special_tokens=False))
    # Reasoning tokens are the thought itself: neither the markers nor the answer.
    assert reasoning_tokens == thought_tokens
    assert total == thought_tokens + 2 + len(tokenizer.encode(ANSWER, add_special_tokens=False))


def test_a_reasoning_block_opened_by_the_prompt(tokenizer: Any) -> None:
    # DeepSeek-R1's template ends the prompt with "<think>": the output has only the closing marker.
    reasoning, answer, _, _ = split(tokenizer, "deepseek_r1", f"{THOUGHT}</think>{ANSWER}", prompt="Q<think>")
    assert reasoning.strip() == THOUGHT
    assert answer.strip() == ANSWER


def test_an_unknown_parser_names_the_known_ones(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="deepseek_r1"):
        load_parser("no-such-parser", tokenizer)
