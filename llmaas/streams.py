"""Every JetStream stream and KV bucket the platform keeps, declared once, and one way to make the
server hold what is declared.

Each service calls ``ensure`` (or ``ensure_bucket``) for what it uses at start: the first creates it,
the others find it. A stream made by an older version (other retention, fewer replicas) is updated
to the declaration, except that replicas are never lowered: an operator who raised a stream to R3 by
hand keeps it (an older version looped on error 10058 instead). A service with its own NATS identity
may create what it uses but not change it (that would let it widen a stream's subjects and read what
it should not): ``llmaas up`` updates everything as the operator before the services start, and a
service that still finds a stream unlike its declaration says so and uses it as it is.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from llmaas import subjects
from llmaas.settings import ServiceSettings

log = logging.getLogger(__name__)

_CONFIG_DIFFERS = 10058
"""JetStream: a stream of that name exists with another configuration."""

DAY_S = 86400.0


@dataclass(frozen=True)
class Policy:
    """How a process applies the declarations: replicas to make, and whether it may change them."""

    replicas: int = 1
    update: bool = True

    @classmethod
    def of(cls, settings: ServiceSettings) -> Policy:
        return cls(replicas=settings.nats_replicas, update=settings.nats_credentials is None)


DEFAULT = Policy()


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float
    storage: StorageType = StorageType.FILE
    duplicate_window_s: float = 120.0
    deny_delete: bool = False
    deny_purge: bool = False
    counter: bool = False
    max_msgs_per_subject: int = -1
    retention: RetentionPolicy = RetentionPolicy.LIMITS

    def config(self, replicas: int) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=self.retention,
            storage=self.storage,
            max_age=self.max_age_s,
            duplicate_window=min(self.duplicate_window_s, self.max_age_s),  # the server refuses more
            deny_delete=self.deny_delete,
            deny_purge=self.deny_purge,
            allow_msg_counter=self.counter or None,
            max_msgs_per_subject=self.max_msgs_per_subject,
            num_replicas=replicas,
        )


@dataclass(frozen=True)
class BucketSpec:
    bucket: str
    history: int
    storage: StorageType = StorageType.FILE
    ttl_s: float | None = None

    @property
    def stream(self) -> str:
        return f"KV_{self.bucket}"

    def config(self, replicas: int) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=self.bucket, history=self.history, storage=self.storage, ttl=self.ttl_s, replicas=replicas
        )


@dataclass(frozen=True)
class ObjectsSpec:
    bucket: str
    ttl_s: float

    @property
    def stream(self) -> str:
        return f"OBJ_{self.bucket}"

    def config(self, replicas: int) -> ObjectStoreConfig:
        return ObjectStoreConfig(
            bucket=self.bucket, ttl=self.ttl_s, storage=StorageType.FILE, replicas=replicas
        )


USAGE = StreamSpec(
    name="LLMAAS_USAGE",
    subjects=(subjects.USAGE,),
    # Kept after metering stored them: a ClickHouse restored from last month's backup can be refilled.
    max_age_s=30 * DAY_S,
    duplicate_window_s=600.0,  # an edge retrying a publish within 10 min is not billed twice
    deny_delete=True,
)
AUDIT = StreamSpec(
    name="LLMAAS_AUDIT",
    subjects=(subjects.AUDIT,),
    # Longer than a yearly review; checkpoints in the chain let a trail whose start aged out be checked.
    max_age_s=400 * DAY_S,
    deny_delete=True,
    deny_purge=True,
)
SECURITY = StreamSpec(
    name="LLMAAS_SECURITY",
    subjects=(subjects.SECURITY,),
    max_age_s=90 * DAY_S,  # ClickHouse keeps its own copy as long as it is told
    deny_delete=True,
)
ALERTS = StreamSpec(name="LLMAAS_ALERTS", subjects=(subjects.ALERTS,), max_age_s=90 * DAY_S)
LIMITS = StreamSpec(
    name="LLMAAS_LIMITS",
    subjects=(subjects.LIMITS,),
    # A counter's last message holds its total: one message per window is all a limit needs (every
    # increment kept for 40 days was ~9 messages per request), and a monthly window outlives its month.
    max_age_s=40 * DAY_S,
    counter=True,
    max_msgs_per_subject=1,
)
LEASES = StreamSpec(
    name="LLMAAS_LEASES",
    subjects=(subjects.LEASES,),
    # A period's count matters while it lasts (seconds); what a killed edge left is gone after that.
    max_age_s=600.0,
    counter=True,
    max_msgs_per_subject=1,
)
WORK = StreamSpec(
    name="LLMAAS_WORK",
    subjects=(subjects.WORK,),
    max_age_s=7 * DAY_S,  # long enough for metering to be down a while and still bill orphans
    duplicate_window_s=600.0,
    deny_delete=True,
)
BATCH_LINES = StreamSpec(
    name="LLMAAS_BATCH_LINES",
    subjects=(subjects.BATCH_LINES,),
    # A line leaves when a runner acknowledges it (its result stored); a batch lives 24 h at most.
    max_age_s=2 * DAY_S,
    duplicate_window_s=600.0,  # a line enqueued again within 10 min (a validation retried) is kept once
    retention=RetentionPolicy.WORK_QUEUE,
)
BATCH_INTAKE = StreamSpec(
    name="LLMAAS_BATCH_INTAKE",
    subjects=(subjects.BATCH_INTAKE,),
    # A NATS door batch's lines wait here until it is sealed (within its 24 h window), then are purged.
    max_age_s=2 * DAY_S,
    duplicate_window_s=600.0,  # a chunk sent again (its acknowledgement lost) is kept once
)
STREAMS = (USAGE, AUDIT, SECURITY, ALERTS, LIMITS, LEASES, WORK, BATCH_LINES, BATCH_INTAKE)

TENANTS = BucketSpec("llmaas_tenants", history=5)  # the last versions: what a record was before a change
KEYS = BucketSpec("llmaas_keys", history=5)
GUARD_HISTORY = BucketSpec("llmaas_guard_history", history=1, storage=StorageType.MEMORY, ttl_s=600.0)
# Tenants' files: the bytes, and one record per file (what the Files API lists); kept 7 days.
FILES = ObjectsSpec("llmaas_files", ttl_s=7 * DAY_S)
FILE_INDEX = BucketSpec("llmaas_file_index", history=1, ttl_s=7 * DAY_S)
# Batches: their records (kept 30 days, as a tenant's list shows them) and their lines' results.
BATCHES = BucketSpec("llmaas_batches", history=1, ttl_s=30 * DAY_S)
BATCH_RESULTS = BucketSpec("llmaas_batch_results", history=1, ttl_s=7 * DAY_S)
# The console's sessions, by the SHA-256 of their ids (never the ids, never a key): a day at most.
CONSOLE_SESSIONS = BucketSpec("llmaas_console_sessions", history=1, ttl_s=DAY_S)
# Tenants' alert rules (written by the edges) and each rule's state (by the evaluating metering).
ALERT_RULES = BucketSpec("llmaas_alert_rules", history=1)
ALERT_STATE = BucketSpec("llmaas_alert_state", history=1)
BUCKETS = (
    TENANTS, KEYS, GUARD_HISTORY, FILE_INDEX, BATCHES, BATCH_RESULTS,
    CONSOLE_SESSIONS, ALERT_RULES, ALERT_STATE,
)  # fmt: skip
OBJECT_STORES = (FILES,)


async def ensure(js: JetStreamContext, spec: StreamSpec, policy: Policy = DEFAULT) -> None:
    """Create the stream, or bring an existing one to the declaration."""
    try:
        await js.add_stream(spec.config(policy.replicas))
    except BadRequestError as exc:
        if exc.err_code != _CONFIG_DIFFERS:
            raise
        if not _may_update(spec.name, policy):
            return
        current = (await js.stream_info(spec.name)).config
        await js.update_stream(spec.config(_kept(spec.name, current.num_replicas, policy.replicas)))


async def ensure_bucket(js: JetStreamContext, spec: BucketSpec, policy: Policy = DEFAULT) -> KeyValue:
    """Create the bucket, or bring an existing one's history, TTL and replicas to the declaration."""
    try:
        return await js.create_key_value(spec.config(policy.replicas))
    except BadRequestError as exc:
        if exc.err_code != _CONFIG_DIFFERS:
            raise
    if _may_update(spec.stream, policy):
        # The bucket's own stream, as nats-py made it, with only what we declare changed.
        current = (await js.stream_info(spec.stream)).config
        await js.update_stream(
            dataclasses.replace(
                current,
                max_msgs_per_subject=spec.history,
                max_age=spec.ttl_s or 0,
                num_replicas=_kept(spec.stream, current.num_replicas, policy.replicas),
            )
        )
    return await js.key_value(spec.bucket)


async def ensure_objects(js: JetStreamContext, spec: ObjectsSpec, policy: Policy = DEFAULT) -> ObjectStore:
    """Create the object store, or find it (its TTL and replicas are set when it is made)."""
    try:
        return await js.create_object_store(spec.bucket, config=spec.config(policy.replicas))
    except BadRequestError as exc:
        if exc.err_code != _CONFIG_DIFFERS:
            raise
    return await js.object_store(spec.bucket)


async def entries(js: JetStreamContext, spec: BucketSpec, keys: str) -> AsyncIterator[tuple[str, bytes]]:
    """The current entries of the bucket's keys matching ``keys`` (a wildcard), in the order they
    were written, read one by one (a stream message get): a KV watch's "no more" marker can come before
    entries already on their way (nats-py reads its consumer's pending count first), this cannot."""
    subject = f"$KV.{spec.bucket}.{keys}"
    seq = 1
    while True:
        try:
            msg = await js.get_msg(spec.stream, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return
        seq = (msg.seq or seq) + 1
        operation = (msg.headers or {}).get("KV-Operation")
        if operation not in ("DEL", "PURGE") and msg.data and msg.subject:
            yield msg.subject.removeprefix(f"$KV.{spec.bucket}."), msg.data


async def ensure_all(js: JetStreamContext, policy: Policy) -> None:
    """Every declared stream and bucket (the operator's step before the services start)."""
    for stream in STREAMS:
        await ensure(js, stream, policy)
    for bucket in BUCKETS:
        await ensure_bucket(js, bucket, policy)
    for store in OBJECT_STORES:
        await ensure_objects(js, store, policy)


def _may_update(name: str, policy: Policy) -> bool:
    if not policy.update:
        log.warning("%s differs from its declaration; used as it is (`llmaas up` updates it)", name)
    return policy.update


def _kept(name: str, current: int | None, declared: int) -> int:
    if current is not None and current > declared:
        log.info("%s keeps its %d replicas (%d declared)", name, current, declared)
        return current
    return declared
