"""Billing tiers as data (``infra/tiers.toml``): budgets and limits a tenant's requests must respect."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from llmaas.settings import INFRA_DIR

DEFAULT_FILE = INFRA_DIR / "tiers.toml"


class Tier(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    title: str
    upfront_credit_eur: float = 0.0
    monthly_budget_eur: float | None = None
    output_tokens_per_hour: int | None = None
    output_tokens_per_day: int | None = None
    requests_per_minute: int | None = None
    concurrent_per_key: int | None = None
    priority: Literal["normal", "high"] = "normal"


def load(path: Path = DEFAULT_FILE) -> dict[str, Tier]:
    """Every tier by name; raises ValueError naming the file and tier when one is malformed."""
    with path.open("rb") as source:
        raw = tomllib.load(source)
    tiers: dict[str, Tier] = {}
    for name, fields in raw.items():
        try:
            tiers[name] = msgspec.convert(fields, Tier)
        except msgspec.ValidationError as exc:
            raise ValueError(f"{path}: tier [{name}]: {exc}") from None
    if not tiers:
        raise ValueError(f"{path}: no tiers defined")
    return tiers
