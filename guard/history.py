"""What each API token sent lately, for the behaviour layer: one small record per token.

Two stores with the same semantics (a record expires ``ttl_s`` after its last change):

- ``KvHistory``: a NATS KV bucket with memory storage, shared by every guard replica, so the answer
  does not depend on which replica receives a prompt. Memory storage means the prompts' fragments
  never reach a disk; the bucket's TTL means they are gone minutes after a token falls silent.
  Replicas update a record with compare-and-set and redo the step when another got there first.
  A replica remembers the records it wrote and read, and writes on that guess at once: when the
  token's previous prompt came through the same replica (always, with one replica), a prompt
  costs one round trip (~0.25 ms); when another replica wrote since, the write fails, and the step
  is redone on the record read from KV, so the answer never depends on the guess. (Following the
  bucket with a watch would save that read but make every replica decode every replica's writes:
  CPU that grows with the fleet instead of with the replica's own traffic.)
  Within a replica, one token's prompts take turns (a lock per token), so concurrent prompts of a
  token (a burst of 100 identical ones) contend only across replicas, where each round of writes
  has a winner: with at most ``_ATTEMPTS`` replicas every prompt is recorded, none slips through.
- ``MemoryHistory``: a dict, for ``llmaas guard eval`` (offline, one process).

The key of a record is a hash of the token id, so any id (a batch publisher's included) is a valid
KV key and the bucket's listing shows no ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from llmaas import streams

BUCKET = streams.GUARD_HISTORY.bucket

T = TypeVar("T")


class Record(msgspec.Struct, frozen=True, kw_only=True):
    tails: tuple[str, ...] = ()
    """The ends of the token's last prompts (de-obfuscated, a few hundred characters each)."""
    last: str = ""
    """A digest of the last prompt (never its text)."""
    repeats: int = 0
    """How many prompts in a row were identical to the last one, the last one included."""


Step = Callable[[Record], tuple[T, Record]]
"""Reads a token's record, returns an answer and the record to store in its place."""


class HistoryUnavailable(Exception):
    """The store could not be read or written (or stayed contended); the step was not recorded."""


class History(Protocol):
    async def apply(self, owner: str, step: Step[T]) -> T: ...


def record_key(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record)


class MemoryHistory:
    def __init__(self, ttl_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._records: dict[str, tuple[float, Record]] = {}

    async def apply(self, owner: str, step: Step[T]) -> T:
        now = self.clock()
        key = record_key(owner)
        stored = self._records.get(key)
        record = stored[1] if stored is not None and now - stored[0] < self.ttl_s else Record()
        answer, updated = step(record)
        self._records[key] = (now, updated)
        return answer


class KvHistory:
    _ATTEMPTS = 16

    def __init__(self, ttl_s: float = 600.0, policy: streams.Policy = streams.DEFAULT) -> None:
        self.ttl_s = ttl_s
        self.policy = policy
        self._kv: KeyValue | None = None
        # key -> (when, record, revision): what this replica last wrote or read of each record.
        self._seen: dict[str, tuple[float, Record, int]] = {}
        self._swept = time.monotonic()
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}  # key -> (lock, prompts holding it)

    async def attach(self, js: JetStreamContext) -> None:
        """Create the bucket if needed (memory storage, ``ttl_s``) and use it.

        Called again when NATS comes back: a restarted server has lost its memory streams, and the
        bucket is created anew, empty (histories restart; the stateless layers never stopped)."""
        spec = dataclasses.replace(streams.GUARD_HISTORY, ttl_s=self.ttl_s)
        self._kv = await streams.ensure_bucket(js, spec, self.policy)
        self._seen.clear()

    async def apply(self, owner: str, step: Step[T]) -> T:
        key = record_key(owner)
        lock, users = self._turns.get(key) or (asyncio.Lock(), 0)
        self._turns[key] = (lock, users + 1)
        try:
            async with lock:
                return await self._apply(key, step)
        finally:
            lock, users = self._turns[key]
            if users == 1:
                del self._turns[key]
            else:
                self._turns[key] = (lock, users - 1)

    async def _apply(self, key: str, step: Step[T]) -> T:
        assert self._kv is not None, "attach() first"
        try:
            record, revision = self._local(key)
            for _ in range(self._ATTEMPTS):
                answer, updated = step(record)
                try:
                    if revision is None:
                        written = await self._kv.create(key, _encoder.encode(updated))
                    else:
                        written = await self._kv.update(key, _encoder.encode(updated), last=revision)
                except KeyWrongLastSequenceError:
                    # Another replica recorded a prompt of this token, or the copy is behind: redo
                    # the step on the record as it is in KV.
                    record, revision = await self._read(key)
                    continue
                self._remember(key, updated, written)
                return answer
        except (NatsError, TimeoutError, msgspec.DecodeError) as exc:
            raise HistoryUnavailable(type(exc).__name__) from None
        raise HistoryUnavailable(f"record still contended after {self._ATTEMPTS} attempts")

    def _local(self, key: str) -> tuple[Record, int | None]:
        self._forget_expired()
        seen = self._seen.get(key)
        if seen is None or time.monotonic() - seen[0] >= self.ttl_s:
            return Record(), None
        return seen[1], seen[2]

    async def _read(self, key: str) -> tuple[Record, int | None]:
        assert self._kv is not None
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:  # never seen, expired, or deleted: the guess is stale too
            self._seen.pop(key, None)
            return Record(), None
        record = _decoder.decode(entry.value) if entry.value else Record()
        assert entry.revision is not None
        self._remember(key, record, entry.revision)
        return record, entry.revision

    def _remember(self, key: str, record: Record, revision: int) -> None:
        # Reads and writes of one key take turns (its lock), so the latest one is the newest.
        self._seen[key] = (time.monotonic(), record, revision)

    def _forget_expired(self) -> None:
        # The bucket's TTL drops records by itself; drop this replica's guesses alike, in one sweep
        # a minute rather than on every prompt.
        now = time.monotonic()
        if now - self._swept < 60:
            return
        self._swept = now
        for key in [k for k, (at, _, _) in self._seen.items() if now - at >= self.ttl_s]:
            del self._seen[key]
