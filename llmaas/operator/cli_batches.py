"""``llmaas files …`` and ``llmaas batches …``: a tenant's batch files and batches, through the edge,
with the tenant's API key ($LLMAAS_API_KEY; an API key is what names the tenant)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmaas.operator import admin, cli_admin
from llmaas.operator.cli_table import print_table
from llmaas.settings import OperatorSettings

_CHUNK = 1 << 20


def _client(args: argparse.Namespace) -> admin.AdminClient:
    key = os.environ.get("LLMAAS_API_KEY")
    if not key:
        raise admin.AdminError("set LLMAAS_API_KEY to a key of the tenant (files and batches are a tenant's)")
    url, ca = admin.edge_address(args.url, Path(args.data_dir).expanduser(), OperatorSettings())
    return admin.AdminClient(url, key, timeout_s=60.0, prefix="/v1", ca=ca)


def _when(epoch: int | None) -> str:
    return "-" if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_files_upload(args: argparse.Namespace) -> None:
    client = _client(args)
    path = Path(args.file)
    if not path.is_file():
        raise admin.AdminError(f"{path}: no such file")
    boundary = secrets.token_hex(16)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{args.purpose}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:  # streamed: a 100 MB file is never read whole
        yield head
        with path.open("rb") as source:
            while chunk := source.read(_CHUNK):
                yield chunk
        yield tail

    headers = {
        "content-type": f"multipart/form-data; boundary={boundary}",
        "content-length": str(len(head) + path.stat().st_size + len(tail)),
    }
    with client.open("/files", method="POST", data=body(), headers=headers, timeout_s=600) as response:
        made = json.loads(response.read())
    print(f"{made['id']}  {made['bytes']} bytes  {made['filename']}  expires {_when(made['expires_at'])}")


def cmd_files_list(args: argparse.Namespace) -> None:
    found = _client(args).call("GET", "/files")["data"]
    rows = [[f["id"], f["purpose"], str(f["bytes"]), f["filename"], _when(f["created_at"])] for f in found]
    print_table(["ID", "PURPOSE", "BYTES", "FILENAME", "CREATED"], rows)


def cmd_files_get(args: argparse.Namespace) -> None:
    print(json.dumps(_client(args).call("GET", f"/files/{args.id}"), indent=2))


def cmd_files_content(args: argparse.Namespace) -> None:
    with _client(args).open(f"/files/{args.id}/content", timeout_s=600) as response:
        if args.output:
            with open(args.output, "wb") as out:
                shutil.copyfileobj(response, out, _CHUNK)
        else:
            shutil.copyfileobj(response, sys.stdout.buffer, _CHUNK)


def cmd_files_delete(args: argparse.Namespace) -> None:
    _client(args).call("DELETE", f"/files/{args.id}")
    print(f"deleted {args.id}")


def cmd_batches_create(args: argparse.Namespace) -> None:
    metadata = dict(pair.split("=", 1) for pair in args.metadata or [])
    body: dict[str, Any] = {
        "input_file_id": args.input_file_id,
        "endpoint": args.endpoint,
        "completion_window": "24h",
    }
    if metadata:
        body["metadata"] = metadata
    _show(_client(args).call("POST", "/batches", body))


def cmd_batches_list(args: argparse.Namespace) -> None:
    found = _client(args).call("GET", f"/batches?limit={args.limit}")["data"]
    rows = [
        [
            b["id"],
            b["status"],
            f"{b['request_counts']['completed']}/{b['request_counts']['failed']}/{b['request_counts']['total']}",
            b["endpoint"],
            _when(b["created_at"]),
        ]
        for b in found
    ]
    print_table(["ID", "STATUS", "DONE/FAILED/TOTAL", "ENDPOINT", "CREATED"], rows)


def cmd_batches_get(args: argparse.Namespace) -> None:
    _show(_client(args).call("GET", f"/batches/{args.id}"))


def cmd_batches_cancel(args: argparse.Namespace) -> None:
    _show(_client(args).call("POST", f"/batches/{args.id}/cancel"))


def _show(batch: dict[str, Any]) -> None:
    counts = batch["request_counts"]
    print(f"{batch['id']}  {batch['status']}  {batch['endpoint']}  input {batch['input_file_id']}")
    print(f"requests: {counts['total']} total, {counts['completed']} completed, {counts['failed']} failed")
    for name in ("created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at",
                 "cancelling_at", "cancelled_at", "expired_at", "expires_at"):  # fmt: skip
        if batch.get(name):
            print(f"{name.removesuffix('_at'):>12}: {_when(batch[name])}")
    for name, shown in (("output_file_id", "output"), ("error_file_id", "errors")):
        if batch.get(name):
            print(f"{shown:>12}: {batch[name]}  (llmaas files content {batch[name]})")
    for error in (batch.get("errors") or {}).get("data", []):
        print(f"  line {error.get('line')}: {error['code']}: {error['message']}")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    files = sub.add_parser("files", help="a tenant's batch files (with $LLMAAS_API_KEY)")
    f = files.add_subparsers(dest="files_command", required=True)
    p = f.add_parser("upload", help="upload a JSONL file of requests (one per line)")
    p.add_argument("file")
    p.add_argument("--purpose", default="batch", help="batch (the only one)")
    p.set_defaults(func=cmd_files_upload)
    f.add_parser("list", help="the tenant's files").set_defaults(func=cmd_files_list)
    for name, func, what in (
        ("get", cmd_files_get, "one file's record"),
        ("content", cmd_files_content, "a file's bytes (to stdout, or -o FILE)"),
        ("delete", cmd_files_delete, "delete a file"),
    ):
        p = f.add_parser(name, help=what)
        p.add_argument("id")
        if name == "content":
            p.add_argument("-o", "--output", help="write here instead of standard output")
        p.set_defaults(func=func)
    batches = sub.add_parser("batches", help="a tenant's batches (with $LLMAAS_API_KEY)")
    b = batches.add_subparsers(dest="batches_command", required=True)
    p = b.add_parser("create", help="run the requests of an uploaded file (completion window 24h)")
    p.add_argument("input_file_id")
    p.add_argument(
        "--endpoint",
        default="/v1/chat/completions",
        help="/v1/chat/completions, /v1/completions or /v1/embeddings",
    )
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="a label (up to 16)")
    p.set_defaults(func=cmd_batches_create)
    p = b.add_parser("list", help="the tenant's batches, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_batches_list)
    for name, func, what in (
        ("get", cmd_batches_get, "one batch: status, counts, result files"),
        ("cancel", cmd_batches_cancel, "cancel a batch (what is done stays)"),
    ):
        p = b.add_parser(name, help=what)
        p.add_argument("id")
        p.set_defaults(func=func)
    for parser in (*f.choices.values(), *b.choices.values()):
        cli_admin.connection_options(parser)
