"""Several ``nats-server`` nodes on one machine forming a JetStream cluster (routes on loopback),
sharing one set of identities: what ``llmaas up --cluster 3`` and the cluster tests run.

Each node stores under ``root/node-<i>``; the routes are authenticated with a secret made once
(``root/routes.secret``, 0600), so that a local process cannot join the cluster and read its
traffic. Streams and buckets need ``LLMAAS_NATS_REPLICAS=3`` to survive a node.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats

from llmaas import identities, natsconn, ports, private, retry
from llmaas.nats_server import NatsServer, NatsServerError, Peering
from llmaas.tls import LocalPki


class NatsCluster:
    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        client_ports: tuple[int, ...] | None = None,
        tls: LocalPki | None = None,
        encrypt: bool = False,
        mutual: bool = False,
    ) -> None:
        self.root = root
        self.identities: Path = root / "identities"
        secret = private.secret(root / "routes.secret")
        routes = tuple(ports.free_port(host) for _ in range(size))
        listen = client_ports or tuple(-1 for _ in range(size))
        self.nodes = [
            NatsServer(
                root / f"node-{i}",
                host=host,
                port=listen[i],
                identities_dir=self.identities,
                tls=tls,
                encrypt=encrypt,
                mutual=mutual,
                peering=Peering(name=f"n{i}", port=routes[i], ports=routes, secret=secret),
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (what the services take as ``--nats-url``)."""
        return ",".join(node.url for node in self.nodes if node.url)

    @property
    def running(self) -> bool:
        return any(node.running for node in self.nodes)

    @property
    def logs(self) -> list[Path]:
        return [log for node in self.nodes for log in node.logs]

    def start(self, timeout_s: float = 30.0) -> str:
        """Start every node; return once JetStream answers (a meta leader is elected)."""
        for node in self.nodes:
            node.start()
        self.wait_for_jetstream(timeout_s)
        return self.url

    def node(self, name: str) -> NatsServer:
        """The node whose server name is ``name`` (as JetStream reports leaders)."""
        return next(n for n in self.nodes if n.peering is not None and n.peering.name == name)

    def grant(self, name: str) -> Path:
        """An identity's seed file, admitted by every running node."""
        path = identities.mint(self.identities, name)
        for node in self.nodes:
            if node.running:
                node.grant(name)
        return path

    def connect_options(self, name: str = identities.OPERATOR) -> dict[str, Any]:
        self.grant(name)
        return self.nodes[0].connect_options(name)

    def wait_for_jetstream(self, timeout_s: float = 30.0) -> None:
        async def ready() -> None:
            nc = await nats.connect(natsconn.servers(self.url), **self.connect_options())
            try:
                await retry.retried(
                    nc.jetstream(timeout=1).account_info,
                    on=(nats.errors.Error, TimeoutError),
                    backoff=retry.Backoff(0.2, 1.0, 0.2),
                    within_s=timeout_s,
                )
            except (nats.errors.Error, TimeoutError):
                raise NatsServerError(f"no JetStream meta leader after {timeout_s} s") from None
            finally:
                await nc.close()

        asyncio.run(ready())

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
