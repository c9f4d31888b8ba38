"""The model catalog (``infra/models.toml``): what the platform offers and each model's lifecycle.

A model's state is computed from its dates and a day, never stored:

- experimental: before its production start (DMP), or marked ``experimental``;
- production: from DMP until the day before its end of support (DSP);
- deprecated: from DSP for three months of notice: still served, answers announce the sunset;
- retired: from DSP + 3 months (the sunset), or from ``retired_on``: refused with 410 naming the
  successor, unless an administrator reactivated the model for the caller's tenant.

Loading validates the whole file; a mistake is a ``CatalogError`` naming the file and line.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmaas.settings import INFRA_DIR

DEFAULT_FILE = INFRA_DIR / "models.toml"

State = Literal["experimental", "production", "deprecated", "retired"]
STATES: tuple[State, ...] = ("experimental", "production", "deprecated", "retired")
KINDS = ("chat", "reasoning", "vision", "embedding", "guard", "ocr")
NOTICE_MONTHS = 3
"""Between end of support (DSP) and removal: the product's promise of three months' notice."""
WARN_DAYS = 90
"""Models whose DSP falls within this many days are flagged (CLI, alert rule)."""

_MODEL_FIELDS = {
    "name", "publisher", "kind", "context_length", "dmp", "dsp", "energy_kwh_per_mtok",
    "energy_basis", "successor", "experimental", "retired_on",
}  # fmt: skip
_MODEL_REQUIRED = ("name", "publisher", "kind", "context_length", "dmp", "dsp", "energy_kwh_per_mtok",
                   "energy_basis")  # fmt: skip
_RETIRED_FIELDS = {
    "name",
    "publisher",
    "retired_on",
    "successor",
    "kind",
    "energy_kwh_per_mtok",
    "energy_basis",
}
_ALIAS_FIELDS = {"name", "target"}


class CatalogError(ValueError):
    pass


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` moved by whole months, clamped to the month's end (30 Nov + 3 months = 28 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    publisher: str
    kind: str | None
    context_length: int | None
    dmp: dt.date | None
    dsp: dt.date | None
    energy_kwh_per_mtok: float | None
    energy_basis: str | None
    successor: str | None = None
    experimental: bool = False
    retired_on: dt.date | None = None

    @property
    def sunset(self) -> dt.date | None:
        """The day it stops being served: ``retired_on``, else three months after DSP."""
        if self.retired_on is not None:
            return self.retired_on
        return add_months(self.dsp, NOTICE_MONTHS) if self.dsp is not None else None

    @property
    def deprecated_from(self) -> dt.date | None:
        candidates = [d for d in (self.dsp, self.retired_on) if d is not None]
        return min(candidates) if candidates else None

    def state(self, today: dt.date) -> State:
        sunset = self.sunset
        if sunset is not None and today >= sunset:
            return "retired"
        if self.dsp is not None and today >= self.dsp:
            return "deprecated"
        if self.experimental or (self.dmp is not None and today < self.dmp):
            return "experimental"
        return "production"

    def days_to_dsp(self, today: dt.date) -> int | None:
        return (self.dsp - today).days if self.dsp is not None else None


@dataclass(frozen=True)
class Catalog:
    models: dict[str, Model]
    aliases: dict[str, str]

    def resolve(self, name: str) -> str:
        """The model that answers for ``name`` (its alias target, or itself)."""
        return self.aliases.get(name, name)

    def get(self, name: str) -> Model | None:
        return self.models.get(name)


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def load(path: Path = DEFAULT_FILE) -> Catalog:
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path.name}: {exc}") from None
    unknown = set(raw) - {"model", "retired", "alias"}
    if unknown:
        raise CatalogError(f"{path.name}: unknown table(s) {', '.join(sorted(unknown))}")
    lines = _header_lines(text)
    models: dict[str, Model] = {}
    for table, fields in (("model", _MODEL_FIELDS), ("retired", _RETIRED_FIELDS)):
        for index, entry in enumerate(raw.get(table, [])):
            where = f"{path.name}:{_line(lines, table, index)}: [[{table}]] {entry.get('name', '')}".rstrip()
            model = _model(entry, table, fields, where)
            if model.name in models:
                raise CatalogError(f"{where}: '{model.name}' is listed twice")
            models[model.name] = model
    aliases: dict[str, str] = {}
    for index, entry in enumerate(raw.get("alias", [])):
        where = f"{path.name}:{_line(lines, 'alias', index)}: [[alias]] {entry.get('name', '')}".rstrip()
        _check_fields(entry, _ALIAS_FIELDS, ("name", "target"), where)
        name, target = _text(entry, "name", where), _text(entry, "target", where)
        if name in models or name in aliases:
            raise CatalogError(f"{where}: '{name}' is already a model or an alias")
        if target not in models:
            raise CatalogError(f"{where}: target '{target}' is not in the catalog")
        aliases[name] = target
    for table in ("model", "retired"):
        for index, entry in enumerate(raw.get(table, [])):
            successor = entry.get("successor")
            if successor is not None and (successor not in models or successor == entry["name"]):
                line = _line(lines, table, index)
                raise CatalogError(
                    f"{path.name}:{line}: [[{table}]] {entry['name']}: successor '{successor}' "
                    "is not another model of the catalog"
                )
    return Catalog(models=models, aliases=aliases)


def _model(entry: dict[str, Any], table: str, fields: set[str], where: str) -> Model:
    required = _MODEL_REQUIRED if table == "model" else ("name", "publisher", "retired_on")
    _check_fields(entry, fields, required, where)
    kind = entry.get("kind")
    if kind is not None and kind not in KINDS:
        raise CatalogError(f"{where}: kind '{kind}' is not one of {', '.join(KINDS)}")
    context = entry.get("context_length")
    if context is not None and (not isinstance(context, int) or isinstance(context, bool) or context <= 0):
        raise CatalogError(f"{where}: context_length must be a positive whole number of tokens")
    energy = entry.get("energy_kwh_per_mtok")
    if energy is not None and (
        not isinstance(energy, int | float) or isinstance(energy, bool) or energy <= 0
    ):
        raise CatalogError(f"{where}: energy_kwh_per_mtok must be a positive number")
    basis = entry.get("energy_basis")
    if basis not in (None, "measured", "estimated") or (basis is None) != (energy is None):
        raise CatalogError(f"{where}: energy_basis must be 'measured' or 'estimated', given with the energy")
    if not isinstance(entry.get("experimental", False), bool):
        raise CatalogError(f"{where}: experimental must be true or false")
    dmp, dsp = _date(entry, "dmp", where), _date(entry, "dsp", where)
    if dmp is not None and dsp is not None and dsp <= dmp:
        raise CatalogError(f"{where}: dsp {dsp} is not after dmp {dmp}")
    return Model(
        name=_text(entry, "name", where),
        publisher=_text(entry, "publisher", where),
        kind=kind,
        context_length=context,
        dmp=dmp,
        dsp=dsp,
        energy_kwh_per_mtok=float(energy) if energy is not None else None,
        energy_basis=basis,
        successor=entry.get("successor"),
        experimental=entry.get("experimental", False),
        retired_on=_date(entry, "retired_on", where),
    )


def _check_fields(entry: dict[str, Any], fields: set[str], required: tuple[str, ...], where: str) -> None:
    unknown = set(entry) - fields
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    missing = [name for name in required if name not in entry]
    if missing:
        raise CatalogError(f"{where}: missing field(s) {', '.join(missing)}")


def _text(entry: dict[str, Any], name: str, where: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: {name} must be a non-empty string")
    return value


def _date(entry: dict[str, Any], name: str, where: str) -> dt.date | None:
    value = entry.get(name)
    if value is None:
        return None
    # tomllib reads 2026-03-01 as a date, 2026-03-01T00:00:00 as a datetime (a date subclass).
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise CatalogError(f"{where}: {name} must be a date written like 2026-03-01, not {value!r}")
    return value


_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*(model|retired|alias)[ \t]*\]\]", re.MULTILINE)


def _header_lines(text: str) -> dict[str, list[int]]:
    """The line number of each ``[[table]]`` header, per table, in order (for error messages)."""
    lines: dict[str, list[int]] = {"model": [], "retired": [], "alias": []}
    for match in _HEADER.finditer(text):
        lines[match.group(1)].append(text.count("\n", 0, match.start()) + 1)
    return lines


def _line(lines: dict[str, list[int]], table: str, index: int) -> str:
    found = lines[table]
    return str(found[index]) if index < len(found) else "?"
