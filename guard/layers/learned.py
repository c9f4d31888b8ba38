"""Layer ``learned``: a multilingual classifier's probability that the prompt is an attack.

It catches what no pattern names: an order tucked after an ordinary question, a polite request for
the instructions, a role-play set-up, in any of the encoder's languages (``guard.model``). It
costs milliseconds of CPU, so the guard runs it after the rule layers passed a job, in a thread,
while the job is already on its way to the engine (``guard.service``).

A job's score is the highest of the scores of the texts it reads: the last message (where a chat's
new order is) and the longest other text (a document, a system prompt), at most ``TEXTS``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from guard.model import Model
from guard.screening import ALLOW, Verdict

TEXTS = 2


MIN_WEIGHT = 20
"""A text lighter than this (``weight``) is not scored: a few words ("question 0", "hello world")
carry too little for the encoder, whose scores on them are noise; the rules still screen them."""
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def weight(text: str) -> int:
    """Characters, a CJK one counting three (a sentence of 8 in Japanese says what 24 do in English)."""
    return len(text.strip()) + 2 * len(_CJK.findall(text))


def picked(texts: Sequence[str]) -> list[str]:
    """The texts a job is scored on: its last, and its longest other one, of those heavy enough."""
    texts = [t for t in texts if weight(t) >= MIN_WEIGHT]
    if len(texts) <= TEXTS:
        return texts
    *rest, last = texts
    return [last, max(rest, key=len)]


class LearnedLayer:
    name = "learned"

    def __init__(self, model: Model | None = None) -> None:
        self.model = model or Model()

    @property
    def threshold(self) -> float:
        """The deployment's default threshold (the head's own, chosen when it was trained)."""
        return self.model.head.threshold

    def score(self, texts: Sequence[str]) -> float:
        """Blocking: milliseconds of CPU. 0.0 for a job with no text."""
        return self.scores([texts])[0]

    def scores(self, jobs: Sequence[Sequence[str]]) -> list[float]:
        """Blocking: each job's score (the texts of one job each), in one encoder call: a batch of
        16 costs ~2.4 ms a text where one alone costs ~5 ms."""
        chosen = [picked(texts) for texts in jobs]
        flat = self.model.scores([text for texts in chosen for text in texts])
        out: list[float] = []
        start = 0
        for texts in chosen:
            out.append(max(flat[start : start + len(texts)], default=0.0))
            start += len(texts)
        return out

    def verdict(self, score: float, threshold: float | None = None) -> Verdict:
        bar = self.threshold if threshold is None else threshold
        if score < bar:
            return ALLOW
        rule = f"model score {score:.2f} ≥ {bar:.2f}"
        return Verdict(blocked=True, layer=self.name, rules=(rule,), score=score)
