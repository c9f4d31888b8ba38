"""Giving up root: a service started as root reads what only root may read (its NATS seed, its keys),
then becomes an ordinary account before it touches anything a caller controls.

Metering runs tenants' SQL inside its own process (chDB). Whatever the SQL checks miss, the engine
then runs as an account that cannot read the admin token, the other services' seeds and keys, or
their environments (``/proc/<pid>/environ`` is readable by the same account only).

An account can only run from where it can reach: every directory on the way to Python's files and
to its data must let it pass. That is checked before anything changes, and named when it fails.
"""

from __future__ import annotations

import os
import pwd
import stat
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import llmaas


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def named(cls, name: str) -> Account:
        """The account ``name`` (or a numeric uid) of this machine; ValueError if it has none."""
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except KeyError:
            raise ValueError(f"no account named {name!r} on this machine (see `useradd --system`)") from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def _passes(account: Account, info: os.stat_result, bits: int) -> bool:
    """Whether the mode bits ``bits`` (of r=4, w=2, x=1) are granted to ``account`` by ``info``."""
    if account.is_root:
        return True
    if info.st_uid == account.uid:
        shift = 6
    elif info.st_gid == account.gid:  # supplementary groups are dropped with root
        shift = 3
    else:
        shift = 0
    return (info.st_mode >> shift) & bits == bits


def blocked(account: Account, path: Path, *, read: bool = True) -> Path | None:
    """The first directory on the way to ``path`` that ``account`` cannot pass, or ``path`` itself
    if it cannot read it (pass it, if not ``read``); None if nothing stands in the way."""
    path = path.resolve()
    for parent in reversed(path.parents):
        if not _passes(account, parent.stat(), 1):
            return parent
    info = path.stat()
    bits = (5 if stat.S_ISDIR(info.st_mode) else 4) if read else 1
    return None if _passes(account, info, bits) else path


def python_paths() -> list[Path]:
    """What a Python process of ours reads: the interpreter, its library, the installed packages."""
    paths = {Path(sys.executable).resolve(), Path(llmaas.__file__).parent.parent}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        if (found := Path(sysconfig.get_paths()[name])).exists():
            paths.add(found)
    return sorted(paths)


def first_blocked(account: Account, paths: Iterable[Path]) -> Path | None:
    return next((found for path in paths if (found := blocked(account, path)) is not None), None)


def own(account: Account, root: Path) -> None:
    """``root`` and everything under it owned by ``account`` (links themselves, never their targets)."""
    for path in (root, *root.rglob("*")):
        os.lchown(path, account.uid, account.gid)


def become(account: Account, *, owned: Sequence[Path] = ()) -> None:
    """This process as ``account`` from now on, for good, with the directories ``owned`` handed to
    it first. Runs as root only; a process already running as ``account`` stays as it is.

    ValueError, before anything changes, if it cannot be done or the account could not run from here.
    """
    if os.geteuid() == account.uid:
        return
    if os.geteuid() != 0:
        raise ValueError(f"only root can become {account.name!r} (this process runs as uid {os.geteuid()})")
    where = first_blocked(account, python_paths())
    # What it is handed it may not reach yet; the way to it it must.
    where = where or next((w for r in owned if (w := blocked(account, r.parent, read=False))), None)
    if where is not None:
        raise ValueError(
            f"{account.name} cannot reach {where} (mode {stat.filemode(where.stat().st_mode)}): "
            "let it pass (chmod o+x) or put the data and the installation where every account may go"
        )
    for root in owned:
        own(account, root)
    os.setgroups([])
    os.setgid(account.gid)
    os.setuid(account.uid)  # real, effective and saved uid: root cannot be taken back
    os.environ.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
