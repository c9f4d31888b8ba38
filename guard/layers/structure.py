"""Layer ``structure``: the shape of the prompt rather than its words.

- JSON: a prompt that starts with ``{`` is parsed; keys or values that try to set roles or switch
  safety off (``system``, ``bypass``…) count against it, and so does an object that almost parses
  (a role override broken on purpose to slip past a parser).
- Unicode disguise: invisible format characters inside words, letters of two scripts inside one
  word ("s\u0443stème"), and fullwidth Latin letters. These are what NFKC changes *in words*;
  the fullwidth punctuation of ordinary Chinese and Japanese, and French accents written as
  combining marks, are changed by NFKC too but are no disguise, so they are not signals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from guard.normalize import confusables
from guard.screening import Verdict, verdict_of
from llmaas.wire import Job

SUSPICIOUS_KEYS = re.compile(
    r"^(?:system|system_prompt|role|roles|instructions?|bypass|override|jailbreak|admin|sudo|developer|"
    r"ignore|safety|filter|filters|restrictions?|mode|prompt)$"
)
SUSPICIOUS_VALUES = re.compile(
    r"\b(?:system|bypass|override|jailbreak|ignore\s+(?:previous|all|the)|disable|unrestricted|"
    r"developer\s+mode|admin|sudo|no\s+restrictions|off|false)\b"
)
_FULLWIDTH_LATIN = re.compile(r"[\uff21-\uff3a\uff41-\uff5a]")
_INVISIBLE_IN_WORD = re.compile(r"[^\W\d_][\u200b-\u200f\u2060\ufeff\u00ad\u034f]+[^\W\d_]")


def _disguised(word: str, lookalikes: dict[int, str]) -> bool:
    """Plain Latin letters beside a look-alike from another script (Cyrillic а, Latin alpha ɑ, Greek
    ο…) in one word: "аdmin", "bypɑss". A Russian or Greek word alone has no ASCII letters."""
    has_ascii = any("a" <= c <= "z" or "A" <= c <= "Z" for c in word)
    return has_ascii and any(ord(c) in lookalikes for c in word)


def _walk(value: Any, depth: int = 0) -> list[str]:
    """Keys and string values of a JSON document, at most 4 levels deep."""
    if depth > 4:
        return []
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append(f"key:{key}")
            found.extend(_walk(item, depth + 1))
    elif isinstance(value, list):
        for item in value[:64]:
            found.extend(_walk(item, depth + 1))
    elif isinstance(value, str):
        found.append(f"value:{value}")
    return found


class StructureLayer:
    name = "structure"

    def __init__(self) -> None:
        # Fullwidth letters are their own signal (NFKC maps them); the rest are other scripts' letters.
        self.lookalikes = {cp: latin for cp, latin in confusables().items() if not 0xFF00 <= cp <= 0xFFEF}
        # Only words holding a look-alike are examined: one scan for the characters, not a loop over words.
        self._lookalike = re.compile("[" + re.escape("".join(chr(cp) for cp in self.lookalikes)) + "]")

    def signals(self, text: str) -> list[str]:
        found: list[str] = []
        stripped = text.lstrip()
        if stripped.startswith("{"):
            found.extend(self._json(stripped))
        if _INVISIBLE_IN_WORD.search(text):
            found.append("unicode.invisible-in-word")
        if _FULLWIDTH_LATIN.search(text):
            found.append("unicode.fullwidth-latin")
        if self._mixed_script(text):
            found.append("unicode.mixed-script-word")
        return found

    def _mixed_script(self, text: str) -> bool:
        for hit in self._lookalike.finditer(text):
            # The word around the look-alike, at most 40 letters each way (bounded on any input).
            start, end = hit.start(), hit.end()
            low, high = max(0, start - 40), min(len(text), end + 40)
            while start > low and text[start - 1].isalpha():
                start -= 1
            while end < high and text[end].isalpha():
                end += 1
            if _disguised(text[start:end], self.lookalikes):
                return True
        return False

    def _json(self, text: str) -> list[str]:
        try:
            document = json.loads(text)
        except ValueError:
            # Broken JSON is common in honest prompts ("{name} is ..."): only a broken object that
            # still tries to set a role or switch something off counts.
            head = text[:2000].casefold()
            if re.search(r'"\s*(?:system|role|bypass|override|instructions?|jailbreak)\s*"\s*:', head):
                return ["json.broken-role-object"]
            return []
        for item in _walk(document):
            kind, _, content = item.partition(":")
            folded = content.casefold().strip()
            if kind == "key" and SUSPICIOUS_KEYS.match(folded):
                return ["json.suspicious-key"]
            if kind == "value" and SUSPICIOUS_VALUES.search(folded):
                return ["json.suspicious-value"]
        return []

    def check(self, texts: Sequence[str], job: Job) -> Verdict:
        return verdict_of(self.name, texts, self.signals)
