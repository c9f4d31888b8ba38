"""The versioned price list (``infra/prices.toml``) and the cost of one request's usage.

Costs are integers in nano-euros (1e-9 €), so that sums over millions of requests stay exact.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import msgspec

from llmaas.settings import INFRA_DIR

DEFAULT_FILE = INFRA_DIR / "prices.toml"
NANO = 1_000_000_000


class PriceVersion(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    valid_from: dt.date
    input_eur_per_m: float
    output_eur_per_m: float
    reasoning_eur_per_m: float
    batch_factor: float = 1.0

    def cost_nano(self, prompt: int, completion: int, reasoning: int = 0, *, batch: bool = False) -> int:
        """Nano-euros for a request; ``completion`` includes ``reasoning`` (as in OpenAI's usage)."""
        per_token_nano = (
            prompt * self.input_eur_per_m
            + (completion - reasoning) * self.output_eur_per_m
            + reasoning * self.reasoning_eur_per_m
        ) * (NANO / 1_000_000)
        return round(per_token_nano * (self.batch_factor if batch else 1.0))


class PriceList:
    def __init__(self, versions: list[PriceVersion]) -> None:
        if not versions:
            raise ValueError("the price list has no version")
        self.versions = sorted(versions, key=lambda v: v.valid_from)

    def at(self, day: dt.date) -> PriceVersion:
        """The version in force on ``day`` (the first one for days before it)."""
        current = self.versions[0]
        for version in self.versions:
            if version.valid_from <= day:
                current = version
        return current

    @classmethod
    def load(cls, path: Path = DEFAULT_FILE) -> PriceList:
        with path.open("rb") as source:
            raw = tomllib.load(source)
        try:
            return cls(msgspec.convert(raw.get("version", []), list[PriceVersion]))
        except msgspec.ValidationError as exc:
            raise ValueError(f"{path}: {exc}") from None
