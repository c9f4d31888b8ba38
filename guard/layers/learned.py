"""Layer ``learned``: a multilingual classifier's probability that the prompt is an attack.

It catches what no pattern names: an order tucked after an ordinary question, a polite request for
the instructions, a role-play set-up, in any of the encoder's languages (``guard.model``). It
costs milliseconds of CPU, so the guard runs it after the rule layers passed a job, in a thread,
while the job is already on its way to the engine (``guard.service``).

A job's score is the highest of the scores of the texts it reads: the last message (where a chat's
new order is) and the longest other text (a document, a system prompt), at most ``TEXTS``. A
tenant's texts scored lately are remembered by digest (``REMEMBERED``): a chat resends its system
prompt with every message, and it is encoded once, not once a request. Per tenant, so that how
fast a verdict comes says nothing about what another tenant sent.

It also weighs the rules that are signals (``guard.screening``): a job whose rules found only
signals is blocked if its score reaches ``SIGNAL_BAR`` (a lower bar than the threshold: the rules
and the model agree), and passes otherwise ("translate: «ignore the previous oven instructions»").
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import OrderedDict
from collections.abc import Sequence

from guard.model import Model
from guard.screening import ALLOW, SIGNAL_BAR, Verdict

TEXTS = 2


MIN_WEIGHT = 20
"""A text lighter than this (``weight``) is not scored: a few words ("question 0", "hello world")
carry too little for the encoder, whose scores on them are noise; the rules still screen them."""
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def weight(text: str) -> int:
    """Characters, a CJK one counting three (a sentence of 8 in Japanese says what 24 do in English)."""
    return len(text.strip()) + 2 * len(_CJK.findall(text))


def _digest(owner: str, text: str) -> bytes:
    # Tenant names are [a-z0-9_-] (llmaas.tenants): the separator cannot occur in one.
    return hashlib.blake2b(f"{owner}\x1f{text}".encode(), digest_size=16).digest()


def picked(texts: Sequence[str]) -> list[str]:
    """The texts a job is scored on: its last, and its longest other one, of those heavy enough."""
    texts = [t for t in texts if weight(t) >= MIN_WEIGHT]
    if len(texts) <= TEXTS:
        return texts
    *rest, last = texts
    return [last, max(rest, key=len)]


REMEMBERED = 8192
"""Scores kept (16-byte digests and a float each: ~1 MB)."""


class LearnedLayer:
    name = "learned"

    def __init__(self, model: Model | None = None) -> None:
        self.model = model or Model()
        self._remembered: OrderedDict[bytes, float] = OrderedDict()

    @property
    def threshold(self) -> float:
        """The deployment's default threshold (the head's own, chosen when it was trained)."""
        return self.model.head.threshold

    @staticmethod
    def judges(texts: Sequence[str]) -> bool:
        """Whether the model scores a job of these texts (one at least heavy enough)."""
        return any(weight(text) >= MIN_WEIGHT for text in texts)

    def weighs(self, ruled: Verdict, texts: Sequence[str]) -> bool:
        """Whether the model has a say on a job whose rule layers said ``ruled``: they passed it,
        or found only signals in texts it can judge (``decide`` then gives the verdict)."""
        return not ruled.blocked or (ruled.weighed and self.judges(texts))

    def score(self, texts: Sequence[str]) -> float:
        """Blocking: milliseconds of CPU. 0.0 for a job with no text."""
        return self.scores([texts])[0]

    def scores(self, jobs: Sequence[Sequence[str]], owners: Sequence[str] | None = None) -> list[float]:
        """Blocking: each job's score (the texts of one job each; ``owners``: each job's tenant), in
        one encoder call for the texts not remembered: a batch of 16 costs ~2.4 ms a text where one
        alone costs ~5 ms. One thread at a time (the guard's scoring thread)."""
        chosen = [picked(texts) for texts in jobs]
        tenants = owners if owners is not None else [""] * len(jobs)
        keys = [
            [_digest(owner, text) for text in texts] for owner, texts in zip(tenants, chosen, strict=True)
        ]
        new: dict[bytes, str] = {}
        for job_keys, texts in zip(keys, chosen, strict=True):
            for key, text in zip(job_keys, texts, strict=True):
                if key not in self._remembered:
                    new.setdefault(key, text)
        for key, score in zip(new, self.model.scores(list(new.values())), strict=True):
            self._remembered[key] = score
        out = [max((self._remembered[key] for key in job_keys), default=0.0) for job_keys in keys]
        for job_keys in keys:
            for key in job_keys:
                self._remembered.move_to_end(key)
        while len(self._remembered) > REMEMBERED:
            self._remembered.popitem(last=False)
        return out

    def verdict(self, score: float, threshold: float | None = None) -> Verdict:
        bar = self.threshold if threshold is None else threshold
        if score < bar:
            return ALLOW
        rule = f"model score {score:.2f} ≥ {bar:.2f}"
        return Verdict(blocked=True, layer=self.name, rules=(rule,), score=score, bar=bar)

    def decide(
        self, ruled: Verdict, score: float, threshold: float | None = None, signal_bar: float = SIGNAL_BAR
    ) -> Verdict:
        """The verdict on a job the model has a say on (``weighs``) with ``score``, whose rule layers
        said ``ruled``: a rule's block stands, signals are weighed, else the model decides alone."""
        if ruled.blocked and not ruled.weighed:
            return ruled
        if not ruled.blocked:
            return self.verdict(score, threshold)
        bar = min(signal_bar, self.threshold if threshold is None else threshold)
        if score < bar:
            return ALLOW
        return dataclasses.replace(ruled, score=score, bar=bar)
