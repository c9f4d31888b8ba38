"""A real tokenizer for the parser tests: SmolLM2's, read from the packaged GGUF (no conversion),
with the markers that reasoning and tool-calling model families add to their vocabularies; a real
nats-server (JetStream, anyone admitted) for the tests of what lives in streams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmaas.nats_server import NatsServer
from workers.models import local


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    s = NatsServer(tmp_path, port=-1)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    gguf = local.gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.add_tokens(["<think>", "</think>", "<tool_call>", "</tool_call>"])
    return tok
