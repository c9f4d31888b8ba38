r"""Text as the pattern rules see it: obfuscation undone, so that disguises do not defeat the rules.

``skeleton`` applies NFKC (fullwidth letters, ligatures and compatibility forms become plain ones),
drops invisible format characters (zero-width spaces and joiners, bidi controls, soft hyphens),
maps look-alike letters of other scripts to the Latin letters they imitate (the table is data, in
``rules/confusables.toml``), folds case, and makes each run of white space one space (one newline
if it holds a line break; white space at either end goes). CJK text is unchanged apart from NFKC.

The last step closes a gap and bounds the rules: "ignore  all\t\tprevious instructions" is seen
as the rules' words with single spaces, so a phrase a rule needs ("if you", "en cuenta") cannot be
hidden by padding, and a rule's ``\s+`` spans one character, which bounds how long its matches
can be (``guard.rules``: searched only around the words they need).

Each step is skipped on text it cannot change (ASCII text is not normalized or translated), which
is most of the cost: translating 2 000 non-ASCII characters through the table costs ~190 µs.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from functools import cache
from pathlib import Path

RULES_DIR = Path(__file__).parent / "rules"


@cache
def confusables() -> dict[int, str]:
    """Look-alike code points mapped to the ASCII letters they imitate (for ``str.translate``)."""
    with (RULES_DIR / "confusables.toml").open("rb") as fh:
        table: dict[str, str] = tomllib.load(fh)["latin"]
    mapping: dict[int, str] = {}
    for latin, lookalikes in table.items():
        for char in lookalikes:
            mapping[ord(char)] = latin
    return mapping


@cache
def translation() -> dict[int, str | None]:
    """One table for ``str.translate``: invisible characters dropped, look-alikes mapped to Latin.

    Built once (~0.2 s: every code point's category is read); the layers build it when they are
    created, so that the first screened prompt does not pay for it."""
    # Cf: format characters (U+200B..U+200F, U+2060, U+FEFF, bidi controls, soft hyphen...).
    invisible: dict[int, str | None] = {
        cp: None for cp in range(0x110000) if unicodedata.category(chr(cp)) == "Cf"
    }
    return {**invisible, **confusables()}


@cache
def _translated() -> re.Pattern[str]:
    """A character class of every code point ``translation`` changes: one scan finds those a text
    holds, and only they are looked up (``str.translate`` looks up every character in the dict)."""
    points = sorted(translation())
    ranges: list[str] = []
    start = end = points[0]
    for cp in [*points[1:], -1]:
        if cp == end + 1:
            end = cp
            continue
        ranges.append(re.escape(chr(start)) + ("" if end == start else "-" + re.escape(chr(end))))
        start = end = cp
    return re.compile("[" + "".join(ranges) + "]")


def _translate(char: re.Match[str]) -> str:
    return translation()[ord(char.group())] or ""


def skeleton(text: str) -> str:
    if not text.isascii():
        if not unicodedata.is_normalized("NFKC", text):
            text = unicodedata.normalize("NFKC", text)
        if not text.isascii():
            text = _translated().sub(_translate, text)
    # White space made single: str.split/splitlines in C, ~2x faster than a regex substitution.
    return "\n".join(filter(None, (" ".join(line.split()) for line in text.casefold().splitlines())))
