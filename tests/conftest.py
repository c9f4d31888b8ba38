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


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory another account (nobody) can reach, for a process that gives up root
    (llmaas.privileges), with this checkout's Python reachable by it too.

    pytest's tmp_path lies under a directory of root's only, a clean clone in a ``mktemp -d``
    directory is root's only, and an interpreter installed in root's home (pyenv) is behind
    ``/root``: the directories in the way let others pass (o+x: pass, not list; o+r too for one
    Python reads, such as the checkout) for the test's duration, and get their exact modes back.
    """
    import os
    import shutil
    import stat
    import tempfile

    from llmaas import privileges

    if os.geteuid() != 0:
        pytest.skip("giving up root needs root")
    account = privileges.Account.named("nobody")
    opened: dict[Path, int] = {}
    where = Path(tempfile.mkdtemp(prefix="llmaas-open-"))
    where.chmod(0o711)
    try:
        while (blocked := privileges.first_blocked(account, privileges.python_paths())) is not None:
            if not blocked.is_dir() or stat.S_IMODE(blocked.stat().st_mode) & 0o005 == 0o005:
                pytest.skip(f"nobody cannot read {blocked}")
            # Passing (x) is enough on the way; a directory Python reads (the checkout) needs r too.
            opened.setdefault(blocked, stat.S_IMODE(blocked.stat().st_mode))
            blocked.chmod(
                stat.S_IMODE(blocked.stat().st_mode) | (0o004 if blocked.stat().st_mode & 0o001 else 0o001)
            )
        yield where
    finally:
        for path, mode in opened.items():
            path.chmod(mode)
        shutil.rmtree(where, ignore_errors=True)
