"""``llmaas guard eval FILE.jsonl``: the guard's screening, offline, one verdict per input line.

Input lines: ``{"id": ..., "text": ..., "key": ...}``. ``key``, optional, names the API token a
prompt came from: lines with the same key form one token's history, in file order, for the
behaviour layer (a line without a key has no history). Output lines:
``{"id", "blocked", "layer", "rules", "signals", "score"}``: ``signals`` says a block is made of
rules that are signals only (weighed by the model where it judges); ``score`` is the learned
layer's (every line gets one; it blocks at ``threshold``, the trained head's unless given, and it
weighs the rules that are signals at ``signal_bar``), and the layer that decided is the first that
blocked, rules before the model, as in the service. The layers and rules are the
guard service's own; only the history lives in this process instead of NATS. This is how the
guard's quality is measured.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from guard.app import default_screener
from guard.history import MemoryHistory
from guard.layers.learned import LearnedLayer
from guard.screening import SIGNAL_BAR, user_texts
from llmaas.wire import Caller, ChatMessage, GenerateJob


def verdicts(
    lines: Iterable[str],
    *,
    learned: bool = True,
    threshold: float | None = None,
    signal_bar: float = SIGNAL_BAR,
) -> Iterator[dict[str, Any]]:
    screener = default_screener(MemoryHistory())
    model = LearnedLayer() if learned else None
    loop = asyncio.new_event_loop()
    try:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                text = item["text"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"line {number}: expected a JSON object with 'id' and 'text' ({exc})"
                ) from exc
            key = item.get("key")
            job = GenerateJob(
                request_id=str(item.get("id", number)),
                model="-",
                kind="chat",
                created=0,
                messages=[ChatMessage(role="user", content=str(text))],
                caller=Caller(token_id=str(key) if key is not None else ""),
            )
            verdict = loop.run_until_complete(screener.screen(job))
            score = None
            if model is not None:
                texts = user_texts(job)
                score = model.score(texts)
                if model.weighs(verdict, texts):
                    verdict = model.decide(verdict, score, threshold, signal_bar)
            yield {"id": item.get("id"), "blocked": verdict.blocked, "layer": verdict.layer or None,
                   "rules": list(verdict.reasons), "signals": verdict.blocked and verdict.weighed,
                   "score": None if score is None else round(score, 4)}  # fmt: skip
    finally:
        loop.close()


def run(
    source: IO[str],
    out: IO[str] = sys.stdout,
    *,
    learned: bool = True,
    threshold: float | None = None,
    signal_bar: float = SIGNAL_BAR,
) -> None:
    for result in verdicts(source, learned=learned, threshold=threshold, signal_bar=signal_bar):
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
