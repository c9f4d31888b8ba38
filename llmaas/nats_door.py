"""The NATS door: a nats-server of its own, where tenants' programs connect with their API keys.

Tenants never reach the platform's bus. The door server has three accounts:

- ``EDGES``: the edges (one shared identity). They answer the door's requests (``llmaas.door.>``)
  and publish batches' progress (``llmaas.events.>``); both are exported to ``TENANTS``;
- ``TENANTS``: every tenant connection. It holds nothing but those two imports, and no JetStream;
  a connection's own permissions narrow it to its key's subjects (``llmaas.door.<key id>.>``), its
  batches' events (``llmaas.events.<key id>.>``) and its own inbox (``_INBOX_<key id>``);
- ``SYSTEM``: one identity that may list connections and kick one (a revoked key's), nothing else.

A tenant connects with its API key as the token (or as the password); nats-server asks the edges
(auth callout, ``$SYS.REQ.USER.AUTH``), and an edge answers with a user JWT signed by the door's
issuer key, in ``TENANTS``, or a refusal (edge/door). Only ``TENANTS`` users are delegated to the
callout (``allowed_accounts``): the edges and the system identity authenticate with their nkeys as
configured, so the door works while no edge runs, except for tenants. The callout's settings cannot
be reloaded by nats-server; nothing here changes after start.

Identities in ``<dir>/identities``: ``edge.nk`` and ``system.nk`` (user seeds), ``issuer.nk`` (the
account seed that signs tenants' JWTs; the edges hold it), each 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

import nkeys

from llmaas import identities, private, subjects
from llmaas.nats_server import NatsServer
from llmaas.tls import LocalPki, client_context

EDGES = "EDGES"
TENANTS = "TENANTS"
SYSTEM = "SYSTEM"
MAX_PAYLOAD = 4 * 1024 * 1024
"""The largest message a tenant may send (a chunk of batch lines) or receive."""
DEFAULT_PORT = 4223


def seed(directory: Path, name: str, prefix: int = nkeys.PREFIX_BYTE_USER) -> Path:
    """The seed file ``<directory>/identities/<name>.nk`` of the door's identity ``name``, made once."""
    path = directory / "identities" / f"{name}.nk"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        private.create(path, nkeys.encode_seed(os.urandom(32), prefix) + b"\n")
    return path


def issuer(directory: Path) -> Path:
    return seed(directory, "issuer", nkeys.PREFIX_BYTE_ACCOUNT)


def _strings(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def authorization(directory: Path) -> str:
    """The door server's accounts and its auth callout (see the module's text)."""
    edge = identities.public_key(seed(directory, "edge"))
    system = identities.public_key(seed(directory, "system"))
    signer = identities.public_key(issuer(directory))
    system_rights = [subjects.door_kick("*"), subjects.DOOR_CONNECTIONS]
    return (
        f"system_account: {SYSTEM}\n"
        "accounts {\n"
        f"  {SYSTEM} {{ users: [ {{ nkey: {system}, permissions: {{\n"
        f"    publish: {{ allow: {_strings(system_rights)} }}\n"
        f'    subscribe: {{ allow: ["{identities.inbox_prefix(system)}.>"] }} }} }} ] }}\n'
        f"  {EDGES} {{\n    users: [ {{ nkey: {edge} }} ]\n"
        f'    exports: [ {{ service: "{subjects.DOOR}" }}, {{ stream: "{subjects.DOOR_EVENTS}" }} ]\n  }}\n'
        f"  {TENANTS} {{ imports: [\n"
        f'    {{ service: {{ account: {EDGES}, subject: "{subjects.DOOR}" }} }}\n'
        f'    {{ stream: {{ account: {EDGES}, subject: "{subjects.DOOR_EVENTS}" }} }}\n  ] }}\n'
        "}\n"
        "authorization {\n  timeout: 3\n  auth_callout {\n"
        f"    issuer: {signer}\n    account: {EDGES}\n    auth_users: [ {edge} ]\n"
        f"    allowed_accounts: [ {TENANTS} ]\n  }}\n}}\n"
    )


class DoorServer(NatsServer):
    """The door's nats-server (no JetStream: tenants store nothing on it), under ``data_dir``."""

    jetstream = False
    max_payload = MAX_PAYLOAD

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        tls: LocalPki | None = None,
    ) -> None:
        """``tls``: tenants connect with TLS 1.3 only, to a certificate of that PKI (never with a
        client certificate: their API key is who they are)."""
        super().__init__(data_dir, host=host, port=port, tls=tls)

    def _authorization(self) -> str:
        return authorization(self.data_dir)

    def connect_options(self, name: str = "edge") -> dict[str, object]:
        """``nats.connect`` keyword arguments for the door's identity ``name`` (edge, system)."""
        options: dict[str, object] = {}
        path = seed(self.data_dir, name)
        if self.tls is not None:
            options["tls"] = client_context(self.tls.ca)
        return options | {
            "nkeys_seed": str(path),
            "inbox_prefix": identities.inbox_prefix(identities.public_key(path)),
        }
