"""Fixtures: a full stack (guard, scheduler, two workers, edge) on a real nats-server, per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack

CHAT = "synthetic-chat"
EMBED = "synthetic-embed"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("stack"))
    try:
        s.guard()
        s.scheduler()
        s.worker("w-fast", "--tokens-per-s", "0")
        s.worker("w-fast2", "--tokens-per-s", "0")
        s.edge()
        s.wait_for_model(CHAT)
        yield s
    finally:
        s.close()


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own, for tests that break things; components are started by the test."""
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.close()
