"""Layer ``structure``: the shape of the prompt rather than its words.

- JSON: a prompt that starts with ``{`` is parsed; keys or values that try to set roles or switch
  safety off (``system``, ``bypass``…) count against it, and so does an object that almost parses
  (a role override broken on purpose to slip past a parser).
- Hidden text: words written in invisible characters that an engine still reads (Unicode tag
  characters, variation selectors carrying bytes, long runs of zero-width characters;
  ``normalize.hidden``). No honest prompt holds them; the pattern layer screens what they say.
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

from guard.normalize import confusables, hidden
from guard.screening import Verdict, verdict_of
from llmaas.wire import Job

OVERRIDE_KEYS = re.compile(
    r"^(?:jailbreak|jailbroken|jailbreak_mode|developer_mode|dev_mode|god_mode|unrestricted|uncensored|"
    r"no_filters?|no_restrictions|ignore_(?:previous_)?instructions|disable_safety|safety_off)$"
)
"""Keys that exist only to switch a model's rules off: one set to a true value is an attack."""
OVERRIDE_VALUES = re.compile(
    r"\b(?:jailbreak|jailbroken|developer\s+mode|god\s+mode|unrestricted|uncensored|"
    r"no\s+(?:rules|limits|restrictions|filters)|"
    r"bypass\s+(?:the\s+|your\s+|all\s+)?(?:filters?|safety|rules|restrictions|guardrails|moderation)|"
    r"ignore\s+(?:all\s+|the\s+|your\s+)?(?:previous|prior|above)\s+(?:instructions|rules)|"
    r"without\s+(?:any\s+)?(?:restrictions|filters|rules|limits))\b"
)
SAFETY_KEYS = re.compile(
    r"^(?:safety|safe_mode|safety_filter|filter|filters|content_filter|moderation|guardrails?|"
    r"restrictions?|censorship|ethics)$"
)
SWITCH_KEYS = re.compile(r"^(?:bypass|override|sudo|admin_mode|root|elevated|privileged)$")
_OFF = re.compile(r"^(?:off|false|no|none|disabled?|0|null|)$")
_ON = re.compile(r"^(?:on|true|yes|enabled?|1)$")
_ROLE_SET = re.compile(r"^(?:system|developer)$")
_BROKEN_OVERRIDE = re.compile(
    r'"\s*(?:role|system|instructions?)\s*"\s*:[^\n]{0,400}?\b(?:ignore|bypass|jailbreak|unrestricted|'
    r"no\s+restrictions|developer\s+mode|override)\b"
)
_FULLWIDTH_LATIN = re.compile(r"[\uff21-\uff3a\uff41-\uff5a]")
_FULLWIDTH_BESIDE_ASCII = re.compile(
    r"[a-zA-Z][\uff21-\uff3a\uff41-\uff5a]|[\uff21-\uff3a\uff41-\uff5a][a-zA-Z]"
)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_INVISIBLE_CHARS = r"[\u200b-\u200f\u2060\ufeff\u00ad\u034f]"
_INVISIBLE = re.compile(_INVISIBLE_CHARS)
_INVISIBLE_IN_WORD = re.compile(rf"[^\W\d_]{_INVISIBLE_CHARS}+[^\W\d_]")


def _disguised(word: str, lookalikes: dict[int, str]) -> bool:
    """Plain Latin letters beside a look-alike from another script (Cyrillic а, Latin alpha ɑ, Greek
    ο…) in one word: "аdmin", "bypɑss". A Russian or Greek word alone has no ASCII letters."""
    has_ascii = any("a" <= c <= "z" or "A" <= c <= "Z" for c in word)
    return has_ascii and any(ord(c) in lookalikes for c in word)


def _walk(value: Any, depth: int = 0) -> list[tuple[str | None, str | None]]:
    """(key, its scalar value as text) for each key of a JSON document, and (None, text) for each
    string value, at most 4 levels deep; a key holding an object or a list has value None."""
    if depth > 4:
        return []
    found: list[tuple[str | None, str | None]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            scalar = None if isinstance(item, dict | list) else json.dumps(item).strip('"')
            found.append((str(key), scalar))
            found.extend(_walk(item, depth + 1))
    elif isinstance(value, list):
        for item in value[:64]:
            found.extend(_walk(item, depth + 1))
    elif isinstance(value, str):
        found.append((None, value))
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
        if hidden(text):
            found.append("unicode.hidden-text")
        if _INVISIBLE.search(text) and _INVISIBLE_IN_WORD.search(text):  # a scan for the characters first
            found.append("unicode.invisible-in-word")
        # Fullwidth letters are ordinary in Chinese and Japanese writing (ＰＣ, ＵＳＢ); in Latin text,
        # or beside ASCII letters in one word, they are a disguise.
        if _FULLWIDTH_LATIN.search(text) and (not _CJK.search(text) or _FULLWIDTH_BESIDE_ASCII.search(text)):
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
        """A JSON document (or the object a prompt starts with, a question after it) that tries to
        switch a model's rules off. Chat messages with ``"role": "system"`` are what every API
        payload holds, and ``"safety": "off"`` what a settings form sends: each alone is a weak
        signal; an override key or value, or two weak signals together, count."""
        try:
            document, _ = json.JSONDecoder().raw_decode(text)
        except ValueError:
            # Broken JSON is common in honest prompts ("{name} is ..."): only a broken object that
            # still tries to set a role to override something counts.
            return ["json.broken-role-object"] if _BROKEN_OVERRIDE.search(text[:2000].casefold()) else []
        weak: set[str] = set()
        strong: list[str] = []
        for key, text_value in _walk(document):
            value = (text_value or "").casefold().strip()
            if key is None:
                if OVERRIDE_VALUES.search(value):
                    strong.append("json.override-value")
                continue
            folded = key.casefold().strip()
            if OVERRIDE_KEYS.match(folded) and text_value is not None and not _OFF.match(value):
                strong.append("json.override-key")
            elif SAFETY_KEYS.match(folded) and text_value is not None and _OFF.match(value):
                weak.add("json.safety-off")
            elif SWITCH_KEYS.match(folded) and _ON.match(value):
                weak.add("json.privileged-switch")
            elif folded == "role" and _ROLE_SET.match(value):
                weak.add("json.sets-system-role")
        if strong:
            return strong[:1]
        return sorted(weak) if len(weak) >= 2 else []

    def check(self, texts: Sequence[str], job: Job) -> Verdict:
        return verdict_of(self.name, texts, self.signals)
