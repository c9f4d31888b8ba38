"""Tenants' files (batch input, later batch output) in JetStream: the bytes in the NATS object store,
one index record per file in a KV bucket, both kept 7 days and encrypted at rest like every stream.

Names carry the tenant (object ``<tenant>/<file id>``, index key ``<tenant>.<file id>``), so a
caller reaches a file only through its own tenant's index. Bytes move with bounded memory both ways:
an upload is handed to nats-py's object store through a small pipe (its ``put`` reads a file-like
object in a thread), and a download reads one chunk at a time by direct get, so a slow reader holds
one chunk, never the file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import queue
import secrets
from collections.abc import AsyncIterator

import msgspec
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from llmaas import streams

PURPOSES = ("batch", "batch_output")


class FileRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One file as OpenAI's File object shows it, plus what batches need to know of it."""

    id: str
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    lines: int = 0
    """Requests in it (non-empty lines), for a batch input file."""

    def to_openai(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


_record = msgspec.json.Decoder(FileRecord)


def new_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def object_name(tenant: str, file_id: str) -> str:
    return f"{tenant}/{file_id}"


def index_key(tenant: str, file_id: str) -> str:
    return f"{tenant}.{file_id}"


class Cursor(msgspec.Struct, frozen=True):
    """Where a reading of a file stands: the stream sequence to look from, and the chunk's index."""

    seq: int = 1
    index: int = 0

    def encode(self) -> str:
        return f"{self.seq}.{self.index}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """ValueError unless ``text`` came from ``encode``."""
        seq, _, index = text.partition(".")
        cursor = cls(int(seq), int(index))
        if cursor.seq < 1 or cursor.index < 0:
            raise ValueError(text)
        return cursor


class Files:
    """One tenant-scoped view of the store, for a process that holds the files' bucket and index."""

    def __init__(self, js: JetStreamContext, objects: ObjectStore, index: KeyValue) -> None:
        self._js = js
        self.objects = objects
        self.index = index

    @classmethod
    async def open(cls, js: JetStreamContext, policy: streams.Policy) -> Files:
        objects = await streams.ensure_objects(js, streams.FILES, policy)
        return cls(js, objects, await streams.ensure_bucket(js, streams.FILE_INDEX, policy))

    async def record(self, tenant: str, file_id: str) -> FileRecord | None:
        if not file_id.startswith("file-") or not file_id[5:].isalnum():
            return None  # not one of ours, and no subject token to build from it
        try:
            entry = await self.index.get(index_key(tenant, file_id))
        except KeyNotFoundError:
            return None
        return _record.decode(entry.value) if entry.value else None

    async def records(self, tenant: str) -> list[FileRecord]:
        """Every file of ``tenant``, oldest first (in the order the index took them)."""
        return [
            _record.decode(value)
            async for _, value in streams.entries(self._js, streams.FILE_INDEX, f"{tenant}.*")
        ]

    async def add(self, tenant: str, record: FileRecord) -> None:
        """A new file's record (its id must be new)."""
        await self.index.create(index_key(tenant, record.id), msgspec.json.encode(record))

    async def put(self, tenant: str, record: FileRecord) -> None:
        """A file's record, new or written again (a batch's result files, finalized once more)."""
        await self.index.put(index_key(tenant, record.id), msgspec.json.encode(record))

    async def read(self, tenant: str, file_id: str) -> AsyncIterator[bytes]:
        """The file's bytes, one chunk at a time (by direct get: nothing buffered ahead), checked
        against the digest stored with it."""
        info = await self.objects.get_info(object_name(tenant, file_id))
        digest = hashlib.sha256()
        async for data, _ in self._chunks(info, Cursor()):
            digest.update(data)
            yield data
        expected = (info.digest or "").removeprefix("SHA-256=")
        if base64.urlsafe_b64encode(digest.digest()).decode() != expected:
            raise OSError(f"{file_id}: stored bytes do not match their digest")

    async def read_part(
        self, tenant: str, file_id: str, cursor: Cursor, least: int
    ) -> tuple[list[bytes], Cursor | None, int]:
        """The file's chunks from ``cursor`` until they hold ``least`` bytes (a client reading it in
        parts; one chunk more is at most the store's chunk size): the chunks, the cursor of the next
        part (None at the end) and the file's size."""
        info = await self.objects.get_info(object_name(tenant, file_id))
        taken: list[bytes] = []
        held = 0
        after = cursor
        async for data, at in self._chunks(info, cursor):
            taken.append(data)
            held += len(data)
            after = at
            if held >= least:
                break
        return taken, (after if after.index < (info.chunks or 0) else None), info.size or 0

    async def _chunks(self, info: ObjectInfo, cursor: Cursor) -> AsyncIterator[tuple[bytes, Cursor]]:
        subject = f"$O.{streams.FILES.bucket}.C.{info.nuid}"
        seq, index = cursor.seq, cursor.index
        while index < (info.chunks or 0):
            msg = await self._js.get_msg(
                streams.FILES.stream, seq=seq, subject=subject, next=True, direct=True
            )
            seq, index = (msg.seq or seq) + 1, index + 1
            yield msg.data or b"", Cursor(seq, index)

    async def delete(self, tenant: str, file_id: str) -> bool:
        """Remove the file (bytes and record); False if the tenant has no such file."""
        if await self.record(tenant, file_id) is None:
            return False
        with contextlib.suppress(NotFoundError):  # an upload that died before its bytes were complete
            await self.objects.delete(object_name(tenant, file_id))
        await self.index.purge(index_key(tenant, file_id))
        return True


class Pipe(io.RawIOBase):
    """Bytes handed from the event loop to a reader in a thread (nats-py's object store ``put``),
    at most ``depth`` chunks ahead of it: the writer waits when the store is slower than the caller."""

    def __init__(self, depth: int = 4) -> None:
        super().__init__()
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(depth)
        self._loop = asyncio.get_running_loop()
        self._rest = b""
        self._ended = False

    async def write_chunk(self, data: bytes) -> None:
        await self._room.acquire()
        self._chunks.put(bytes(data))

    def end(self) -> None:
        self._chunks.put(b"")

    def abort(self) -> None:
        """The reader fails (its ``put`` then removes what it stored)."""
        self._chunks.put(None)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._rest and not self._ended:
            data = self._chunks.get()
            if data is None:
                raise OSError("upload aborted")
            if data:
                self._loop.call_soon_threadsafe(self._room.release)
            self._ended = not data
            self._rest = data
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n
