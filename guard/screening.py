"""Screening: layers look at a job's text and may block it; the first block decides the verdict.

Some rules are signals rather than verdicts (``Rule.signal``: an order to ignore instructions that
may be quoted, translated or discussed, a role-play set-up, repeated words, hidden HTML): a block
made of signals only is ``weighed``, and the learned layer decides it with its score
(``LearnedLayer.decide``); where the model cannot judge (too short a text, the layer off) it blocks.

The stateless layers (structure, patterns) look at this request alone and run first, cheapest
first; the behaviour layer, which reads and records the token's history, runs last, so that a
request already blocked costs no round trip to the history store.

Texts are screened whole up to ``SLICE`` characters. A longer one (a prompt may be megabytes) is
screened in slices of that size that overlap by ``OVERLAP`` characters, so that no match shorter
than the overlap is cut in two, and the event loop runs other jobs between slices: every byte is
screened, and a huge prompt costs its own time, not everyone's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from llmaas.wire import EmbedJob, GenerateJob, Job

if TYPE_CHECKING:
    from guard.layers.behaviour import BehaviourLayer


@dataclass(frozen=True, slots=True)
class Verdict:
    blocked: bool
    layer: str = ""
    rules: tuple[str, ...] = ()
    score: float | None = None
    """The learned layer's score, where it decided."""
    bar: float | None = None
    """The score it was held against, where it decided."""
    weighed: bool = False
    """Its rules are all signals: the learned layer weighs them where it can judge the job."""

    @property
    def reasons(self) -> tuple[str, ...]:
        """What decided, for the 400's message and the security event."""
        if self.weighed and self.score is not None and self.bar is not None:
            return (*self.rules, f"model score {self.score:.2f} ≥ {self.bar:.2f}")
        return self.rules


ALLOW = Verdict(blocked=False)

SIGNAL_BAR = 0.5
"""The learned layer's score at which signals block by default (LLMAAS_GUARD_SIGNAL_BAR): the model
finds an attack at least as likely as not."""

SLICE = 8192
OVERLAP = 512


def verdict_of(layer: str, texts: Sequence[str], find: Callable[[str], list[str]]) -> Verdict:
    """A layer's verdict from the rules ``find`` reports on each text (each rule named once)."""
    hits: list[str] = []
    for text in texts:
        hits.extend(h for h in find(text) if h not in hits)
    return Verdict(blocked=True, layer=layer, rules=tuple(hits)) if hits else ALLOW


class Layer(Protocol):
    name: str

    def check(self, texts: Sequence[str], job: Job) -> Verdict: ...


def user_texts(job: Job) -> list[str]:
    """Every piece of caller-supplied prose in a job: all messages, the prompt, the descriptions of
    the tools (the model reads them as instructions too), the inputs. JSON the caller sends as data
    (tool parameters, call arguments, schemas) is left out: its keys ("system", "role") would look
    like an injection to the structure layer."""
    if isinstance(job, EmbedJob):
        return list(job.inputs)
    assert isinstance(job, GenerateJob)
    texts = [m.content for m in job.messages]
    if job.prompt:
        texts.append(job.prompt)
    texts.extend(tool.description for tool in job.tools if tool.description)
    return texts


@dataclass(frozen=True)
class Screener:
    layers: tuple[Layer, ...] = ()
    behaviour: BehaviourLayer | None = None

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers] + ([self.behaviour.name] if self.behaviour else [])

    async def screen(self, job: Job) -> Verdict:
        """The first block of a rule that is not a signal; else that of the behaviour layer; else
        the first block made of signals (``weighed``), or ALLOW. Raises HistoryUnavailable when the
        behaviour layer cannot reach its history."""
        weighed: Verdict | None = None
        if self.layers:
            texts = user_texts(job)
            # Sliced lazily: a megabyte prompt is never copied whole, and a block ends the slicing.
            pieces = iter([texts]) if sum(map(len, texts)) <= SLICE else ([piece] for piece in _slices(texts))
            for index, piece in enumerate(pieces):
                if index:
                    await asyncio.sleep(0)  # the other jobs' turn between slices
                for verdict in self._verdicts(piece, job):
                    if verdict.blocked and not verdict.weighed:
                        return verdict
                    if verdict.blocked and weighed is None:
                        weighed = verdict
        if self.behaviour is not None:
            verdict = await self.behaviour.check(job)
            if verdict.blocked:
                return verdict
        return weighed or ALLOW

    def _verdicts(self, texts: Sequence[str], job: Job) -> Iterator[Verdict]:
        for layer in self.layers:
            yield layer.check(texts, job)


def _slices(texts: Sequence[str]) -> Iterator[str]:
    """The texts in pieces of at most ``SLICE`` characters, each overlapping the one before."""
    step = SLICE - OVERLAP
    for text in texts:
        if len(text) <= SLICE:
            yield text
            continue
        for start in range(0, len(text) - OVERLAP, step):
            yield text[start : start + SLICE]
