"""Files only their owner may read (keys, seeds, tokens, a configuration holding a secret): created
with mode 0600 from the first byte, never readable by others, not even for a moment."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create(path: Path, data: bytes) -> None:
    """Write a new file of ``data`` (it must not exist yet)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def replace(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path``, which stays (or becomes) its owner's only."""
    path.unlink(missing_ok=True)
    create(path, data)


def secret(path: Path, given: str | None = None) -> str:
    """A key: ``given`` (the operator's), else the one in ``path``, made once (256 random bits, hex)."""
    if given:
        return given
    if not path.exists():
        create(path, (secrets.token_hex(32) + "\n").encode())
    return path.read_text().strip()
