"""Every NATS subject and queue group the platform uses, built here and nowhere else."""

from __future__ import annotations

import re

ROOT = "llmaas.v1"

GUARD = f"{ROOT}.guard"
"""Jobs from the edge (and batch publishers) enter here; consumed by the guard queue group."""
GUARD_QUEUE = "guard"

SCHEDULER = f"{ROOT}.schedule"
"""Jobs that passed the guard; consumed by the scheduler queue group."""
SCHEDULER_QUEUE = "scheduler"

HEARTBEATS = f"{ROOT}.fleet.heartbeat.*"
"""Wildcard for every worker's heartbeat."""

CACHE_EVENTS = f"{ROOT}.fleet.cache.*"
"""Every worker's prefix-cache events, for the schedulers' prefix index."""

PROGRESS = f"{ROOT}.fleet.progress.*"
"""Every worker's first tokens and ends, for the schedulers' count of what they placed."""

AUDIT = f"{ROOT}.audit"
"""The hash-chained audit trail (JetStream stream LLMAAS_AUDIT)."""

SECURITY = f"{ROOT}.security"
"""Prompts the guard blocked (JetStream stream LLMAAS_SECURITY)."""

ALERTS = f"{ROOT}.alerts.*"
"""Alerts firing and resolving, one subject per tenant (JetStream stream LLMAAS_ALERTS): what a
webhook or mail sender subscribes to."""


def alerts(tenant: str) -> str:
    return f"{ROOT}.alerts.{check_token(tenant)}"


USAGE = f"{ROOT}.usage"
"""One event per finished request (JetStream stream LLMAAS_USAGE), copied into ClickHouse by metering."""

METERING_QUERY = f"{ROOT}.metering.query"
"""Report queries, answered by the metering service that owns the ClickHouse (chDB) data."""
METERING_QUEUE = "metering"

LIMITS = f"{ROOT}.limits.>"
"""Counters of the tenants' limits (JetStream counter stream LLMAAS_LIMITS)."""

WORK = f"{ROOT}.work.*"
"""Each worker's records of sealed jobs done (JetStream stream LLMAAS_WORK), for metering."""

LEASES = f"{ROOT}.leases.>"
"""Requests in flight per key, counted per lease period (JetStream counter stream LLMAAS_LEASES)."""

BATCH_LINES = f"{ROOT}.batch.lines.>"
"""Batches' input lines, ``<tenant>.<batch>`` (JetStream work queue LLMAAS_BATCH_LINES)."""

BATCH_INTAKE = f"{ROOT}.batch.intake.>"
"""Lines sent over the NATS door, ``<tenant>.<batch>``, kept until the batch is sealed (JetStream
stream LLMAAS_BATCH_INTAKE)."""

# --- the NATS door (a server of its own, llmaas.nats_door): tenants' subjects -----------------------

DOOR = "llmaas.door.>"
"""Tenants' requests, ``llmaas.door.<key id>.<what>``; answered by the edges' door queue group."""
DOOR_QUEUE = "door"
DOOR_EVENTS = "llmaas.events.>"
"""Batches' progress, ``llmaas.events.<key id>.batches.<batch id>`` (the key that made the batch),
published by the edges."""
AUTH_CALLOUT = "$SYS.REQ.USER.AUTH"
"""Where nats-server asks who a connecting tenant is (NATS auth callout)."""
AUTH_CALLOUT_QUEUE = "door-auth"
DOOR_CONNECTIONS = "$SYS.REQ.SERVER.PING.CONNZ"
"""The connections of every door server (the system account's), filtered by user."""


def door(key_id: str, what: str = ">") -> str:
    """A request subject of one key: ``what`` is ``batches.create``, ``batches.<id>.lines``, ..."""
    return f"llmaas.door.{key_id}.{what}"


def batch_events(key_id: str, batch_id: str = "*") -> str:
    return f"llmaas.events.{key_id}.batches.{batch_id}"


def door_kick(server_id: str) -> str:
    """Close one connection of door server ``server_id`` (the system account's)."""
    return f"$SYS.REQ.SERVER.{server_id}.KICK"


_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REPLY_ROOT = "_INBOX.llmaas"


def check_token(value: str) -> str:
    """Return ``value`` if it is safe as one subject token, else raise ValueError."""
    if not _TOKEN.match(value):
        raise ValueError(f"{value!r} must be 1-64 characters of [A-Za-z0-9_-] to be used in a NATS subject")
    return value


def heartbeat(worker_id: str) -> str:
    return f"{ROOT}.fleet.heartbeat.{worker_id}"


def cache_events(worker_id: str) -> str:
    return f"{ROOT}.fleet.cache.{worker_id}"


def progress(worker_id: str) -> str:
    return f"{ROOT}.fleet.progress.{worker_id}"


def worker_of(subject: str) -> str:
    """The worker a ``fleet.*.<worker id>`` subject belongs to: who may publish on it (its
    identity's rights), whatever its payload says."""
    return subject.rpartition(".")[2]


def worker_jobs(worker_id: str) -> str:
    return f"{ROOT}.worker.{worker_id}.jobs"


def worker_cancel(worker_id: str) -> str:
    return f"{ROOT}.worker.{worker_id}.cancel"


def reply_prefix(edge_id: str) -> str:
    """Prefix of every reply subject of one edge process; it subscribes to ``prefix + ".*"``."""
    return f"{_REPLY_ROOT}.{edge_id}"


def reply(edge_id: str, request_id: str) -> str:
    return f"{_REPLY_ROOT}.{edge_id}.{request_id}"


def request_id_of_reply(subject: str) -> str:
    """The request id is the last token of a reply subject."""
    return subject.rpartition(".")[2]


def limit_counter(tenant: str, measure: str, window: str) -> str:
    """One counter: ``measure`` (rpm, tokens_hour, ...) of ``tenant`` in ``window`` (or a key id)."""
    return f"{ROOT}.limits.{tenant}.{measure}.{window}"


def lease_counter(tenant: str, key_id: str, period: int) -> str:
    """The requests of key ``key_id`` in flight during lease period ``period``."""
    return f"{ROOT}.leases.{tenant}.{key_id}.{period}"


def work(worker_id: str) -> str:
    return f"{ROOT}.work.{worker_id}"
