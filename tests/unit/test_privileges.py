"""Giving up root (llmaas.privileges): what an account can reach, and a process that becomes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmaas import privileges

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="giving up root needs root")


def test_accounts_by_name_or_uid_and_a_clear_error_for_none() -> None:
    assert privileges.Account.named("nobody") == privileges.Account.named("65534")
    assert privileges.Account.named("root").is_root
    with pytest.raises(ValueError, match="no account named 'no-such-account-7f3a'"):
        privileges.Account.named("no-such-account-7f3a")


def test_what_an_account_can_pass_and_read(tmp_path: Path, open_dir: Path) -> None:
    nobody = privileges.Account.named("nobody")
    # tmp_path's parents are root's only: the first of them, seen from the top down, is named.
    first = privileges.blocked(nobody, tmp_path)
    assert first is not None and tmp_path.is_relative_to(first) and first != tmp_path
    closed = open_dir / "closed"
    closed.mkdir(mode=0o700)
    passage = open_dir / "passage"
    passage.mkdir(mode=0o711)
    secret = passage / "secret"
    secret.write_text("root's")
    secret.chmod(0o600)
    (passage / "public").write_text("anyone's")
    (passage / "public").chmod(0o644)
    assert privileges.blocked(nobody, closed) == closed
    assert privileges.blocked(nobody, closed / "inside", read=False) == closed
    assert privileges.blocked(nobody, passage, read=False) is None
    assert privileges.blocked(nobody, passage) == passage  # passable, not listable
    assert privileges.blocked(nobody, secret) == secret
    assert privileges.blocked(nobody, passage / "public") is None
    assert privileges.blocked(privileges.Account.named("root"), secret) is None


def test_becoming_an_account_is_for_good_and_keeps_root_s_files_out_of_reach(open_dir: Path) -> None:
    secret = open_dir / "admin-token"
    secret.write_text("only root reads this")
    secret.chmod(0o600)
    data = open_dir / "data"
    data.mkdir(mode=0o700)
    (data / "old-part").write_text("written as root by an earlier start")
    script = f"""
import os
from pathlib import Path
from llmaas import privileges
privileges.become(privileges.Account.named("nobody"), owned=[Path({str(data)!r})])
print(os.getresuid(), os.getresgid(), os.getgroups(), os.environ["HOME"])
try:
    Path({str(secret)!r}).read_text()
    print("read the secret")
except PermissionError:
    print("secret refused")
try:
    os.setuid(0)
    print("root again")
except PermissionError:
    print("root refused")
(Path({str(data)!r}) / "new-part").write_text("written as nobody")
print((Path({str(data)!r}) / "old-part").read_text())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "(65534, 65534, 65534) (65534, 65534, 65534) [] /nonexistent"
    assert lines[1:4] == ["secret refused", "root refused", "written as root by an earlier start"]
    assert {p.stat().st_uid for p in (data, *data.iterdir())} == {65534}


def test_an_account_that_cannot_reach_its_data_is_refused_before_anything_changes(tmp_path: Path) -> None:
    data = tmp_path / "closed" / "data"
    data.mkdir(parents=True)
    (tmp_path / "closed").chmod(0o700)
    with pytest.raises(ValueError, match=r"nobody cannot reach .*: let it pass"):
        privileges.become(privileges.Account.named("nobody"), owned=[data])
    assert os.geteuid() == 0 and data.stat().st_uid == 0


def test_only_root_can_become_another_account() -> None:
    script = (
        "import os; from llmaas import privileges; os.setuid(65534); "
        "privileges.become(privileges.Account.named('daemon'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert "only root can become 'daemon'" in done.stderr
