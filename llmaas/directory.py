"""The tenant directory: tenants and API keys in NATS KV, and a local copy every edge keeps current.

Reads never leave the process: authentication is a dict lookup in the copy, which a KV watch keeps
up to date within milliseconds of any change (revocations included) on every edge. When NATS is
down the copy simply stops changing, so keys an edge already knew keep working; when NATS comes
back the copy is rebuilt from a fresh snapshot (which also catches what changed meanwhile). On a
cluster, a watch can also go silent without any disconnection (the bucket's leader lost with the
watch's consumer on it): every ``CHECK_S`` each bucket's last sequence is compared with what the
copy has seen, and a copy behind it on two checks in a row is rebuilt the same way.
Writes (the admin API's) go to KV with compare-and-set, so two administrators cannot lose an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import InvalidKeyError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from llmaas import retry, streams, tenants
from llmaas.tenants import ApiKey, Tenant

log = logging.getLogger(__name__)

CHECK_S = 2.0

TENANTS_BUCKET = streams.TENANTS.bucket
KEYS_BUCKET = streams.KEYS.bucket

R = TypeVar("R", Tenant, ApiKey)


class Conflict(Exception):
    """The record changed (or appeared) since it was read; the write was not made."""


class StoreUnavailable(Exception):
    """The KV store could not be reached."""


class Missing(Exception):
    """No tenant or key has that name (or id)."""


class _Copy(Generic[R]):
    """One bucket's records, kept current by a watch (writes read the record fresh from KV)."""

    def __init__(self, kind: type[R]) -> None:
        self.decoder: msgspec.json.Decoder[R] = msgspec.json.Decoder(kind)
        self.records: dict[str, R] = {}
        self.revision = 0
        """The bucket's last sequence this copy has seen."""
        self.listeners: list[Callable[[str, R | None], None]] = []
        """Told of each change seen live (the record, None once deleted): the NATS door closes a
        revoked key's connections."""


class Directory:
    def __init__(self) -> None:
        self.tenants_copy: _Copy[Tenant] = _Copy(Tenant)
        self.keys_copy: _Copy[ApiKey] = _Copy(ApiKey)
        self._kv: dict[str, KeyValue] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._resyncs: list[asyncio.Event] = []

    # --- lifecycle -------------------------------------------------------------------------------

    async def open(self, nc: Client, policy: streams.Policy = streams.DEFAULT, *, keys: bool = True) -> None:
        """Create the buckets if needed and start watching them (returns once they are loaded).

        ``keys=False`` follows the tenants only (the guard needs their switches, not the keys, and
        its NATS identity may not read them)."""
        js = nc.jetstream()
        for spec in (streams.TENANTS, streams.KEYS) if keys else (streams.TENANTS,):
            self._kv[spec.bucket] = await streams.ensure_bucket(js, spec, policy)
        ready = [asyncio.Event(), asyncio.Event()]
        self._resyncs = [asyncio.Event(), asyncio.Event()]
        self._tasks = [
            asyncio.create_task(
                self._follow(self._kv[TENANTS_BUCKET], self.tenants_copy, ready[0], self._resyncs[0])
            )
        ]
        if keys:
            self._tasks.append(
                asyncio.create_task(
                    self._follow(self._kv[KEYS_BUCKET], self.keys_copy, ready[1], self._resyncs[1])
                )
            )
        await asyncio.gather(*(event.wait() for event in ready[: len(self._tasks)]))

    def resync(self) -> None:
        """Rebuild the copy from a fresh snapshot (called when the NATS connection comes back)."""
        for event in self._resyncs:
            event.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(
        self, kv: KeyValue, copy: _Copy[R], ready: asyncio.Event, resync_wanted: asyncio.Event
    ) -> None:
        check = asyncio.create_task(self._check(kv, copy, ready, resync_wanted))
        try:
            while True:
                try:
                    await self._watch(kv, copy, ready, resync_wanted)
                except (NatsError, TimeoutError) as exc:
                    log.warning("watching %s failed (%s); retrying", kv._name, type(exc).__name__)
                    await asyncio.sleep(0.5)
        finally:
            check.cancel()

    @staticmethod
    async def _check(
        kv: KeyValue, copy: _Copy[R], ready: asyncio.Event, resync_wanted: asyncio.Event
    ) -> None:
        """Rebuild a copy whose watch went silent while the bucket moved on."""
        behind_at: int | None = None
        while True:
            await asyncio.sleep(CHECK_S)
            if not ready.is_set():
                continue
            try:
                last = (await kv.status()).stream_info.state.last_seq
            except (NatsError, TimeoutError):
                continue  # unreachable: the reconnection resyncs
            if last <= copy.revision:
                behind_at = None
            elif behind_at is not None and copy.revision <= behind_at:
                log.warning(
                    "the watch of %s went silent (at %d of %d); rebuilding", kv._name, copy.revision, last
                )
                resync_wanted.set()
                behind_at = None
            else:
                behind_at = copy.revision

    async def _watch(
        self, kv: KeyValue, copy: _Copy[R], ready: asyncio.Event, resync_wanted: asyncio.Event
    ) -> None:
        watcher = await kv.watchall()
        resync = asyncio.ensure_future(resync_wanted.wait())
        try:
            # Filled from the snapshot, then swapped in whole; later changes land in it in place.
            records: dict[str, R] = {}
            while True:
                update = asyncio.ensure_future(watcher.updates(timeout=None))  # type: ignore[no-untyped-call]
                done, _ = await asyncio.wait({update, resync}, return_when=asyncio.FIRST_COMPLETED)
                if resync in done:
                    update.cancel()
                    resync_wanted.clear()
                    return  # the caller starts a fresh watch, hence a fresh snapshot
                entry = update.result()
                if entry is None:  # the snapshot is complete: switch to it, then apply changes live
                    copy.records = records
                    ready.set()
                    continue
                copy.revision = max(copy.revision, entry.revision or 0)
                before = copy.records.get(entry.key)
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    records.pop(entry.key, None)
                else:
                    try:
                        records[entry.key] = copy.decoder.decode(entry.value)
                    except msgspec.DecodeError:
                        log.error("unreadable record %s in %s; ignored", entry.key, kv._name)
                after = records.get(entry.key)
                if ready.is_set() and after != before:  # a rebuilt copy tells only what changed
                    for listener in copy.listeners:
                        listener(entry.key, after)
        finally:
            resync.cancel()
            with contextlib.suppress(NatsError, TimeoutError):
                await watcher.stop()  # type: ignore[no-untyped-call]

    # --- reads -----------------------------------------------------------------------------------

    def tenant(self, name: str) -> Tenant | None:
        return self.tenants_copy.records.get(name)

    def key(self, key_id: str) -> ApiKey | None:
        return self.keys_copy.records.get(key_id)

    async def fetch_key(self, key_id: str) -> ApiKey | None:
        """A key that is not (yet) in the copy, read from KV; raises StoreUnavailable."""
        try:
            entry = await self._kv[KEYS_BUCKET].get(key_id)
        except (KeyNotFoundError, InvalidKeyError):  # a name that cannot be a KV key names nothing
            return None
        except (NatsError, TimeoutError) as exc:
            raise StoreUnavailable(str(exc)) from None
        if not entry.value:
            return None
        key: ApiKey = self.keys_copy.decoder.decode(entry.value)
        return key

    # --- writes (admin) --------------------------------------------------------------------------

    async def create_tenant(self, tenant: Tenant) -> None:
        await self._create(TENANTS_BUCKET, tenant.name, tenant)

    async def create_key(self, key: ApiKey) -> None:
        await self._create(KEYS_BUCKET, key.id, key)

    async def issue_key(
        self,
        *,
        tenant: str,
        name: str,
        models: list[str],
        expires_at: float | None,
        rotate_every_s: float | None,
        grace_s: float = tenants.DEFAULT_GRACE_S,
        predecessor: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key, stored; returns it with its secret (to show once, never to store)."""
        key_id, presented, sha = tenants.mint_key()
        key = ApiKey(
            id=key_id,
            tenant=tenant,
            name=name,
            secret_sha256=sha,
            created_at=time.time(),
            models=models,
            expires_at=expires_at,
            rotate_every_s=rotate_every_s,
            grace_s=grace_s,
            predecessor=predecessor,
        )
        await self.create_key(key)
        return key, presented

    async def rotate_key(
        self, key_id: str, *, grace_s: float, old_secret: str | None = None
    ) -> tuple[ApiKey, str]:
        """Issue the successor of ``key_id`` (same tenant, models, lifetime and schedule) and let the
        old key live ``grace_s`` more. With ``old_secret`` (automatic rotation), the successor is
        also sealed into the old key's record for its holder to collect.

        Raises Missing (no such key), Conflict (revoked, expired or already rotated: exactly one
        rotation wins when several edges try at once) and StoreUnavailable.
        """
        old = self.key(key_id) or await self.fetch_key(key_id)
        now = time.time()
        if old is None:
            raise Missing(key_id)
        if not old.usable_at(now) or old.successor:
            raise Conflict(key_id)
        lifetime = old.expires_at - old.created_at if old.expires_at else None
        new, presented = await self.issue_key(
            tenant=old.tenant,
            name=old.name,
            models=old.models,
            expires_at=now + lifetime if lifetime else None,
            rotate_every_s=old.rotate_every_s,
            grace_s=old.grace_s,
            predecessor=old.id,
        )
        sealed = tenants.seal_successor(old_secret, presented) if old_secret else None

        def retire(k: ApiKey) -> ApiKey:
            if k.successor or k.state != "active":
                raise Conflict(key_id)
            ends = now + grace_s if k.expires_at is None else min(k.expires_at, now + grace_s)
            return msgspec.structs.replace(k, successor=new.id, expires_at=ends, sealed_successor=sealed)

        try:
            await self.change_key(key_id, retire)
        except Conflict:
            # Another rotation won: this successor must never work.
            await self.change_key(new.id, lambda k: msgspec.structs.replace(k, state="revoked"))
            raise
        return new, presented

    async def change_tenant(self, name: str, change: Callable[[Tenant], Tenant]) -> Tenant:
        return await self._change(TENANTS_BUCKET, name, self.tenants_copy, change)

    async def change_key(self, key_id: str, change: Callable[[ApiKey], ApiKey]) -> ApiKey:
        return await self._change(KEYS_BUCKET, key_id, self.keys_copy, change)

    async def _create(self, bucket: str, name: str, record: Tenant | ApiKey) -> None:
        try:
            await self._kv[bucket].create(name, msgspec.json.encode(record))
        except KeyWrongLastSequenceError:
            raise Conflict(name) from None
        except (NatsError, TimeoutError) as exc:
            raise StoreUnavailable(str(exc)) from None

    async def _change(self, bucket: str, name: str, copy: _Copy[R], change: Callable[[R], R]) -> R:
        """Read the record fresh, apply ``change``, write it back unless someone else wrote first."""
        kv = self._kv[bucket]

        async def attempt() -> R:
            try:
                entry = await kv.get(name)
            except (KeyNotFoundError, InvalidKeyError):  # a name that cannot be a KV key names nothing
                raise Missing(name) from None
            except (NatsError, TimeoutError) as exc:
                raise StoreUnavailable(str(exc)) from None
            if not entry.value:
                raise Missing(name)
            updated = change(copy.decoder.decode(entry.value))
            try:
                await kv.update(name, msgspec.json.encode(updated), last=entry.revision)
            except KeyWrongLastSequenceError:
                raise  # someone else wrote first: read again, change again
            except (NatsError, TimeoutError) as exc:
                raise StoreUnavailable(str(exc)) from None
            return updated

        try:
            return await retry.retried(
                attempt, on=KeyWrongLastSequenceError, backoff=retry.AT_ONCE, attempts=5
            )
        except KeyWrongLastSequenceError:
            raise Conflict(name) from None
