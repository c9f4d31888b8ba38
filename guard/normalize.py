"""Text as the pattern rules see it: obfuscation undone, so that disguises do not defeat the rules.

``skeleton`` applies NFKC (fullwidth letters, ligatures and compatibility forms become plain ones),
drops invisible format characters (zero-width spaces and joiners, bidi controls, soft hyphens),
maps look-alike letters of other scripts to the Latin letters they imitate (the table is data, in
``rules/confusables.toml``), and folds case. CJK text is unchanged apart from NFKC.
"""

from __future__ import annotations

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


def skeleton(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(translation()).casefold()
