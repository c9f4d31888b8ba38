"""Durations as operators write them: ``90d``, ``24h``, ``30m``, ``45s``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> float:
    """``90d``, ``24h``, ``30m``, ``45s`` -> seconds; raises ValueError with the accepted forms."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number and s, m, h or d (e.g. 90d, 24h)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]
