"""Layer ``patterns``: known attack phrasings in French, English, Spanish, German, Chinese and
Japanese, matched on the de-obfuscated text so that homoglyphs, fullwidth letters and zero-width
characters do not hide them.

Two refinements make the rules precise without making them blind:

- **Mentioned, not meant.** An instruction to ignore earlier instructions that only appears inside
  a quotation ("translate: «ignore the previous invoice»", a moderator asking about users who type
  "ignore previous instructions") is a quotation, not an order — unless the quotation speaks to an
  AI (assistant, model, prompt, …): then it is an indirect injection, and counts.
- **Decoded payloads.** A prompt that hides its words in an encoding (base64, hex, URL escapes,
  HTML entities, binary, Morse, ROT13, leetspeak, letters spaced out, invisible characters:
  ``guard.encodings``) is screened again as decoded; a rule that matches there is reported as
  ``<rule>@<encoding>``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from guard import rules as rule_data
from guard.encodings import decoded
from guard.normalize import skeleton, translation
from guard.screening import Verdict, verdict_of
from llmaas.wire import Job

_MENTIONABLE = ("override.",)
"""Rules whose match inside a quotation is a mention (the others name what no quotation excuses)."""
_QUOTED = re.compile(
    r'"[^"\n]{1,2000}"|“[^”\n]{1,2000}”|„[^“”\n]{1,2000}[“”]|«[^»]{1,2000}»|「[^」]{1,2000}」|『[^』]{1,2000}』'
)
_SPEAKS_TO_AI = re.compile(
    r"\b(?:ai|a\.i\.|ia|ki|llm|gpt|chatgpt|chatbot|bot|assistant|assistante|assistent(?:in)?|asistente|"
    r"model|mod[eè]le|modell|modelo|language\s+model|prompts?|system|syst[eè]me|sistema)\b"
    r"|人工智能|助手|模型|系统|提示词|アシスタント|モデル|システム|プロンプト|ａｉ"
)


def _quotations(seen: str) -> list[tuple[int, int]]:
    """The spans of the quotations that do not speak to an AI (see the module's text)."""
    return [(m.start(), m.end()) for m in _QUOTED.finditer(seen) if not _SPEAKS_TO_AI.search(m.group())]


class PatternLayer:
    name = "patterns"

    def __init__(self, rules: Sequence[rule_data.Rule] | None = None) -> None:
        self.rules = tuple(rules) if rules is not None else rule_data.load()
        self.triggers = rule_data.Triggers(self.rules)
        self._signals = frozenset(rule.id for rule in self.rules if rule.signal)
        translation()  # built now, at start, not on the first prompt

    def matches(self, text: str) -> list[str]:
        seen = skeleton(text)
        hits = self._matching(seen)
        if hits:
            return hits
        for encoding, plain in decoded(text, seen):
            hits.extend(
                f"{rule}@{encoding}" for rule in self._matching(plain) if f"{rule}@{encoding}" not in hits
            )
        return hits

    def _matching(self, seen: str) -> list[str]:
        hits: list[str] = []
        quotations: list[tuple[int, int]] | None = None
        found = self.triggers.find(seen)
        for rule in self.rules:
            first = rule.search(seen, found)
            if first is None:
                continue
            if rule.id.startswith(_MENTIONABLE):
                if quotations is None:
                    quotations = _quotations(seen)
                if quotations and all(
                    any(a <= m.start() and m.end() <= b for a, b in quotations)
                    for m in rule.regex.finditer(seen)
                ):
                    continue  # only quoted, and not to an AI: a mention
            hits.append(rule.id)
        return hits

    def check(self, texts: Sequence[str], job: Job) -> Verdict:
        verdict = verdict_of(self.name, texts, self.matches)
        # Decoded payloads are never signals: nobody hides a quotation in base64.
        if verdict.blocked and all(rule in self._signals for rule in verdict.rules):
            return dataclasses.replace(verdict, weighed=True)
        return verdict
