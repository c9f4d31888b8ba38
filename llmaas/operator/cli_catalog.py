"""``llmaas models [--at DATE]``: the catalog as a table, with each model's state on that day."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from llmaas import catalog
from llmaas.operator.cli_table import print_table


def cmd_models(args: argparse.Namespace) -> None:
    try:
        day = dt.date.fromisoformat(args.at) if args.at else catalog.today()
    except ValueError:
        raise SystemExit(f"llmaas models: --at {args.at!r} is not a date like 2026-03-01") from None
    try:
        models = catalog.load(Path(args.file) if args.file else catalog.DEFAULT_FILE)
    except (catalog.CatalogError, OSError) as exc:
        raise SystemExit(f"llmaas models: {exc}") from None
    order = {state: i for i, state in enumerate(catalog.STATES)}
    rows = sorted(models.models.values(), key=lambda m: (order[m.state(day)], m.name))
    table = [["MODEL", "PUBLISHER", "KIND", "CONTEXT", "DMP", "DSP", "STATE", "KWH/MTOK", "NOTE"]]
    flagged = 0
    for m in rows:
        state, note = m.state(day), []
        days = m.days_to_dsp(day)
        if state in ("experimental", "production") and days is not None and days <= catalog.WARN_DAYS:
            note.append(f"! DSP in {days} days")
            flagged += 1
        if m.retired_on is not None:
            note.append(f"{'retired' if state == 'retired' else 'to be retired'} on {m.retired_on}")
        elif state == "deprecated" and m.sunset is not None:
            note.append(f"removed on {m.sunset}")
        if m.successor and state in ("deprecated", "retired"):
            note.append(f"-> {m.successor}")
        table.append([
            m.name,
            m.publisher,
            m.kind or "-",
            _tokens(m.context_length),
            str(m.dmp or "-"),
            str(m.dsp or "-"),
            state,
            f"{m.energy_kwh_per_mtok:g}{'' if m.energy_basis == 'measured' else '*'}"
            if m.energy_kwh_per_mtok is not None else "-",
            ", ".join(note),
        ])  # fmt: skip
    print_table(table[0], table[1:])
    counts = {s: sum(m.state(day) == s for m in rows) for s in catalog.STATES}
    print(
        f"\nas of {day}: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; {flagged} reach DSP within {catalog.WARN_DAYS} days (!); * estimated energy"
    )
    for alias, target in sorted(models.aliases.items()):
        print(f"alias: {alias} -> {target}")


def _tokens(count: int | None) -> str:
    if count is None:
        return "-"
    return f"{count // 1024}k" if count >= 1024 else str(count)


def register(models: argparse.ArgumentParser) -> None:
    models.add_argument("--at", help="show states as of this date (YYYY-MM-DD; default today, UTC)")
    models.add_argument("--file", help=f"the catalog (default {catalog.DEFAULT_FILE})")
    models.set_defaults(func=cmd_models)
