r"""The guard's pattern rules, loaded from ``guard/rules/*.toml`` (data operators read and extend).

Loading validates every rule (known fields, a unique id, a pattern that compiles) and compiles
each pattern once; a mistake is an error that names the file and the rule.

A rule's pattern is searched only where it can match. Its ``needs`` words, found in one pass for
all rules (``Triggers``), say whether it can match at all; and a rule whose matches are at most
``width`` characters long (bounded repeats, and ``\s+`` one character since ``skeleton`` makes each
run of white space one) is searched only within ``width`` characters of each of those words: a
many-branched pattern costs ~0.2 µs per position searched, so 2 000 characters of prose full of
the rules' words cost milliseconds searched whole and tens of microseconds searched this way.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ahocorasick_rs import AhoCorasick

from guard.normalize import RULES_DIR

_FIELDS = {
    "id", "languages", "description", "pattern", "examples", "counter_examples", "across_prompts", "needs",
    "gate", "signal",
}  # fmt: skip


class RuleError(ValueError):
    pass


# The standard library's own regex parser: the one way to know how long a pattern's matches can be.
_PARSER: Any = importlib.import_module("re._parser")
_UNBOUNDED = 1 << 31
_WINDOWED = 1_000
"""Rules with longer matches than this are searched whole (each window would be most of a text)."""
_SLACK = 16
r"""Characters searched past a window's end, so that look-aheads and ``\b`` there see the text."""

Spans = Mapping[str, Sequence[tuple[int, int]]]
"""Where each ``needs`` word was found: (start, end) of each occurrence."""


def width(pattern: str) -> int | None:
    r"""The longest match of ``pattern`` on a skeleton (where ``\s+`` is one character), or None if
    it has no bound."""
    twin = pattern.replace(r"\s+", r"\s").replace(r"\s*", r"\s?")
    longest = int(_PARSER.parse(twin).getwidth()[1])
    return longest if longest < _UNBOUNDED else None


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    languages: tuple[str, ...]
    description: str
    regex: re.Pattern[str]
    examples: tuple[str, ...]
    counter_examples: tuple[str, ...]
    across_prompts: bool = True
    """Also matched on a token's recent prompts taken together (the behaviour layer)."""
    needs: tuple[str, ...] = ()
    """Words one of which every match holds: a text with none of them is not searched (a substring
    test costs microseconds where a many-branched pattern costs milliseconds on 8 000 characters)."""

    gate: re.Pattern[str] | None = None
    """A cheap pattern (a character class) every match holds, for rules no word can gate: a text
    without it is not searched (``[\u4e00-\u9fff]`` skips a CJK rule on Latin text)."""
    width: int | None = None
    """The longest match (``width()``); None: unbounded."""
    signal: bool = False
    """A match is a signal, not a verdict: honest prompts say it too (a quoted or translated order,
    a role-play, a discussion of attacks), so the learned layer weighs it (``guard.screening``)."""

    def search(self, seen: str, found: Spans | None = None) -> re.Match[str] | None:
        """A match in ``seen`` if there is one; ``found``: where the ``needs`` words are in
        ``seen``, when a ``Triggers`` pass found them already (else each word is looked for here,
        and ``seen`` searched whole)."""
        if self.needs:
            if found is None:
                if not any(word in seen for word in self.needs):
                    return None
            elif not any(word in found for word in self.needs):
                return None
        if self.gate is not None and self.gate.search(seen) is None:
            return None
        if found is None or not self.needs or self.width is None or self.width > _WINDOWED:
            return self.regex.search(seen)
        return self._around(seen, found, self.width)

    def _around(self, seen: str, found: Spans, width: int) -> re.Match[str] | None:
        """A match within ``width`` characters of a ``needs`` word: every match holds one of the
        words and is at most ``width`` long, so none lies elsewhere."""
        windows = sorted(
            (max(0, start - width), end + width + _SLACK)
            for word in self.needs
            for start, end in found.get(word, ())
        )
        low, high = windows[0]
        merged: list[tuple[int, int]] = []
        for start, end in windows[1:]:
            if start > high:
                merged.append((low, high))
                low = start
            high = max(high, end)
        merged.append((low, high))
        for low, high in merged:
            start = low
            while (match := self.regex.search(seen, start, high)) is not None:
                if high >= len(seen):
                    return match
                # The window's end can make a match that the whole text does not (a look-ahead
                # that sees nothing there): taken only if it holds with the whole text after it.
                if (whole := self.regex.match(seen, match.start())) is not None:
                    return whole
                start = match.start() + 1
        return None


class Triggers:
    """The ``needs`` words of a set of rules found in a text in one Aho-Corasick pass: one scan of
    ~10 µs for 2 000 characters where a substring test per word per rule cost ~0.5 ms."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._words = sorted({word for rule in rules for word in rule.needs})
        self._automaton = AhoCorasick(self._words) if self._words else None

    def find(self, seen: str) -> Spans:
        """Each word's occurrences in ``seen`` (words absent are not keys)."""
        spans: dict[str, list[tuple[int, int]]] = {}
        if self._automaton is not None:
            for index, start, end in self._automaton.find_matches_as_indexes(seen, overlapping=True):
                spans.setdefault(self._words[index], []).append((start, end))
        return spans


def load(path: Path = RULES_DIR / "patterns.toml") -> tuple[Rule, ...]:
    with path.open("rb") as fh:
        raw = tomllib.load(fh).get("rule", [])
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"{path.name}: rule {entry.get('id', f'#{index + 1}')}"
        unknown = set(entry) - _FIELDS
        if unknown:
            raise RuleError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        for name in ("id", "pattern", "description"):
            if not isinstance(entry.get(name), str) or not entry[name]:
                raise RuleError(f"{where}: '{name}' must be a non-empty string")
        needs = entry.get("needs", [])
        if not isinstance(needs, list) or not all(isinstance(w, str) and w == w.casefold() for w in needs):
            raise RuleError(f"{where}: 'needs' must be a list of lower-case strings")
        for flag in ("across_prompts", "signal"):
            if not isinstance(entry.get(flag, False), bool):
                raise RuleError(f"{where}: '{flag}' must be true or false")
        if entry["id"] in seen:
            raise RuleError(f"{where}: duplicate id")
        seen.add(entry["id"])
        try:
            regex = re.compile(entry["pattern"])
        except re.error as exc:
            raise RuleError(f"{where}: the pattern does not compile: {exc}") from exc
        try:
            gate = re.compile(entry["gate"]) if "gate" in entry else None
        except (re.error, TypeError) as exc:
            raise RuleError(f"{where}: the gate does not compile: {exc}") from exc
        rules.append(
            Rule(
                id=entry["id"],
                languages=tuple(entry.get("languages", ())),
                description=entry["description"],
                regex=regex,
                examples=tuple(entry.get("examples", ())),
                counter_examples=tuple(entry.get("counter_examples", ())),
                across_prompts=entry.get("across_prompts", True),
                needs=tuple(entry.get("needs", ())),
                gate=gate,
                width=width(entry["pattern"]),
                signal=entry.get("signal", False),
            )
        )
    return tuple(rules)
