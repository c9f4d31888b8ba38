"""``llmaas guard eval FILE.jsonl``: the guard's screening, offline, one verdict per input line.

Input lines: ``{"id": ..., "text": ..., "key": ...}`` (``key``, optional, names the API token a
prompt came from; it is read for the behaviour layer, which is not part of this build yet).
Output lines: ``{"id", "blocked", "layer", "rules"}``. This is how the guard's quality is measured.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from guard.app import default_screener
from llmaas.wire import ChatMessage, GenerateJob


def verdicts(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    screener = default_screener()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text = item["text"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {number}: expected a JSON object with 'id' and 'text' ({exc})") from exc
        job = GenerateJob(
            request_id=str(item.get("id", number)),
            model="-",
            kind="chat",
            created=0,
            messages=[ChatMessage(role="user", content=str(text))],
        )
        verdict = screener.screen(job)
        yield {"id": item.get("id"), "blocked": verdict.blocked, "layer": verdict.layer or None,
               "rules": list(verdict.rules)}  # fmt: skip


def run(source: IO[str], out: IO[str] = sys.stdout) -> None:
    for result in verdicts(source):
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
