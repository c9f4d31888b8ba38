"""Layer ``patterns``: known attack phrasings in French, English, Chinese and Japanese (and German),
matched on the de-obfuscated text so that homoglyphs, fullwidth letters and zero-width characters
do not hide them."""

from __future__ import annotations

from collections.abc import Sequence

from guard import rules as rule_data
from guard.normalize import skeleton, translation
from guard.screening import Verdict, verdict_of
from llmaas.wire import Job


class PatternLayer:
    name = "patterns"

    def __init__(self, rules: Sequence[rule_data.Rule] | None = None) -> None:
        self.rules = tuple(rules) if rules is not None else rule_data.load()
        translation()  # built now, at start, not on the first prompt

    def matches(self, text: str) -> list[str]:
        seen = skeleton(text)
        return [rule.id for rule in self.rules if rule.regex.search(seen)]

    def check(self, texts: Sequence[str], job: Job) -> Verdict:
        return verdict_of(self.name, texts, self.matches)
