"""Layer ``patterns``: known attack phrasings in French, English, Spanish, German, Chinese and
Japanese, matched on the de-obfuscated text so that homoglyphs, fullwidth letters and zero-width
characters do not hide them.

Two refinements make the rules precise without making them blind:

- **Mentioned, not meant.** An instruction to ignore earlier instructions that only appears inside
  a quotation ("translate: «ignore the previous invoice»", a moderator asking about users who type
  "ignore previous instructions") is a quotation, not an order — unless the quotation speaks to an
  AI (assistant, model, prompt, …): then it is an indirect injection, and counts.
- **Decoded payloads.** A prompt that hides its words in base64, hex, ROT13, leetspeak, letters
  spaced out (``i g n o r e``) or invisible characters (``normalize.hidden``) is screened
  again as decoded; a rule that matches there is reported as ``<rule>@<encoding>``.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import dataclasses
import re
from collections.abc import Iterator, Sequence

from guard import rules as rule_data
from guard.normalize import hidden, skeleton, translation
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
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{20,}={0,2}")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}){12,}\b")
_ROT13_CUE = re.compile(r"\brot\s*-?\s*13\b|\bcaesar\b|\bc[eé]sar\b")
_LEET_JOIN = re.compile(r"[0-9@$](?:(?<=[a-z][0-9@$])|(?=[a-z]))")
"""A digit beside a letter (the pattern starts with the digit: the search skips to digits in one
scan). Six of them within ``_LEET_SPAN`` characters (1gn0r3 5y5t3m) are read as leetspeak, and the
text around them is screened again with the digits read as letters; ordinary text's scattered
digits (dates, versions, mp3) do not make a whole long prompt screened twice."""
_LEET_SPAN = 120
_LEET_CONTEXT = 200
"""Characters taken on either side of a leetspeak passage: the rules' phrases around it."""
_DIGITISH = re.compile(r"[0-9@$]")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_SPACED = re.compile(r"(?<!\S)(?:\w {1,3}){7,}\w(?!\S)")
"""Words written a letter at a time (``i g n o r e   a l l``): eight or more single characters in a
row, each followed by up to three spaces. Read back by joining the letters; a wider gap is a space."""
_LETTER_GAP = re.compile(r"(?<=\w) (?=\w)")
_WORD_GAP = re.compile(r" {2,}")
_MOST_DECODED = 8
"""Encoded runs screened per text: enough for any honest attack, bounded for a flood of them."""


def _printable(data: bytes) -> str | None:
    """The decoded bytes as text, if they are text (UTF-8, mostly letters and spaces)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 8:
        return None
    plain = sum(ch.isalpha() or ch.isspace() for ch in text)
    # Words are spaced in Latin scripts; Chinese and Japanese are written without spaces.
    return text if plain >= 0.8 * len(text) and (" " in text or not text.isascii()) else None


def decoded(text: str, seen: str) -> Iterator[tuple[str, str]]:
    """(encoding, skeleton of the decoded text) for each payload ``text`` hides; ``seen`` is the
    skeleton of ``text`` itself."""
    # Base64 and hex runs hold no white space: only the long words of the text can be one.
    long_words = [word for word in text.split() if len(word) >= 20]
    has_digits = _DIGITISH.search(seen) is not None  # hex of text always has digits; leetspeak too
    found = 0
    for run in (run for word in long_words for run in _BASE64.finditer(word)):
        blob = run.group()
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=False)
        except (binascii.Error, ValueError):
            continue
        if (plain := _printable(raw)) is not None:
            found += 1
            yield "base64", skeleton(plain)
        if found >= _MOST_DECODED:
            return
    for run in (run for word in long_words if has_digits for run in _HEX.finditer(word)):
        if (plain := _printable(bytes.fromhex(run.group()))) is not None:
            found += 1
            yield "hex", skeleton(plain)
        if found >= _MOST_DECODED:
            return
    if ("rot" in seen or "sar" in seen) and _ROT13_CUE.search(seen):
        yield "rot13", codecs.encode(seen, "rot13")
    if "  " in text and (runs := [m.group() for m in _SPACED.finditer(text)]):
        yield "spaced", skeleton("\n".join(_unspaced(run) for run in runs))
    for encoding, plain in hidden(text):  # the skeleton dropped them: invisible, yet read by engines
        if encoding != "zero-width":
            yield encoding, skeleton(plain)
    if has_digits and (passages := _leet_passages(seen)):  # digits for letters: 1gn0r3, 5y5t3m
        yield "leet", "\n".join(seen[low:high].translate(_LEET) for low, high in passages)


def _unspaced(run: str) -> str:
    """``i g n o r e   a l l`` -> ``ignore all``: a single space joins letters, a wider one is a space."""
    return " ".join(_LETTER_GAP.sub("", word) for word in _WORD_GAP.split(run))


def _leet_passages(seen: str) -> list[tuple[int, int]]:
    """The spans of ``seen`` around each run of six letter-digit joins within ``_LEET_SPAN``."""
    joins = [m.start() for m in _LEET_JOIN.finditer(seen)]
    passages: list[tuple[int, int]] = []
    for first, sixth in zip(joins, joins[5:], strict=False):
        if sixth - first > _LEET_SPAN:
            continue
        low, high = max(0, first - _LEET_CONTEXT), sixth + _LEET_CONTEXT
        if passages and low <= passages[-1][1]:
            passages[-1] = (passages[-1][0], high)
        else:
            passages.append((low, high))
    return passages


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
