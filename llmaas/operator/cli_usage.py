"""``llmaas usage`` and ``llmaas sql``: reports from the metering tables, through the edge.

With the admin token (the default, found like the other admin commands) every tenant is visible;
with ``--key`` (or ``$LLMAAS_API_KEY``) a tenant's API key sees its own tenant only.
"""

from __future__ import annotations

import argparse
import csv
import decimal
import json
import os
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from llmaas.operator import admin, cli_admin
from llmaas.operator.cli_table import print_table
from llmaas.settings import OperatorSettings

_SIX = decimal.Decimal("0.000001")


_TIMEOUT_S = 40.0
"""Longer than the edge waits for the metering service (30 s), so its error is the one shown."""


def _client(args: argparse.Namespace) -> admin.AdminClient:
    if args.key:
        print(
            "warning: --key puts the key where other users see it (ps, shell history); "
            "prefer LLMAAS_API_KEY in the environment",
            file=sys.stderr,
        )
    key = args.key or os.environ.get("LLMAAS_API_KEY")
    if key:
        url, ca = admin.edge_address(args.url, Path(args.data_dir).expanduser(), OperatorSettings())
        return admin.AdminClient(url, key, timeout_s=_TIMEOUT_S, prefix="/v1", ca=ca)
    return cli_admin.client(args, timeout_s=_TIMEOUT_S)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def cmd_usage(args: argparse.Namespace) -> None:
    client = _client(args)
    params = {"since": args.since, "by": args.by or "total"}
    if args.until:
        params["until"] = args.until
    if args.tenant and client.prefix != "/v1":
        params["tenant"] = args.tenant
    answer = client.call("GET", "/usage?" + urllib.parse.urlencode(params))
    columns: list[str] = answer["columns"]
    rows = [dict(zip(columns, row, strict=True)) for row in answer["rows"]]
    who = args.tenant or ("this key's tenant" if client.prefix == "/v1" else "all tenants")
    print(f"usage of {who} since {args.since}" + (f" until {args.until}" if args.until else ""))
    first = {"model": "MODEL", "day": "DAY"}.get(args.by or "")
    headers = [first] if first else []
    headers += ["REQUESTS", "PROMPT", "COMPLETION", "REASONING", "EUR", "KWH"]
    lines = []
    for r in rows:
        cells = [str(r[args.by])] if first else []
        cells += [str(r["requests"]), str(r["prompt_tokens"]), str(r["completion_tokens"])]
        cells += [str(r["reasoning_tokens"]), _euros(r["cost_eur"]), f"{r['energy_kwh']:.6f}"]
        lines.append(cells)
    print_table(headers, lines)


def _euros(value: str) -> str:
    return str(decimal.Decimal(value).quantize(_SIX))


def cmd_sql(args: argparse.Namespace) -> None:
    answer = _client(args).call("POST", "/sql", {"query": args.query})
    columns, rows = answer["columns"], answer["rows"]
    if args.format == "json":
        print(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], ensure_ascii=False, indent=1))
    elif args.format == "csv":
        out = csv.writer(sys.stdout)
        out.writerow(columns)
        out.writerows([[_cell(v) for v in r] for r in rows])
    else:
        print_table(columns, [[_cell(v) for v in r] for r in rows])
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = sub.add_parser("usage", help="tokens, euros and kWh per tenant (by model or by day)")
    usage.add_argument("--tenant", help="the tenant (default: all; with --key: the key's own)")
    usage.add_argument("--since", default="30d", help="a duration back (7d, 24h) or a date (default 30d)")
    usage.add_argument("--until", help="a duration back or a date (default: now)")
    usage.add_argument("--by", choices=["model", "day"], help="one line per model or per UTC day")
    usage.set_defaults(func=cmd_usage)
    sql = sub.add_parser("sql", help="read-only SQL over the metering tables (a tenant key: its rows only)")
    sql.add_argument("query", help='e.g. "SELECT model, count() FROM usage FINAL GROUP BY model"')
    sql.add_argument("--format", choices=["table", "json", "csv"], default="table")
    sql.set_defaults(func=cmd_sql)
    for parser in (usage, sql):
        cli_admin.connection_options(parser)
        parser.add_argument(
            "--key",
            help="a tenant's API key (default: $LLMAAS_API_KEY, which other users cannot see in ps; "
            "else the admin token)",
        )
