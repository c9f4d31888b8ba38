"""``llmaas tenants``, ``llmaas keys`` and ``llmaas audit``: administration over the edge's admin API."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from llmaas import durations
from llmaas.operator import admin
from llmaas.operator.cli_table import print_table
from llmaas.settings import DEFAULT_DATA_DIR, DEFAULT_EDGE_URL, OperatorSettings


def client(args: argparse.Namespace, timeout_s: float = 10.0) -> admin.AdminClient:
    """The admin API of the edge at ``--url``, with the admin token found as ``llmaas up`` left it."""
    settings = OperatorSettings()
    data_dir = Path(args.data_dir).expanduser()
    token = admin.find_token(data_dir, settings.admin_token)
    url, ca = admin.edge_address(args.url, data_dir, settings)
    return admin.AdminClient(url, token, timeout_s=timeout_s, ca=ca)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _show_key(key: dict[str, Any]) -> None:
    print(f"id:       {key['id']}")
    print(f"tenant:   {key['tenant']}")
    print(f"models:   {', '.join(key['models']) or 'all'}")
    print(f"expires:  {_when(key['expires_at'])}")
    if key.get("rotate_every_s"):
        print(f"rotates:  every {key['rotate_every_s'] / 86400:g} days (successor: GET /v1/keys/current)")
    print(f"key:      {key['key']}")
    print("Store the key now: it is shown only once (the platform keeps only its hash).")


def cmd_tenants_create(args: argparse.Namespace) -> None:
    tenant = client(args).call("POST", "/tenants", {"name": args.name, "tier": args.tier})
    print(f"tenant {tenant['name']} created (tier {tenant['tier']})")


def cmd_tenants_list(args: argparse.Namespace) -> None:
    rows = [
        [
            t["name"],
            t["tier"],
            "on" if t.get("guard_enabled", True) else "OFF",
            f"{t['guard_threshold']:g}" if t.get("guard_threshold") is not None else "default",
            _when(t["created_at"]),
        ]
        for t in client(args).call("GET", "/tenants")["data"]
    ]
    print_table(["TENANT", "TIER", "GUARD", "THRESHOLD", "CREATED"], rows)


def cmd_tenants_set_tier(args: argparse.Namespace) -> None:
    tenant = client(args).call("PATCH", f"/tenants/{args.name}", {"tier": args.tier})
    print(f"tenant {tenant['name']} is now on tier {tenant['tier']}")


def cmd_tenants_set_guard(args: argparse.Namespace) -> None:
    on = args.state == "on"
    tenant = client(args).call("PATCH", f"/tenants/{args.name}", {"guard_enabled": on})
    if tenant.get("guard_enabled", True):  # the record leaves out the default
        print(f"prompt screening is on for tenant {tenant['name']}")
    else:
        print(f"prompt screening is OFF for tenant {tenant['name']}: its prompts reach the models unscreened")


def cmd_tenants_set_guard_threshold(args: argparse.Namespace) -> None:
    value: float | str = args.threshold
    if args.threshold != "default":
        try:
            value = float(args.threshold)
        except ValueError:
            raise SystemExit(f"llmaas tenants set-guard-threshold: not a number: {args.threshold}") from None
    tenant = client(args).call("PATCH", f"/tenants/{args.name}", {"guard_threshold": value})
    threshold = tenant.get("guard_threshold")
    if threshold is None:
        print(f"tenant {tenant['name']} uses the deployment's guard threshold")
    else:
        print(f"tenant {tenant['name']}: prompts the guard's model scores {threshold:g} or more are blocked")


def cmd_tenants_retired_models(args: argparse.Namespace) -> None:
    """``reactivate`` or ``deactivate`` (args.change) retired models for one tenant."""
    tenant = client(args).call("PATCH", f"/tenants/{args.name}", {args.change: args.models})
    print(f"tenant {tenant['name']} may use again: {', '.join(tenant.get('reactivated', [])) or 'none'}")


def cmd_keys_create(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"tenant": args.tenant, "name": args.name, "models": _models(args.models)}
    if args.expires_in:
        body["expires_in_s"] = durations.seconds(args.expires_in)
    if args.rotate_every:
        body["rotate_every_s"] = durations.seconds(args.rotate_every)
    if args.grace:
        body["grace_s"] = durations.seconds(args.grace)
    _show_key(client(args).call("POST", "/keys", body))


def _models(values: list[str] | None) -> list[str]:
    return [m.strip() for value in values or [] for m in value.split(",") if m.strip()]


def cmd_keys_list(args: argparse.Namespace) -> None:
    path = f"/keys?tenant={args.tenant}" if args.tenant else "/keys"
    rows = [
        [
            k["id"],
            k["tenant"],
            k["name"],
            k["state"],
            ",".join(k["models"]) or "*",
            _when(k["created_at"]),
            _when(k["expires_at"]),
            k.get("successor") or "-",
        ]
        for k in client(args).call("GET", path)["data"]
    ]
    print_table(["ID", "TENANT", "NAME", "STATE", "MODELS", "CREATED", "EXPIRES", "SUCCESSOR"], rows)


def cmd_keys_rotate(args: argparse.Namespace) -> None:
    grace = durations.seconds(args.grace)
    key = client(args).call("POST", f"/keys/{args.id}/rotate", {"grace_s": grace})
    print(f"{args.id} stays valid for {args.grace} more, then stops working by itself.")
    _show_key(key)


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    key = client(args).call("POST", f"/keys/{args.id}/revoke")
    print(f"key {key['id']} of tenant {key['tenant']} revoked (every edge refuses it within a second)")


def cmd_audit_verify(args: argparse.Namespace) -> None:
    verdict = client(args).call("GET", "/audit/verify")
    if verdict["ok"]:
        print(f"audit chain intact: {verdict['events']} events, last hash {verdict['last_hash']}")
        if verdict.get("expired"):
            anchored = verdict.get("anchored_from")
            where = f"anchored from checkpoint {anchored}" if anchored else "no checkpoint kept yet"
            print(f"  {verdict['expired']} older events expired (retention); {where}")
        return
    raise SystemExit(f"audit chain BROKEN after {verdict['events']} good events: {verdict['problem']}")


def connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"the edge (default: $LLMAAS_URL or {DEFAULT_EDGE_URL})")
    parser.add_argument(
        "--data-dir",
        default=str(DEFAULT_DATA_DIR),
        help="where `llmaas up` wrote the admin token (unless $LLMAAS_ADMIN_TOKEN is set)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tenants = sub.add_parser("tenants", help="create and list tenants, change their tier and guard")
    t = tenants.add_subparsers(dest="tenants_command", required=True)
    p = t.add_parser("create", help="create a tenant")
    p.add_argument("name", help="1-63 of a-z 0-9 - _")
    p.add_argument("--tier", default="tier1", help="billing tier (default tier1; see infra/tiers.toml)")
    p.set_defaults(func=cmd_tenants_create)
    p = t.add_parser("list", help="every tenant with its tier")
    p.set_defaults(func=cmd_tenants_list)
    p = t.add_parser("set-tier", help="move a tenant to another billing tier")
    p.add_argument("name")
    p.add_argument("tier")
    p.set_defaults(func=cmd_tenants_set_tier)
    p = t.add_parser("set-guard", help="switch prompt screening on or off for one tenant (audited)")
    p.add_argument("name")
    p.add_argument("state", choices=["on", "off"])
    p.set_defaults(func=cmd_tenants_set_guard)
    p = t.add_parser(
        "set-guard-threshold",
        help="the score (0-1] at which the guard's model blocks one tenant's prompts, or 'default' (audited)",
    )
    p.add_argument("name")
    p.add_argument("threshold", help="a number in (0, 1], or 'default' for the deployment's")
    p.set_defaults(func=cmd_tenants_set_guard_threshold)
    for change, about in (
        ("reactivate", "serve retired catalog models to one tenant again (audited)"),
        ("deactivate", "take reactivated models back from a tenant (audited)"),
    ):
        p = t.add_parser(change, help=about)
        p.add_argument("name")
        p.add_argument("models", nargs="+", metavar="MODEL")
        p.set_defaults(func=cmd_tenants_retired_models, change=change)

    keys = sub.add_parser("keys", help="create, list, rotate and revoke API keys")
    k = keys.add_subparsers(dest="keys_command", required=True)
    p = k.add_parser("create", help="create an API key (printed once)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--name", default="default", help="a label for the key")
    p.add_argument(
        "--models", action="append", help="allowed models, names or patterns like 'qwen3:*' (default: all)"
    )
    p.add_argument("--expires-in", help="lifetime, e.g. 90d (default: none)")
    p.add_argument(
        "--rotate-every",
        help="rotate automatically at this age, e.g. 30d: the holder collects the successor from "
        "GET /v1/keys/current with the old key",
    )
    p.add_argument("--grace", help="how long a rotated key keeps working (default 24h)")
    p.set_defaults(func=cmd_keys_create)
    p = k.add_parser("list", help="keys with their state (never their secrets)")
    p.add_argument("--tenant")
    p.set_defaults(func=cmd_keys_list)
    p = k.add_parser("rotate", help="issue a successor; the old key works for a grace period")
    p.add_argument("id")
    p.add_argument("--grace", default="24h", help="how long the old key keeps working (default 24h)")
    p.set_defaults(func=cmd_keys_rotate)
    p = k.add_parser("revoke", help="stop a key now, on every edge")
    p.add_argument("id")
    p.set_defaults(func=cmd_keys_revoke)

    audit = sub.add_parser("audit", help="the audit trail")
    a = audit.add_subparsers(dest="audit_command", required=True)
    p = a.add_parser("verify", help="check the hash chain of every audit event")
    p.set_defaults(func=cmd_audit_verify)

    for group in (t, k, a):
        for parser in group.choices.values():
            connection_options(parser)
