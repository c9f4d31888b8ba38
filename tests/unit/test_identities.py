"""NATS identities as files: made once, the owner's only; a file that holds no seed is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmaas import identities


def test_a_seed_is_made_once_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    path = identities.mint(tmp_path / "ids", "edge")
    key = identities.public_key(path)
    assert identities.mint(tmp_path / "ids", "edge") == path and identities.public_key(path) == key
    assert key.startswith("U") and path.stat().st_mode & 0o777 == 0o600


def test_what_is_not_an_identity_is_refused_clearly(tmp_path: Path) -> None:
    garbage = tmp_path / "bad.nk"
    garbage.write_text("not a seed\n")
    with pytest.raises(ValueError, match="holds no NATS user seed"):
        identities.public_key(garbage)
    with pytest.raises(ValueError, match="no NATS role named"):
        identities.mint(tmp_path, "intruder")
    assert not (tmp_path / "intruder.nk").exists()
