"""A real tokenizer for the parser tests: SmolLM2's, read from the packaged GGUF (no conversion),
with the markers that reasoning and tool-calling model families add to their vocabularies."""

from __future__ import annotations

from typing import Any

import pytest

from workers.models import local


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    gguf = local.gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.add_tokens(["<think>", "</think>", "<tool_call>", "</tool_call>"])
    return tok
