"""``POST /v1/files``: a multipart upload streamed into the files' object store as it arrives, each
line checked on the way, with every upload bounded (size, a tenant's stored bytes, uploads at once).

Nothing of the file is spooled to disk or held whole: the multipart parser (python-multipart, the
one Starlette uses) is fed the request body chunk by chunk, and the file's part goes on to the store
through a pipe a few chunks deep, so a fast client waits for the store and a slow one for itself.
A file that fails a check is removed from the store before the 4xx is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
from nats.aio.client import Client
from nats.js.api import ObjectMeta
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from edge.settings import EdgeSettings
from llmaas import files, streams
from llmaas.errors import InvalidRequest, PayloadTooLarge, QuotaExceeded, RateLimited, Unavailable

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_REQUESTS = 50_000
"""Requests in one batch input file (OpenAI's limit)."""
_FIELD_BYTES = 1024


class Lines:
    """The JSON lines of a file, checked as its bytes arrive: each non-empty line one JSON object of
    at most ``max_line`` bytes, at most ``MAX_REQUESTS`` of them; a 400 names the first bad line."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.requests = 0
        self._number = 0
        self._partial = bytearray()

    def feed(self, data: bytes) -> None:
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if self._partial:
                self._partial += data[start:end]
                self._check(bytes(self._partial))
                self._partial.clear()
            else:
                self._check(data[start:end])
            start = end + 1
        self._partial += data[start:]
        if len(self._partial) > self.max_line:
            self._too_long(self._number + 1)

    def close(self) -> None:
        if self._partial:
            self._check(bytes(self._partial))
            self._partial.clear()

    def _check(self, line: bytes) -> None:
        self._number += 1
        if len(line) > self.max_line:
            self._too_long(self._number)
        if not line.strip():
            return
        try:
            value = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise InvalidRequest(
                f"Line {self._number} of the file is not valid JSON: {exc}", param="file"
            ) from None
        if not isinstance(value, dict):
            raise InvalidRequest(f"Line {self._number} of the file is not a JSON object.", param="file")
        self.requests += 1
        if self.requests > MAX_REQUESTS:
            raise InvalidRequest(
                f"Line {self._number}: a batch input file holds at most {MAX_REQUESTS} requests.",
                param="file",
            )

    def _too_long(self, number: int) -> None:
        raise InvalidRequest(
            f"Line {number} of the file is over {self.max_line} bytes, the largest request body this "
            "platform takes.",
            param="file",
        )


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    header: bytearray = field(default_factory=bytearray)
    value: bytearray = field(default_factory=bytearray)
    headers: dict[str, bytes] = field(default_factory=dict)


class FileDesk:
    """The edge's side of the files: the store (once NATS is there) and the uploads' bounds."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self._store: files.Files | None = None
        self._uploads: dict[str, int] = {}

    async def open(self, nc: Client) -> None:
        self._store = await files.Files.open(nc.jetstream(), streams.Policy.of(self.settings))

    @property
    def store(self) -> files.Files:
        if self._store is None:
            raise Unavailable("The file store is not reachable yet; retry shortly.", retry_after_s=1)
        return self._store

    @contextlib.contextmanager
    def _turn(self, tenant: str) -> Iterator[None]:
        if sum(self._uploads.values()) >= self.settings.files_uploads:
            raise Unavailable("Too many uploads at once on this edge; retry shortly.", retry_after_s=2)
        if self._uploads.get(tenant, 0) >= self.settings.files_tenant_uploads:
            raise RateLimited(
                "Too many uploads of this tenant at once: wait for the running ones.",
                type_="requests",
                retry_after_s=2,
            )
        self._uploads[tenant] = self._uploads.get(tenant, 0) + 1
        try:
            yield
        finally:
            self._uploads[tenant] -= 1
            if not self._uploads[tenant]:
                del self._uploads[tenant]

    async def upload(self, tenant: str, request: Request) -> files.FileRecord:
        s = self.settings
        kind, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise InvalidRequest(
                "Send the file as multipart/form-data with the fields 'file' and 'purpose'.", param="file"
            )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > s.files_max_bytes + 64 * 1024:
            raise self._too_large()
        with self._turn(tenant):
            store = self.store
            held = sum(r.bytes for r in await store.records(tenant))
            if held >= s.files_tenant_bytes:
                raise self._full(held)
            return await self._receive(tenant, request, store, boundary, s.files_tenant_bytes - held)

    async def _receive(
        self, tenant: str, request: Request, store: files.Files, boundary: bytes, room: int
    ) -> files.FileRecord:
        upload = _Upload(self, store, files.object_name(tenant, files.new_id()), room)
        parser = MultipartParser(boundary, upload.callbacks())
        try:
            async for body in request.stream():
                parser.write(body)
                await upload.take()
            parser.finalize()
            await upload.take()
            record = await upload.finish(self._purpose(upload.fields.get("purpose", bytearray())))
        except BaseException:
            await upload.abort()
            raise
        await store.add(tenant, record)
        return record

    @staticmethod
    def _purpose(value: bytearray) -> str:
        purpose = value.decode("utf-8", "replace")
        if purpose != "batch":
            shown = purpose if purpose else "(none)"
            raise InvalidRequest(
                f"Invalid 'purpose' {shown[:64]!r}: this platform keeps files for batches, 'batch'.",
                param="purpose",
            )
        return purpose

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The file is over {self.settings.files_max_bytes / 1024**2:.4g} MB, the most one upload may "
            "hold.",
            param="file",
        )

    def _full(self, held: int) -> QuotaExceeded:
        return QuotaExceeded(
            f"This tenant's files would hold {held} bytes, over its {self.settings.files_tenant_bytes}: "
            "delete some (DELETE /v1/files/{id}) or wait for them to expire.",
            param="file",
        )


class _Upload:
    """One upload in progress: the parser's callbacks collect what each body chunk held, ``take``
    sends the file's bytes on to the store (checking lines and sizes) and keeps the other fields."""

    def __init__(self, desk: FileDesk, store: files.Files, name: str, room: int) -> None:
        self.desk = desk
        self.store = store
        self.name = name
        self.room = room
        self.fields: dict[str, bytearray] = {}
        self.filename = "upload.jsonl"
        self.size = 0
        self.lines = Lines(desk.settings.max_body_bytes)
        self._parts: list[_Part] = []
        self._found: list[tuple[_Part, bytes]] = []
        """What the parser found in the last body chunk: (part, bytes), b"" where a part's data begins."""
        self._pipe: files.Pipe | None = None
        self._put: asyncio.Task[object] | None = None

    def callbacks(self) -> MultipartCallbacks:
        def begin() -> None:
            self._parts.append(_Part())

        def header_field(data: bytes, start: int, end: int) -> None:
            self._parts[-1].header += data[start:end]

        def header_value(data: bytes, start: int, end: int) -> None:
            self._parts[-1].value += data[start:end]

        def header_end() -> None:
            part = self._parts[-1]
            part.headers[part.header.decode("latin-1").lower()] = bytes(part.value)
            part.header.clear()
            part.value.clear()

        def headers_done() -> None:
            part = self._parts[-1]
            _, disposition = parse_options_header(part.headers.get("content-disposition", b""))
            part.name = disposition.get(b"name", b"").decode("utf-8", "replace")[:64]
            if b"filename" in disposition:
                part.filename = disposition[b"filename"].decode("utf-8", "replace")
            self._found.append((part, b""))

        def data(data: bytes, start: int, end: int) -> None:
            if end > start:
                self._found.append((self._parts[-1], data[start:end]))

        return {
            "on_part_begin": begin,
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_headers_finished": headers_done,
            "on_part_data": data,
        }

    async def take(self) -> None:
        for part, chunk in self._found:
            if part.name != "file" or part.filename is None:
                value = self.fields.setdefault(part.name, bytearray())
                value += chunk
                if len(value) > _FIELD_BYTES:
                    raise InvalidRequest(f"The field {part.name!r} is too long.", param=part.name)
            elif not chunk:
                self._begin(part.filename)
            else:
                await self._file_bytes(chunk)
        self._found.clear()

    def _begin(self, filename: str) -> None:
        if self._put is not None:
            raise InvalidRequest("Send one file per upload.", param="file")
        self.filename = filename[:255] or self.filename
        self._pipe = files.Pipe()
        put = self.store.objects.put(self.name, self._pipe, ObjectMeta(name=self.name))  # type: ignore[arg-type]
        self._put = asyncio.create_task(put)

    async def _file_bytes(self, chunk: bytes) -> None:
        assert self._pipe is not None
        self.size += len(chunk)
        settings = self.desk.settings
        if self.size > settings.files_max_bytes:
            raise self.desk._too_large()
        if self.size > self.room:
            raise self.desk._full(settings.files_tenant_bytes - self.room + self.size)
        self.lines.feed(chunk)
        await self._pipe.write_chunk(chunk)

    async def finish(self, purpose: str) -> files.FileRecord:
        if self._put is None or self._pipe is None:
            raise InvalidRequest("The upload has no 'file' field.", param="file")
        self.lines.close()
        if not self.lines.requests:
            raise InvalidRequest("The file holds no request (one JSON object per line).", param="file")
        self._pipe.end()
        self._pipe = None
        await self._put
        now = int(time.time())
        return files.FileRecord(
            id=self.name.rpartition("/")[2],
            bytes=self.size,
            created_at=now,
            expires_at=now + int(streams.FILES.ttl_s),
            filename=self.filename,
            purpose=purpose,
            lines=self.lines.requests,
        )

    async def abort(self) -> None:
        """Nothing of it stays in the store."""
        if self._pipe is not None:
            self._pipe.abort()
        if self._put is not None:
            with contextlib.suppress(Exception):
                await self._put
            with contextlib.suppress(Exception):
                await self.store.objects.delete(self.name)
