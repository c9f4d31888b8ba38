"""Who may do what on the bus: every service its own NATS identity (an nkey), allowed only the
subjects its work needs.

An identity is an Ed25519 key pair (NATS nkeys): the service holds the seed in a file of mode 0600,
the server holds only the public key, so the server's configuration holds no secret. Without an
identity nothing connects. What each role may do:

- edge: publish jobs to the guard, cancels to workers, usage, audit events and limit counters, write
  tenants, keys and the tenants' files, ask metering; read the answers sent to edges and the
  workers' heartbeats.
- guard: take jobs, pass them to the scheduler, answer a refusal to the edge, record security events,
  keep its history bucket, read (never write) the tenants' switches; never sees a key's hash.
- scheduler: take screened jobs, read heartbeats, cache events and progress, hand jobs (and
  cancels) to workers, answer a refusal, say "taken" to the guard.
- worker <id>: take its own jobs and cancels, say "taken", publish its own heartbeat, cache events
  and progress, and the answers. No stream,
  no bucket: it can neither bill nor read a tenant, nor read another worker's jobs.
- metering: consume the usage, audit and security streams, answer the report queries it receives.
- operator: everything (``llmaas up`` making the streams; tests reading them).

No one but the edge (tenant input comes in through it) publishes to the guard. Every identity
subscribes to replies on its own inbox prefix only (``_INBOX_<public key>``), so no service reads
another's request replies; the edges' answer subjects (``_INBOX.llmaas.<edge>.*``) are readable by
edges alone. Deleting or purging a stream is nobody's right but the operator's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nkeys

from llmaas import private, streams, subjects

OPERATOR = "operator"
SERVICES = ("edge", "guard", "scheduler", "metering")
_WORKER = "worker-"


@dataclass(frozen=True)
class Role:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses: bool = False
    """May answer the requests it receives (on their reply subjects, once each)."""
    deny_publish: tuple[str, ...] = field(default=("$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>"))


def _stream(name: str, *, update: bool = False) -> tuple[str, ...]:
    """The JetStream API of one stream: create it as declared (and look at it), read it with
    consumers or direct gets, acknowledge, answer flow control; ``update`` to change its config."""
    api = "$JS.API"
    return (
        f"{api}.STREAM.CREATE.{name}",
        f"{api}.STREAM.INFO.{name}",
        *((f"{api}.STREAM.UPDATE.{name}",) if update else ()),
        f"{api}.STREAM.MSG.GET.{name}",
        f"{api}.DIRECT.GET.{name}",
        f"{api}.DIRECT.GET.{name}.>",
        f"{api}.CONSUMER.*.{name}",
        f"{api}.CONSUMER.*.{name}.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{name}.>",
        f"{api}.CONSUMER.MSG.NEXT.{name}.>",
        f"$JS.ACK.{name}.>",
        f"$JS.FC.{name}.>",
    )


def _bucket(spec: streams.BucketSpec, *, write: bool) -> tuple[str, ...]:
    return (*_stream(spec.stream), *((f"$KV.{spec.bucket}.>",) if write else ()))


def _objects(spec: streams.ObjectsSpec) -> tuple[str, ...]:
    """An object store's stream, its chunk and meta subjects, and purging its chunks by subject."""
    return (*_stream(spec.stream), f"$O.{spec.bucket}.>", f"$JS.API.STREAM.PURGE.{spec.stream}")


_ANSWERS = f"{subjects.reply_prefix('*')}.*"
"""Every edge's answer subjects."""
_WORKERS_JOBS = subjects.worker_jobs("*")
_WORKERS_CANCELS = subjects.worker_cancel("*")


def role(name: str) -> Role:
    """The role of an identity name: a service, ``worker-<id>``, or the operator."""
    if name == "edge":
        return Role(
            publish=(
                subjects.GUARD,
                _WORKERS_CANCELS,
                subjects.METERING_QUERY,
                subjects.USAGE,
                subjects.AUDIT,
                subjects.LIMITS,
                subjects.LEASES,
                *_stream(streams.LEASES.name),
                *_stream(streams.USAGE.name),
                *_stream(streams.AUDIT.name),
                *_stream(streams.LIMITS.name),
                *_bucket(streams.TENANTS, write=True),
                *_bucket(streams.KEYS, write=True),
                *_bucket(streams.FILE_INDEX, write=True),
                *_objects(streams.FILES),
                subjects.BATCH_LINES,
                *_stream(streams.BATCH_LINES.name),
                # NATS door batches' lines until sealed; purged by subject once in their input file.
                subjects.BATCH_INTAKE,
                *_stream(streams.BATCH_INTAKE.name),
                f"$JS.API.STREAM.PURGE.{streams.BATCH_INTAKE.name}",
                *_bucket(streams.BATCHES, write=True),
                *_bucket(streams.BATCH_RESULTS, write=True),
                *_bucket(streams.CONSOLE_SESSIONS, write=True),
                *_bucket(streams.ALERT_RULES, write=True),
                *_bucket(streams.ALERT_STATE, write=False),
            ),
            subscribe=(_ANSWERS, subjects.HEARTBEATS),
            # The files' chunks of a deleted (or aborted) upload are purged by subject; no other purge.
            deny_publish=("$JS.API.STREAM.DELETE.>",),
        )
    if name == "guard":
        return Role(
            publish=(
                subjects.SCHEDULER,
                _ANSWERS,
                subjects.SECURITY,
                *_stream(streams.SECURITY.name),
                *_bucket(streams.GUARD_HISTORY, write=True),
                *_bucket(streams.TENANTS, write=False),
            ),
            subscribe=(subjects.GUARD,),
        )
    if name == "scheduler":
        return Role(
            publish=(_WORKERS_JOBS, _WORKERS_CANCELS, _ANSWERS),
            subscribe=(subjects.SCHEDULER, subjects.HEARTBEATS, subjects.CACHE_EVENTS, subjects.PROGRESS),
            responses=True,  # "taken", to the guard that handed it a job
        )
    if name == "metering":
        return Role(
            publish=(
                *_stream(streams.USAGE.name),
                *_stream(streams.AUDIT.name),
                *_stream(streams.SECURITY.name),
                *_stream(streams.WORK.name),
                subjects.ALERTS,
                *_stream(streams.ALERTS.name),
                *_bucket(streams.ALERT_RULES, write=False),
                *_bucket(streams.ALERT_STATE, write=True),
            ),
            subscribe=(subjects.METERING_QUERY,),
            responses=True,
        )
    if name.startswith(_WORKER):
        worker_id = subjects.check_token(name.removeprefix(_WORKER))
        return Role(
            # Its records of work done go to its own subject of LLMAAS_WORK (sealed by the edge).
            publish=(
                subjects.heartbeat(worker_id),
                subjects.cache_events(worker_id),
                subjects.progress(worker_id),
                _ANSWERS,
                subjects.work(worker_id),
            ),
            subscribe=(subjects.worker_jobs(worker_id), subjects.worker_cancel(worker_id)),
            responses=True,  # "taken", to the scheduler that handed it a job
        )
    if name == OPERATOR:
        return Role(publish=(">",), subscribe=(">",), deny_publish=())
    raise ValueError(f"no NATS role named {name!r} (known: {', '.join(SERVICES)}, {OPERATOR}, worker-<id>)")


def worker(worker_id: str) -> str:
    return _WORKER + subjects.check_token(worker_id)


def inbox_prefix(public_key: str) -> str:
    """Where an identity's request replies arrive: a prefix no other identity may read."""
    return f"_INBOX_{public_key}"


def public_key(seed_file: Path) -> str:
    """The public key of the nkey seed in ``seed_file``; ValueError if it holds none."""
    return load(seed_file)[1]


def load(seed_file: Path) -> tuple[str, str]:
    """The nkey seed in ``seed_file`` and its public key; ValueError if it holds none."""
    seed = seed_file.read_bytes().strip()
    try:
        pair = nkeys.from_seed(bytearray(seed))
    except nkeys.NkeysError as exc:
        raise ValueError(f"{seed_file} holds no NATS user seed (nkey): {exc}") from None
    try:
        return seed.decode(), str(pair.public_key.decode())
    finally:
        pair.wipe()


def mint(directory: Path, name: str) -> Path:
    """The seed file of identity ``name`` in ``directory`` (mode 0600), made once."""
    role(name)  # refuse unknown names before writing anything
    path = directory / f"{name}.nk"
    if not path.exists():
        private.create(path, nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER) + b"\n")
    return path


def authorization(seed_files: Iterable[Path]) -> str:
    """The ``authorization`` block of nats-server's configuration for these identities."""

    def strings(values: Iterable[str]) -> str:
        return "[" + ", ".join(f'"{v}"' for v in values) + "]"

    users = []
    for path in sorted(seed_files):
        key = public_key(path)
        r = role(path.stem)
        subscribe = (*r.subscribe, f"{inbox_prefix(key)}.>")
        publish = f"allow: {strings(r.publish)}"
        if r.deny_publish:
            publish += f", deny: {strings(r.deny_publish)}"
        responses = "\n      allow_responses: true" if r.responses else ""
        users.append(
            f"  {{ nkey: {key}  # {path.stem}\n"
            f"    permissions: {{\n      publish: {{ {publish} }}\n"
            f"      subscribe: {{ allow: {strings(subscribe)} }}{responses}\n    }}\n  }}"
        )
    return "authorization {\n users: [\n" + "\n".join(users) + "\n ]\n}\n"
