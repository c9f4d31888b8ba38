"""OpenAI's cursor pagination of a list (files, batches): ``after`` an id, at most ``limit``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from llmaas.errors import InvalidRequest


class Listed(Protocol):
    @property
    def id(self) -> str: ...

    def to_openai(self) -> dict[str, Any]: ...


def limit(text: str, most: int) -> int:
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise InvalidRequest(f"Invalid 'limit' {text[:16]!r}: from 1 to {most}.", param="limit")
    return int(text)


def page(
    found: Sequence[Listed], after: str | None, most: int, *, what: str, ids_always: bool
) -> dict[str, Any]:
    """The list object of the items of ``found`` (in their order) after the one whose id is
    ``after``, at most ``most``; ``ids_always``: ``first_id``/``last_id`` also on an empty page
    (as strings: the files' schema types them so, the batches' leaves them out)."""
    if after:
        ids = [item.id for item in found]
        if after not in ids:
            raise InvalidRequest(f"Invalid 'after' {after[:64]!r}: no such {what}.", param="after")
        found = found[ids.index(after) + 1 :]
    shown = found[:most]
    listing: dict[str, Any] = {
        "object": "list",
        "data": [item.to_openai() for item in shown],
        "has_more": len(found) > most,
    }
    if shown or ids_always:
        listing |= {"first_id": shown[0].id if shown else "", "last_id": shown[-1].id if shown else ""}
    return listing
