"""The edges' side of the NATS door (``llmaas.nats_door``): programs that do not speak HTTP run
batches over NATS with their API keys, on the same engine as ``/v1/batches``.

Who: nats-server asks the edges who a connecting client is (auth callout). The edge checks the
token (or password) it presented as the HTTP door checks a bearer key, with the same per-address
limit on failures and the same audit, and answers with a user JWT in the door's ``TENANTS`` account
that may publish only to that key's requests (``llmaas.door.<key id>.>``) and subscribe only to its
own inbox (``_INBOX_<key id>.>``) and the events of the batches it made, for at most
``door_authorized_s`` (or the key's own expiry). When an edge's copy of the keys hears that a key was
revoked or deleted (or its tenant deleted), it closes that key's connections (the door's system
account lists them by user name, the key id, and kicks each); every request checks the key again.

What (subjects after ``llmaas.door.<key id>.``; a JSON object in, the HTTP door's JSON out, or an
OpenAI error envelope with the ``Llmaas-Status`` header):

- ``batches.create``: ``{endpoint, completion_window, metadata}``, and ``input_file_id`` for a file
  uploaded over HTTP; without it the batch takes its lines as messages:
- ``batches.<id>.lines``: one or more JSONL lines (the lines of an input file), answered once stored;
- ``batches.<id>.seal``: no more lines; the batch's input file is written and it runs;
- ``batches.<id>``, ``batches.list`` (``{after, limit}``), ``batches.<id>.cancel``;
- ``files.<id>``, ``files.<id>.content``: ``{cursor}`` → up to 1 MiB of the file, the next part's
  cursor in the ``Llmaas-Cursor`` header (none at the end).

Events: ``llmaas.events.<key id>.batches.<id>`` (the key that made it, over either door), the batch
(as ``batches.<id>`` answers) each time it changes (its status; its counts about once a second while
it runs). They are a courtesy: a client that missed one asks ``batches.<id>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import msgspec
import nkeys
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict, Field

from edge import body, pages
from edge.batches import BatchEngine
from edge.errors import error_body
from edge.gate import Gate
from edge.keys import Principal
from edge.metrics import EdgeMetrics
from edge.settings import EdgeSettings
from edge.uploads import FileDesk
from llmaas import files, identities, nats_door, natsconn, natsjwt, subjects
from llmaas.batches import BatchRecord
from llmaas.errors import InvalidRequest, LlmaasError, NotFound, RateLimited, ServerError
from llmaas.tenants import ApiKey, Tenant

log = logging.getLogger(__name__)

STATUS = "Llmaas-Status"
CURSOR = "Llmaas-Cursor"
FILE_BYTES = "Llmaas-File-Bytes"
_PART_BYTES = 1024 * 1024
"""A file's part in one answer: chunks (128 KiB, or less) until it holds this much."""
_PER_KEY = 16
"""Requests of one key served at once; more are refused (429) rather than queued behind others'."""
_AT_ONCE = 256
_SUBSCRIPTIONS = 64
_Answer = tuple[bytes, dict[str, str]]
"""An answer's body and headers (none: a 200)."""
_KICK_WAIT_S = 0.3
"""How long the door servers' lists of a key's connections are awaited."""


class _Create(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field(max_length=64)
    completion_window: str = Field(default="24h", max_length=16)
    metadata: dict[str, str] | None = None
    input_file_id: str | None = Field(default=None, max_length=64)


class _Page(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    after: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=20, ge=1, le=100)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cursor: str | None = Field(default=None, max_length=48)


def shown(record: BatchRecord) -> dict[str, Any]:
    """A batch as the door shows it: OpenAI's object, and how many lines a door batch took."""
    view = record.to_openai()
    if record.door:
        view |= {
            "receiving": record.receiving,
            "received_lines": record.received_lines,
            "received_bytes": record.received_bytes,
        }
    return view


class Door:
    def __init__(
        self,
        *,
        settings: EdgeSettings,
        gate: Gate,
        engine: BatchEngine,
        desk: FileDesk,
        metrics: EdgeMetrics,
    ) -> None:
        assert settings.door_url is not None and settings.door_identities is not None
        self.settings = settings
        self.gate = gate
        self.engine = engine
        self.desk = desk
        self.metrics = metrics
        self.identities = settings.door_identities
        self._issuer: nkeys.KeyPair | None = None
        self._nc: Client | None = None
        self._system: Client | None = None
        self._busy: dict[str, int] = {}
        self._at_once = asyncio.Semaphore(_AT_ONCE)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._events: asyncio.Queue[BatchRecord] = asyncio.Queue(maxsize=4096)

    async def open(self) -> None:
        url = self.settings.door_url
        assert url is not None
        seed = nats_door.issuer(self.identities).read_bytes().strip()
        self._issuer = nkeys.from_seed(bytearray(seed))
        ca = self.settings.nats_tls_ca
        self._nc = await natsconn.connect(
            url, "llmaas-edge-door", credentials=nats_door.seed(self.identities, "edge"), tls_ca=ca
        )
        self._system = await natsconn.connect(
            url, "llmaas-edge-door-system", credentials=nats_door.seed(self.identities, "system"), tls_ca=ca
        )
        await self._nc.subscribe(subjects.AUTH_CALLOUT, queue=subjects.AUTH_CALLOUT_QUEUE, cb=self._spawned)
        await self._nc.subscribe(subjects.DOOR, queue=subjects.DOOR_QUEUE, cb=self._spawned)
        self.engine.on_change = self._changed
        self.gate.directory.keys_copy.listeners.append(self._key_changed)
        self.gate.directory.tenants_copy.listeners.append(self._tenant_changed)
        self._spawn(self._publish_events())

    async def close(self) -> None:
        self.engine.on_change = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for nc in (self._nc, self._system):
            if nc is not None:
                await natsconn.close(nc, 2.0)

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _spawned(self, msg: Msg) -> None:
        """Each message in a task of its own (a subscription's callback runs one at a time), at most
        ``_AT_ONCE`` at once: past them the subscription's own buffer holds the rest."""
        await self._at_once.acquire()
        work = self._authorize(msg) if msg.subject == subjects.AUTH_CALLOUT else self._serve(msg)
        self._spawn(work).add_done_callback(lambda _: self._at_once.release())

    # --- who: the auth callout -------------------------------------------------------------------

    async def _authorize(self, msg: Msg) -> None:
        assert self._issuer is not None
        try:
            request = natsjwt.decode(msg.data.decode())
            asked = request["nats"]
            server_id = asked["server_id"]["id"]
            user_nkey = asked["user_nkey"]
            if request["iss"] != server_id:
                raise natsjwt.InvalidToken("not signed by the server that asks")
        except (natsjwt.InvalidToken, KeyError, TypeError, UnicodeDecodeError) as exc:
            log.warning("an authorization request the door cannot read (%s); left unanswered", exc)
            self.metrics.door_logins.labels("unreadable").inc()
            return
        options = asked.get("connect_opts") or {}
        presented = options.get("auth_token") or options.get("pass")
        source = f"nats:{(asked.get('client_info') or {}).get('host', '')}"
        try:
            principal = await self.gate.keys.identify(presented, source, "nats-door")
        except LlmaasError as exc:
            self.metrics.door_logins.labels("refused").inc()
            answer = natsjwt.authorization_response(user_nkey, server_id, error=exc.message)
        else:
            self.metrics.door_logins.labels("authorized").inc()
            user_jwt = natsjwt.encode(self._user(user_nkey, principal), self._issuer)
            answer = natsjwt.authorization_response(user_nkey, server_id, user_jwt=user_jwt)
        with contextlib.suppress(NatsError):
            await msg.respond(natsjwt.encode(answer, self._issuer).encode())

    def _user(self, user_nkey: str, principal: Principal) -> dict[str, Any]:
        key = principal.key
        until = time.time() + self.settings.door_authorized_s
        if key.expires_at is not None:
            until = min(until, key.expires_at)
        return natsjwt.user(
            user_nkey,
            name=key.id,
            account=nats_door.TENANTS,
            publish=[subjects.door(key.id)],
            subscribe=[
                f"{identities.inbox_prefix(key.id)}.>",
                subjects.batch_events(key.id),
            ],
            expires_at=int(until),
            max_subscriptions=_SUBSCRIPTIONS,
            max_payload=nats_door.MAX_PAYLOAD,
        )

    # --- revoked keys: their connections closed ----------------------------------------------------

    def _key_changed(self, key_id: str, key: ApiKey | None) -> None:
        if key is None or key.state == "revoked" or not key.usable_at(time.time()):
            self._spawn(self._kick(key_id))

    def _tenant_changed(self, name: str, tenant: Tenant | None) -> None:
        if tenant is None:
            for key in list(self.gate.directory.keys_copy.records.values()):
                if key.tenant == name:
                    self._spawn(self._kick(key.id))

    async def _kick(self, key_id: str) -> None:
        """Close every door connection of key ``key_id``, on every door server."""
        system = self._system
        if system is None or not system.is_connected:
            return  # its requests are refused all the same; its connection outlives it until its JWT ends
        inbox = system.new_inbox()
        lists: list[dict[str, Any]] = []

        async def listed(msg: Msg) -> None:
            with contextlib.suppress(ValueError):
                lists.append(json.loads(msg.data))

        sub = await system.subscribe(inbox, cb=listed)
        try:
            query = json.dumps({"user": key_id, "acc": nats_door.TENANTS, "limit": 1024}).encode()
            await system.publish(subjects.DOOR_CONNECTIONS, query, reply=inbox)
            await asyncio.sleep(_KICK_WAIT_S)
        finally:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
        for listing in lists:
            server = (listing.get("server") or {}).get("id")
            for connection in (listing.get("data") or {}).get("connections") or []:
                if not server or "cid" not in connection:
                    continue
                with contextlib.suppress(NatsError, TimeoutError):
                    kick = json.dumps({"cid": connection["cid"]}).encode()
                    await system.request(subjects.door_kick(server), kick, timeout=1.0)
                    self.metrics.door_kicks.inc()
                    log.info("closed NATS door connection %s of key %s", connection["cid"], key_id)

    # --- what: the requests ------------------------------------------------------------------------

    async def _serve(self, msg: Msg) -> None:
        parts = msg.subject.split(".")
        key_id, what = (parts[2], parts[3:]) if len(parts) > 3 else ("", [])
        name = ".".join(w if w in ("batches", "files", "create", "list", "lines", "seal", "cancel",
                                   "content") else "<id>" for w in what)  # fmt: skip
        if self._busy.get(key_id, 0) >= _PER_KEY:
            await self._answer(msg, name, _error(RateLimited(
                f"At most {_PER_KEY} requests of one key at once over the NATS door.",
                type_="requests", retry_after_s=1,
            )))  # fmt: skip
            return
        self._busy[key_id] = self._busy.get(key_id, 0) + 1
        try:
            principal = self.gate.keys.acting_for(key_id)
            answer = await self._route(principal, what, msg.data)
        except LlmaasError as exc:
            answer = _error(exc)
        except (NatsError, TimeoutError) as exc:
            log.warning("NATS door %s: %s", name, type(exc).__name__)
            answer = _error(ServerError("The platform's bus failed this request; retry it."))
        except Exception:
            log.exception("NATS door %s failed", name)
            answer = _error(ServerError("The request failed on the platform's side."))
        finally:
            left = self._busy.pop(key_id, 1) - 1
            if left:
                self._busy[key_id] = left
        await self._answer(msg, name, answer)

    async def _answer(self, msg: Msg, name: str, answer: _Answer) -> None:
        data, headers = answer
        self.metrics.door_requests.labels(name, headers.get(STATUS, "200")).inc()
        if msg.reply and self._nc is not None:
            with contextlib.suppress(NatsError):
                await self._nc.publish(msg.reply, data, headers=headers or None)

    async def _route(
        self, principal: Principal, what: list[str], data: bytes
    ) -> tuple[bytes, dict[str, str]]:
        tenant = principal.tenant.name
        engine = self.engine
        match what:
            case ["batches", "create"]:
                req = body.validate(data, _Create)
                window, metadata = req.completion_window, req.metadata
                if req.input_file_id is not None:
                    record = await engine.create(
                        principal,
                        input_file_id=req.input_file_id,
                        endpoint=req.endpoint,
                        completion_window=window,
                        metadata=metadata,
                    )
                else:
                    record = await engine.open_batch(
                        principal, endpoint=req.endpoint, completion_window=window, metadata=metadata
                    )
                return _json(shown(record))
            case ["batches", "list"]:
                query = body.validate(data, _Page) if data.strip() else _Page()
                listing = pages.page(
                    engine.of_tenant(tenant), query.after, query.limit, what="batch", ids_always=False
                )
                return _json(listing)
            case ["batches", batch_id] | ["batches", batch_id, "get"]:
                found = await engine.get(tenant, batch_id)
                if found is None:
                    raise NotFound(f"No such Batch object: {batch_id[:64]}", param="batch_id")
                return _json(shown(found))
            case ["batches", batch_id, "lines"]:
                return _json(shown(await engine.receive(tenant, batch_id, data)))
            case ["batches", batch_id, "seal"]:
                return _json(shown(await engine.seal(tenant, batch_id)))
            case ["batches", batch_id, "cancel"]:
                return _json(shown(await engine.cancel(tenant, batch_id)))
            case ["files", file_id]:
                return _json((await self._file(tenant, file_id)).to_openai())
            case ["files", file_id, "content"]:
                return await self._content(tenant, file_id, data)
        raise NotFound(
            f"No such request over the NATS door: {'.'.join(what)[:128]!r}.", code="unknown_request"
        )

    async def _file(self, tenant: str, file_id: str) -> files.FileRecord:
        record = await self.desk.store.record(tenant, file_id)
        if record is None:
            raise NotFound(f"No such File object: {file_id[:64]}", param="file_id")
        return record

    async def _content(self, tenant: str, file_id: str, data: bytes) -> _Answer:
        await self._file(tenant, file_id)
        part = body.validate(data, _Part) if data.strip() else _Part()
        try:
            cursor = files.Cursor.decode(part.cursor) if part.cursor else files.Cursor()
        except ValueError:
            raise InvalidRequest(
                "Invalid 'cursor': use the one the last part gave.", param="cursor"
            ) from None
        try:
            chunks, after, size = await self.desk.store.read_part(tenant, file_id, cursor, _PART_BYTES)
        except NotFoundError:  # a cursor past the file's chunks
            raise InvalidRequest(
                "Invalid 'cursor': use the one the last part gave.", param="cursor"
            ) from None
        headers = {FILE_BYTES: str(size)}
        if after is not None:
            headers[CURSOR] = after.encode()
        return b"".join(chunks), headers

    # --- events ------------------------------------------------------------------------------------

    def _changed(self, record: BatchRecord) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # events are a courtesy: the record is the truth
            self._events.put_nowait(record)

    async def _publish_events(self) -> None:
        while True:
            record = await self._events.get()
            nc = self._nc
            if nc is None or not nc.is_connected:
                continue
            with contextlib.suppress(NatsError):
                await nc.publish(
                    subjects.batch_events(record.token_id, record.id), msgspec.json.encode(shown(record))
                )


def _json(value: Any) -> _Answer:
    return msgspec.json.encode(value), {}


def _error(exc: LlmaasError) -> _Answer:
    headers = {STATUS: str(exc.status)}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return error_body(exc.message, exc.type, exc.param, exc.code), headers
