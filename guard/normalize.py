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

Text written in invisible characters is not in the skeleton at all (they are format characters):
``hidden`` reads it back, so that the layers can screen it (see there).

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


_TAG_RUN = re.compile(r"[\U000e0000-\U000e007f]+")
_FLAG = re.compile(r"\U0001f3f4[\U000e0030-\U000e0039\U000e0061-\U000e007a]{1,8}\U000e007f")
"""An emoji flag of a region (🏴 + its code in tag letters + the cancel tag: England, Scotland,
Wales): the one honest use of tag characters."""
_SELECTOR_RUN = re.compile(r"[\ufe00-\ufe0f\U000e0100-\U000e01ef]{4,}")
"""Variation selectors in a row: an emoji or an ideograph takes one; a run carries bytes."""
_ZERO_WIDTH_RUN = re.compile(r"[\u200b-\u200d\u2060-\u2064\ufeff]{16,}")
_HIDDEN_MIN = 4
_INVISIBLE = re.compile(r"[\u200b-\u200d\u2060-\u2064\ufe00-\ufe0f\ufeff\U000e0000-\U000e01ef]")
"""Any character of the three kinds above: one scan of a prompt, instead of three, finds that it
has none (a third of the time on 8 000 characters of ordinary text)."""


def hidden(text: str) -> list[tuple[str, str]]:
    """(how, text) for each text ``text`` hides in invisible characters an engine still reads:
    ``tags``, ASCII written in Unicode tag characters (U+E0020..E007E, "ASCII smuggling"), outside
    emoji flags; ``selectors``, bytes written in variation selectors (VS1-16 for 0-15, VS17-256
    for 16-255) after a character, read as UTF-8; ``zero-width``, a long run of zero-width
    characters (bits in ZWSP/ZWNJ/ZWJ; no honest text holds sixteen in a row), returned as is."""
    if text.isascii() or _INVISIBLE.search(text) is None:
        return []
    found: list[tuple[str, str]] = []
    if _TAG_RUN.search(text) is not None:
        runs = _TAG_RUN.findall(_FLAG.sub("", text))
        tagged = " ".join(
            "".join(chr(ord(ch) - 0xE0000) for ch in run if 0xE0020 <= ord(ch) <= 0xE007E) for run in runs
        ).strip()
        if len(tagged) >= _HIDDEN_MIN:
            found.append(("tags", tagged))
    for selected in _SELECTOR_RUN.findall(text):
        data = bytes(ord(ch) - 0xFE00 if ord(ch) < 0xFE10 else ord(ch) - 0xE0100 + 16 for ch in selected)
        plain = data.decode("utf-8", errors="replace")
        if sum(ch.isprintable() and ch != "\ufffd" for ch in plain) >= _HIDDEN_MIN:
            found.append(("selectors", plain))
    if (zero_width := _ZERO_WIDTH_RUN.search(text)) is not None:
        found.append(("zero-width", zero_width.group()))
    return found
