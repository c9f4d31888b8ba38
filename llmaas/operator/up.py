"""``llmaas up``: the whole stack on one machine, each component its own process under a supervisor.

On the embedded NATS (no ``--nats-url``) every child gets its own NATS identity, JetStream stores
encrypted, and the streams are declared as the operator before any service starts; with ``--tls``
the edge and NATS speak TLS 1.3 only, with certificates from a local CA in the data dir; with
``--cluster 3`` the embedded NATS is three nodes (routes on loopback) and every stream has 3 replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

import nats as nats_client

from llmaas import identities, natsconn, ports, private, privileges, streams, tls
from llmaas.nats_cluster import NatsCluster
from llmaas.nats_door import DoorServer
from llmaas.nats_server import NatsServer
from llmaas.operator import admin
from llmaas.operator.supervisor import Child, Supervisor
from llmaas.settings import OperatorSettings

log = logging.getLogger("llmaas.up")


class Bus:
    """The NATS the children use: the embedded one (identities, maybe TLS) or the operator's."""

    def __init__(self, args: argparse.Namespace, data_dir: Path, pki: tls.LocalPki | None) -> None:
        self.server: NatsServer | NatsCluster | None = None
        url = args.nats_url
        replicas = args.nats_replicas or (3 if args.cluster > 1 and url is None else 1)
        mutual = bool(args.mtls and pki is not None)
        if url is None and args.cluster > 1:
            listen = None if args.nats_port < 0 else tuple(args.nats_port + i for i in range(args.cluster))
            self.server = NatsCluster(
                data_dir / "nats-cluster",
                args.cluster,
                client_ports=listen,
                tls=pki,
                encrypt=True,
                mutual=mutual,
            )
            url = self.server.start()
            log.info("%d nats-server nodes in a JetStream cluster on %s", args.cluster, url)
        elif url is None:
            self.server = NatsServer(
                data_dir, port=args.nats_port, identities=True, tls=pki, encrypt=True, mutual=mutual
            )
            url = self.server.start()
            log.info("nats-server with JetStream on %s (data in %s)", url, data_dir / "jetstream")
        if self.server is not None:
            asyncio.run(self._declare(replicas))
        self.argv = ["--nats-url", url, *(["--log-level", args.log_level] if args.log_level else [])]
        if replicas > 1:
            self.argv += ["--nats-replicas", str(replicas)]
        if pki is not None and self.server is not None:
            self.argv += ["--nats-tls-ca", str(pki.ca)]
            if mutual:
                self.argv += ["--nats-tls-cert", str(pki.client_cert), "--nats-tls-key", str(pki.client_key)]

    def identity(self, name: str) -> list[str]:
        """A child's own NATS identity on the embedded server (the seed file's path, not the seed)."""
        return [] if self.server is None else ["--nats-credentials", str(self.server.grant(name))]

    def worker_ids(self, worker_id: str) -> list[str]:
        # On our own NATS a worker's identity names its id; on another, ids stay unique per host.
        if self.server is None:
            return []
        return ["--worker-id", worker_id, *self.identity(identities.worker(worker_id))]

    async def _declare(self, replicas: int) -> None:
        """Every declared stream and bucket made or updated, as the operator, before the services
        start (their own identities may create what they use, never change it)."""
        assert self.server is not None
        nc = await nats_client.connect(natsconn.servers(self.server.url), **self.server.connect_options())
        try:
            await streams.ensure_all(nc.jetstream(), streams.Policy(replicas=replicas))
        finally:
            await nc.close()


def run(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pki = tls.local_pki(data_dir) if args.tls else None
    bus = Bus(args, data_dir, pki)
    door = _door(args, data_dir, pki) if bus.server is not None and args.nats_door_port != 0 else None
    probes: list[str] = []
    children = _services(args, bus, data_dir, pki, door, probes=probes)
    models = _workers(args, bus, data_dir, children)
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    health = f"{'http' if pki is None else 'https'}://{host}:{args.port}/health"
    ready_timeout_s = 60.0 if args.engine == "synthetic" else 300.0
    Supervisor(
        children,
        bus.server,
        health,
        models,
        ready_timeout_s=ready_timeout_s,
        ca=pki.ca if pki else None,
        door=door,
        probes=probes,
    ).run()


def _door(args: argparse.Namespace, data_dir: Path, pki: tls.LocalPki | None) -> DoorServer:
    """The NATS door's server, where tenants' programs run batches with their API keys: on the
    HTTP edge's address (it faces tenants as the edge does), never on the bus's."""
    door = DoorServer(data_dir / "door", host=args.host, port=args.nats_door_port, tls=pki)
    url = door.start()
    log.info("NATS door for tenants' batches on %s (tenants connect with their API key as token)", url)
    return door


def _services(
    args: argparse.Namespace,
    bus: Bus,
    data_dir: Path,
    pki: tls.LocalPki | None,
    door: DoorServer | None,
    *,
    probes: list[str],
) -> list[Child]:
    """The edge, guard, scheduler and metering; ``probes`` gets what must answer before ready."""
    token, created = admin.ensure_token(data_dir, OperatorSettings().admin_token)
    if created:
        # On the terminal, not through logging: log lines may be shipped elsewhere, secrets must not.
        where = admin.token_file(data_dir)
        print(f"admin token (shown once; kept in {where}, mode 0600): {token}", flush=True)
    # By the environment, not the command line: the URL may hold a password, and `ps` shows argv.
    clickhouse_url = args.clickhouse_url or os.environ.get("LLMAAS_CLICKHOUSE_URL")
    clickhouse_env = {"LLMAAS_CLICKHOUSE_URL": clickhouse_url} if clickhouse_url else {}
    if os.environ.get("LLMAAS_CLICKHOUSE_KEY"):  # the operator's key for chDB's encrypted disk
        clickhouse_env["LLMAAS_CLICKHOUSE_KEY"] = os.environ["LLMAAS_CLICKHOUSE_KEY"]
    # The edges seal jobs and metering checks seals with it; workers never see it.
    billing = {
        "LLMAAS_BILLING_KEY": private.secret(data_dir / "billing.key", os.environ.get("LLMAAS_BILLING_KEY"))
    }
    clickhouse_env |= billing
    base = bus.argv
    edge = ["edge", *base, *bus.identity("edge"), "--host", args.host, "--port", str(args.port)]
    if pki is not None:
        edge += ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
    if door is not None:
        edge += ["--door-url", door.url, "--door-identities", str(door.data_dir)]
    metering = ["metering", *base, *bus.identity("metering"), "--data-dir", str(data_dir)]
    metering += _metering_account(args.metering_user, data_dir, clickhouse_url is None)
    return [
        Child("edge", edge, env={"LLMAAS_ADMIN_TOKEN": token, **billing}),
        Child("guard", ["guard", *base, *bus.identity("guard"), *_metrics_on(probes)]),
        Child("scheduler", ["scheduler", *base, *bus.identity("scheduler"), *_metrics_on(probes)]),
        Child("metering", metering, env=clickhouse_env),
    ]


def _metrics_on(probes: list[str]) -> list[str]:
    """``--metrics-port`` on a free local port, whose URL joins ``probes``: a guard or a scheduler
    serves its metrics once it takes jobs, so the stack is announced ready only when it does (the
    first request would otherwise meet "no consumer" while the guard still reads its model)."""
    port = ports.free_port()
    probes.append(f"http://127.0.0.1:{port}/metrics")
    return ["--metrics-port", str(port)]


def _metering_account(name: str | None, data_dir: Path, embedded: bool) -> list[str]:
    """``--user ACCOUNT`` for metering when this runs as root and the account can run from here."""
    if os.geteuid() != 0:
        return []
    if name is None:
        name = "llmaas" if _exists("llmaas") else "nobody"
    account = privileges.Account.named(name)
    if account.is_root:
        log.warning("metering runs as root (--metering-user %s): tenants' SQL runs in it", name)
        return []
    where = privileges.first_blocked(account, privileges.python_paths())
    if embedded:  # chDB's directory is handed to it; the way there it must pass
        where = where or privileges.blocked(account, data_dir, read=False)
    if where is not None:
        log.warning(
            "metering runs as root: %s cannot reach %s; give it passage (chmod o+x), or keep the data "
            "dir and the installation where every account may go (e.g. /var/lib/llmaas, /opt)",
            account.name,
            where,
        )
        return []
    return ["--user", account.name]


def _exists(name: str) -> bool:
    try:
        privileges.Account.named(name)
    except ValueError:
        return False
    return True


def _workers(args: argparse.Namespace, bus: Bus, data_dir: Path, children: list[Child]) -> list[str]:
    """Append the workers to ``children``; the models that must be served before ready."""

    def worker(name: str, worker_id: str, *argv: str) -> Child:
        return Child(name, ["worker", *bus.argv, *bus.worker_ids(worker_id), *argv])

    if args.engine == "synthetic":
        log.warning(
            "serving the SYNTHETIC engine (deterministic filler text, no model): for tests and benchmarks"
        )
        children += [worker(f"worker-{i}", f"w{i}", "--engine", "synthetic") for i in range(args.workers)]
        return []
    from workers.models import local  # noqa: PLC0415 - a worker module, for vLLM only

    # Converted here, in the foreground, so that the progress shows before the workers start.
    local.chat_model(data_dir, progress=log.info)
    engine = ["--engine", "vllm", "--data-dir", str(data_dir)]
    for i in range(args.workers):
        children.append(worker(f"worker-{i}", f"w{i}", *engine, "--model", local.CHAT_MODEL))
    children.append(worker("embedder", "embedder", *engine, "--model", local.EMBEDDING_MODEL))
    return [local.CHAT_MODEL, local.EMBEDDING_MODEL]
