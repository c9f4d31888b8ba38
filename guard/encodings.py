"""Payloads read back: words a prompt writes in an encoding, decoded, so that the guard judges what
they say rather than how they look.

Two readers use this:

- the pattern layer screens each decoded payload again (``decoded``); a rule that matches there
  is reported as ``<rule>@<encoding>`` (``override.en@base64``);
- the learned layer's encoder reads the prompt with each payload written out in place
  (``readable``): "URL-decode this: %48%65%6c%6c%6f" is read as a request about "Hello", not as
  noise, which a sentence encoder takes for an attack. Developers ask for decodings every day.

Encodings read from the text as written, each a run of at least a few units: base64, hex (one run
or bytes apart), URL percent-escapes, HTML numeric entities, ``\\u``/``\\x`` escapes, binary
octets, Morse code, and text hidden in invisible characters (``normalize.hidden``). Read from the
skeleton: ROT13 (only where the prompt names it), letters spaced out (``i g n o r e``) and
leetspeak (digits for letters, ``1gn0r3``). A decoding counts only if it is text (UTF-8, mostly
letters and spaces), and at most ``_MOST_DECODED`` payloads are read per text.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
import urllib.parse
from collections.abc import Callable, Iterator
from itertools import islice

from guard.normalize import hidden, skeleton

_BASE64 = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{20,}={0,2}")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}){12,}\b")
_HEX_BYTES = re.compile(r"[0-9](?<![0-9A-Za-z][0-9])[0-9a-fA-F](?:[ :,-][0-9a-fA-F]{2}){7,}(?![0-9A-Za-z])")
"""Eight or more hex bytes apart (``49 67 6e``), found from a byte whose first digit is a digit
(every byte of ASCII text): each pattern here starts with what it must see first, so that the
search skips to it in one scan rather than trying the whole pattern at every character of a
prompt. Bytes before it (``e5 bf bd`` of UTF-8) are taken back by ``_bytes_before``."""
_HEX_BYTE_BEFORE = re.compile(r"[0-9a-fA-F]{2}[ :,-]")
_PERCENT = re.compile(r"%[0-9a-fA-F]{2}(?:[^\s%]*%[0-9a-fA-F]{2}){2,}[^\s%]*")
"""Three or more percent-escapes in a word; the word's letters before the first one
(``Ignore%20all``) are taken back by ``_word_before``."""
_WORD_BEFORE = re.compile(r"[^\s%]{0,64}\Z")
_ENTITIES = re.compile(r"(?:&#(?:[0-9]{1,7}|[xX][0-9a-fA-F]{1,6});\s?){3,}")
_ESCAPE_UNIT = r"\\(?:u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|U[0-9a-fA-F]{8})"
_ESCAPES = re.compile(rf"{_ESCAPE_UNIT}(?:[^\\\n]{{0,3}}{_ESCAPE_UNIT}){{2,}}")
"""Escapes in a row, with the spaces and punctuation that JSON and source code leave as they are
between them (``\\u0069\\u0067\\u006e\\u006f\\u0072\\u0065 \\u0061\\u006c\\u006c``)."""
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2})|U([0-9a-fA-F]{8}))")
_BINARY = re.compile(r"[01](?<![01][01])[01]{7}(?:[ ,]?[01]{8}){3,}(?![01])")
_MORSE = re.compile(r"[.-](?<![\w.-][.-])[.-]{0,6}(?:(?: | ?/ ?)[.-]{1,7}){4,}(?![\w.-])")
_MORSE_CODE = dict(
    zip(
        ".- -... -.-. -.. . ..-. --. .... .. .--- -.- .-.. -- -. --- .--. --.- .-. ... - ..- ...- .-- "
        "-..- -.-- --.. ----- .---- ..--- ...-- ....- ..... -.... --... ---.. ----.".split(),
        "abcdefghijklmnopqrstuvwxyz0123456789",
        strict=True,
    )
)
_ROT13_CUE = re.compile(r"\brot\s*-?\s*13\b|\bcaesar\b|\bc[eé]sar\b")
_ROT13_PAYLOAD = re.compile(
    r"(?:\brot\s*-?\s*13\b|\bcaesar\b|\bc[eé]sar\b)[^:\n]{0,60}[:\n]\s*(.+)", re.I | re.S
)
"""What follows the colon or line break after a prompt names ROT13: its payload, for the encoder."""
_COMMON_WORDS = frozenset(
    "the and to of a is you your all in it for this that de la le et les des un une der die das und "
    "ist du el los que en y tu".split()
)
"""Words of every text in these languages, none of them in ROT13: which way a payload reads."""
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
_SPACED_HINT = re.compile(r" \w {1,3}\w {1,3}\w {1,3}\w ")
"""Four spaced letters, which every spaced run holds: found in one scan for a space (the run's
pattern, which starts with a look-behind, would be tried at every character)."""
_LETTER_GAP = re.compile(r"(?<=\w) (?=\w)")
_WORD_GAP = re.compile(r" {2,}")
_MOST_DECODED = 8
"""Payloads read per text: enough for any honest attack, bounded for a flood of them."""


def _printable(data: bytes) -> str | None:
    """The decoded bytes as text, if they are text (UTF-8, mostly letters and spaces)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return _text(text)


def _text(text: str) -> str | None:
    """``text`` if it is text: printable, most of it letters and spaces (a request line, a path
    and a date are text; random bytes almost never decode to printable UTF-8)."""
    if len(text) < 8 or not all(ch.isprintable() or ch.isspace() for ch in text):
        return None
    plain = sum(ch.isalpha() or ch.isspace() for ch in text)
    # Words are spaced in Latin scripts; Chinese and Japanese are written without spaces.
    return text if plain >= 0.6 * len(text) and (" " in text or not text.isascii()) else None


def _base64(blob: str) -> str | None:
    try:
        return _printable(base64.b64decode(blob + "=" * (-len(blob) % 4), validate=False))
    except (binascii.Error, ValueError):
        return None


def _escaped(run: str) -> str | None:
    def char(m: re.Match[str]) -> str:
        return chr(int(next(group for group in m.groups() if group is not None), 16) % 0x110000)

    # \ud83d\ude00 pairs are one character: surrogates are joined through UTF-16.
    text = _ESCAPE.sub(char, run).encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return _text(text)


def _morse(run: str) -> str | None:
    words = [word.split() for word in re.split(r" ?/ ?", run)]
    letters = [[_MORSE_CODE.get(code) for code in word] for word in words]
    if any(letter is None for word in letters for letter in word):
        return None
    plain = " ".join("".join(str(letter) for letter in word) for word in letters)
    # Dots and dashes in a row are also ellipses and rules ("... ... ...", "- - - -"): words, not one letter.
    return plain if len(set(plain) - {" "}) >= 3 else None


def _hex(run: str) -> str | None:
    return _printable(bytes.fromhex(re.sub(r"[ :,-]", "", run)))


def _unquoted(run: str) -> str | None:
    try:
        return _text(urllib.parse.unquote(run, errors="strict"))
    except UnicodeDecodeError:
        return None


def _entities(run: str) -> str | None:
    return _text(html.unescape(run))


def _binary(run: str) -> str | None:
    octets = re.sub(r"[ ,]", "", run)
    return _printable(int(octets, 2).to_bytes(len(octets) // 8, "big"))


def _bytes_before(text: str, start: int) -> int:
    """Where a run of hex bytes found at ``start`` begins: the bytes without a digit before it."""
    while start >= 3 and _HEX_BYTE_BEFORE.fullmatch(text, start - 3, start):
        start -= 3
    return start


def _word_before(text: str, start: int) -> int:
    """Where the word that percent-escapes start at ``start`` begins (up to 64 letters before)."""
    found = _WORD_BEFORE.search(text, max(0, start - 64), start)
    return found.start() if found is not None else start


def _here(text: str, start: int) -> int:
    return start


_IN_LONG_WORDS: tuple[tuple[str, re.Pattern[str], Callable[[str], str | None]], ...] = (
    ("base64", _BASE64, _base64),
    ("hex", _HEX, _hex),
)
_Reader = tuple[str, re.Pattern[str], tuple[str, ...], Callable[[str, int], int], Callable[[str], str | None]]
_READERS: tuple[_Reader, ...] = (
    ("hex", _HEX_BYTES, tuple("0123456789"), _bytes_before, _hex),
    ("url", _PERCENT, ("%",), _word_before, _unquoted),
    ("entities", _ENTITIES, ("&#",), _here, _entities),
    ("escapes", _ESCAPES, ("\\u", "\\x", "\\U"), _here, _escaped),
    ("binary", _BINARY, ("00", "01"), _here, _binary),
    ("morse", _MORSE, (".-", "-."), _here, _morse),
)
"""Each encoding, its run, the strings a text must hold to have one (a substring test, not a scan
with the pattern), where a run found begins, and its reader."""


def payloads(text: str) -> Iterator[tuple[int, int, str, str]]:
    """(start, end, encoding, decoded text) of each payload written in ``text`` as a run of
    characters, in the order of the encodings above; runs may overlap (hex is base64 too)."""
    # Base64 and hex runs hold no white space: only the long words of a text can be one (split
    # finds them faster than a pattern, which would try each short word at each of its letters).
    at = 0
    for word in [word for word in text.split() if len(word) >= 20]:
        at = text.index(word, at)
        for encoding, pattern, read in _IN_LONG_WORDS:
            for run in pattern.finditer(text, at, at + len(word)):
                if (plain := read(run.group())) is not None:
                    yield run.start(), run.end(), encoding, plain
        at += len(word)
    for encoding, pattern, cues, begin, read in _READERS:
        if any(cue in text for cue in cues):
            for run in pattern.finditer(text):
                start = begin(text, run.start())
                if (plain := read(text[start : run.end()])) is not None:
                    yield start, run.end(), encoding, plain


def readable(text: str) -> str:
    """``text`` with each payload written out in place of its encoding (the first of overlapping
    ones), and what follows a ROT13 cue read back: what a sentence encoder should read."""
    found = sorted((start, end, plain) for start, end, _, plain in islice(payloads(text), _MOST_DECODED))
    parts: list[str] = []
    at = 0
    for start, end, plain in found:
        if start >= at:
            parts += [text[at:start], plain]
            at = end
    text = "".join([*parts, text[at:]]) if parts else text
    folded = text.casefold()
    return _rot13_read(text) if "rot" in folded or "sar" in folded else text


def _rot13_read(text: str) -> str:
    """``text`` with the payload after a ROT13 cue read back, if it reads better so (a request to
    decode one, not to encode plain text)."""
    if (cued := _ROT13_PAYLOAD.search(text)) is None:
        return text
    payload = cued.group(1)
    flipped = codecs.encode(payload, "rot13")

    def common(words: str) -> int:
        return sum(word in _COMMON_WORDS for word in re.findall(r"\w+", words.casefold()))

    return text[: cued.start(1)] + flipped if common(flipped) > common(payload) else text


def decoded(text: str, seen: str) -> Iterator[tuple[str, str]]:
    """(encoding, skeleton of the decoded text) for each payload ``text`` hides; ``seen`` is the
    skeleton of ``text`` itself."""
    for _, _, encoding, plain in islice(payloads(text), _MOST_DECODED):
        yield encoding, skeleton(plain)
    if ("rot" in seen or "sar" in seen) and _ROT13_CUE.search(seen):
        yield "rot13", codecs.encode(seen, "rot13")
    if "  " in text and _SPACED_HINT.search(text) and (runs := [m.group() for m in _SPACED.finditer(text)]):
        yield "spaced", skeleton("\n".join(_unspaced(run) for run in runs))
    for encoding, plain in hidden(text):  # the skeleton dropped them: invisible, yet read by engines
        if encoding != "zero-width":
            yield encoding, skeleton(plain)
    if _DIGITISH.search(seen) is not None and (passages := _leet_passages(seen)):
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
