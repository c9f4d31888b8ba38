"""Batches: what a batch is (OpenAI's Batch object), where its lines and results live in JetStream,
and how its state may change. The engine that runs them is the edge's (``edge/batches``); both
doors (HTTP, and NATS: edge/door) create the same records.

- the record: KV ``llmaas_batches``, key ``<tenant>.<batch id>``; changed by compare-and-set only,
  so that of two edges only one moves a batch on (validation, finalization);
- its lines: stream ``LLMAAS_BATCH_LINES`` (work queue), subject ``llmaas.v1.batch.lines.<tenant>.
  <batch>``, one message per input line (id ``<batch>:<line>``), one durable consumer per batch so
  that runners take turns between batches instead of draining the oldest first;
- its results: KV ``llmaas_batch_results``, key ``<tenant>.<batch>.<line>``, created once: the first
  runner to finish a line writes it, a line run again after a crash finds it there. The usage event
  of the line is kept in it and published from it (metering stores one row per request id), so a
  line is billed once however many times it ran.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

import msgspec

from llmaas import subjects
from llmaas.wire import UsageEvent

Status = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
STATUSES: tuple[str, ...] = (
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled",
)  # fmt: skip
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completion", "/v1/embeddings": "embedding"}
"""What a batch may call (the platform's generation routes), and the job kind each makes."""
WINDOWS = {"24h": 86_400}
ACTIVE: frozenset[str] = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
MAX_METADATA = 16


class Counts(msgspec.Struct, frozen=True):
    total: int = 0
    completed: int = 0
    failed: int = 0


class LineError(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant: str
    token_id: str
    """The key that made it: its model permissions apply to every line, its revocation stops it."""
    endpoint: str
    input_file_id: str
    completion_window: str
    status: Status
    created_at: int
    expires_at: int
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: Counts = Counts()
    metadata: dict[str, str] | None = None
    errors: list[LineError] | None = None
    owner: str = ""
    """The edge validating or finalizing it, and until when it holds that turn (a dead one's lapses)."""
    owned_until: float = 0.0
    expiring: bool = False
    """Past its completion window: its lines not run yet end as ``batch_expired``."""
    door: bool = False
    """Made over the NATS door: its lines come as messages (stream LLMAAS_BATCH_INTAKE), its input
    file (``input_file_id``, fixed at creation) is written from them once it is sealed."""
    receiving: bool = False
    """A door batch not sealed yet: it takes lines, and is not validated."""
    received_chunks: int = 0
    """Messages of lines taken; only chunks numbered up to this go into the input file."""
    received_lines: int = 0
    received_bytes: int = 0
    reserved_budget: str = ""
    """The budget counter the batch's reservation was taken on when it started ("" if none)."""
    reserved_tokens: int = 0
    """The output tokens its lines may produce, reserved at the batch price when it started."""
    reserved_nano: int = 0

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's Batch object; a field with no value yet is left out (the schema types each one,
        without null)."""
        shown = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None
            if self.errors is None
            else {"object": "list", "data": [msgspec.to_builtins(e) for e in self.errors]},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": msgspec.to_builtins(self.request_counts),
            "metadata": self.metadata,
        }
        return {name: value for name, value in shown.items() if value is not None}


class Line(msgspec.Struct, frozen=True, kw_only=True):
    """One input line as the lines stream carries it: where it came from and what it asks."""

    tenant: str
    batch: str
    number: int
    """0-based position in the input file."""
    custom_id: str
    body: msgspec.Raw
    reserve: int = 0
    """Its part of the batch's reservation: the output tokens it may produce."""


NO_BODY = msgspec.Raw(b"null")


class LineResult(msgspec.Struct, frozen=True, kw_only=True):
    """One line's outcome: its output-file (or error-file) line, and the usage to bill, if any."""

    custom_id: str
    request_id: str
    status_code: int = 0
    body: msgspec.Raw = NO_BODY
    """The answer's (or the refusal's) JSON body; ``null`` for a line that never ran."""
    error: LineError | None = None
    usage: UsageEvent | None = None
    unsettled: int = 0
    """A line that cost nothing (no usage): its part of the reservation, given back at the end."""

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code == 200

    def output_line(self, line_id: str) -> bytes:
        """The line OpenAI writes for it: ``{id, custom_id, response{status_code, request_id,
        body}, error}``."""
        response = (
            None
            if self.body == NO_BODY
            else {"status_code": self.status_code, "request_id": self.request_id, "body": self.body}
        )
        error = None if self.error is None else {"code": self.error.code, "message": self.error.message}
        return msgspec.json.encode(
            {"id": line_id, "custom_id": self.custom_id, "response": response, "error": error}
        )


record_decoder = msgspec.json.Decoder(BatchRecord)
line_decoder = msgspec.json.Decoder(Line)
result_decoder = msgspec.json.Decoder(LineResult)


def new_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def key(tenant: str, batch_id: str) -> str:
    return f"{tenant}.{batch_id}"


def result_key(tenant: str, batch_id: str, number: int) -> str:
    return f"{tenant}.{batch_id}.{number}"


def lines_subject(tenant: str, batch_id: str) -> str:
    return subjects.BATCH_LINES.replace(">", f"{tenant}.{batch_id}")


def intake_subject(tenant: str, batch_id: str) -> str:
    return subjects.BATCH_INTAKE.replace(">", f"{tenant}.{batch_id}")


def input_file_id(batch_id: str) -> str:
    """The input file of a door batch, written from its lines when it is sealed."""
    return f"file-in{batch_id.removeprefix('batch_')}"


def consumer(batch_id: str) -> str:
    return f"lines_{batch_id}"


def request_id(batch_id: str, number: int) -> str:
    """The request id of a line, the same each time it runs: its usage event's id (billed once)."""
    return f"{batch_id}-{number}"


def output_file_id(batch_id: str, kind: Literal["output", "error"]) -> str:
    """The ids of a batch's result files, fixed by the batch: a finalization run again after a crash
    writes the same files, never a second pair."""
    return f"file-{kind[:3]}{batch_id.removeprefix('batch_')}"


def is_batch_id(value: str) -> bool:
    return value.startswith("batch_") and value[6:].isalnum() and len(value) <= 64
