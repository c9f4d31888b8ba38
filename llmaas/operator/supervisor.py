"""``llmaas up``: starts NATS and each component as its own process, watches them, stops them cleanly.

Children run in their own session, so Ctrl-C reaches only the supervisor, which then signals them
(edge first, so no new work arrives), waits for them to drain, and stops NATS last. A child that
dies is restarted with backoff; a child whose supervisor is killed gets SIGTERM from the kernel
(PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from llmaas import tls
from llmaas.nats_cluster import NatsCluster
from llmaas.nats_server import NatsServer, child_environment, die_with_parent

log = logging.getLogger("llmaas.up")

MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmaas", *self.argv],
            env=child_environment(self.env),
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - single-threaded here
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        nats: NatsServer | NatsCluster | None,
        health_url: str,
        models: Sequence[str] = (),
        *,
        ready_timeout_s: float = 60.0,
        ca: Path | None = None,
        door: NatsServer | None = None,
        probes: Sequence[str] = (),
    ) -> None:
        """``ca``: the CA of the edge's certificate, when it serves HTTPS; ``door``: the NATS door's
        server (llmaas.nats_door), restarted if lost, stopped last like the bus; ``probes``: local
        URLs that answer once a service takes work (the guard's and scheduler's metrics), all of
        them before the stack is announced ready."""
        self.probes = tuple(probes)
        self.children = children
        self.nats = nats
        self.door = door
        self.health_url = health_url
        self.models = frozenset(models)
        """Models that must be served before the stack is announced ready (any, if empty)."""
        self.ready_timeout_s = ready_timeout_s
        self.ca = ca
        self._context = tls.client_context(ca) if ca is not None else None
        self._stopping = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            for child in self.children:
                child.start()
            self._announce_when_ready()
            while not self._stopping:
                self._watch(time.monotonic())
                time.sleep(0.2)
        finally:
            self._stop_all()
        return 0

    def _served(self) -> frozenset[str] | None:
        """Models the edge sees served now; None while the edge does not answer."""
        try:
            with urllib.request.urlopen(self.health_url, timeout=1, context=self._context) as response:
                return frozenset(json.loads(response.read())["models"])
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError, KeyError):
            return None

    def _announce_when_ready(self) -> None:
        started = time.monotonic()
        next_note = started + 10
        while not self._stopping and time.monotonic() - started < self.ready_timeout_s:
            served = self._served()
            if served and self.models <= served and all(map(_answers, self.probes)):
                base = self.health_url.removesuffix("/health")
                log.info(
                    "ready: %s (models: %s; console: %s/console)",
                    base + "/v1",
                    ", ".join(sorted(served)),
                    base,
                )
                log.info("API keys: `llmaas tenants create NAME`, then `llmaas keys create --tenant NAME`")
                if self.ca is not None:
                    log.info("TLS 1.3 from a local CA: clients trust %s (SSL_CERT_FILE=%s)", self.ca, self.ca)
                return
            if time.monotonic() >= next_note:
                missing = sorted(self.models - (served or frozenset()))
                if missing or not served:
                    what = f"workers to serve {', '.join(missing or ['any'])}"
                else:
                    what = "the guard and the scheduler to take jobs"
                log.info("waiting for %s (%.0f s)", what, time.monotonic() - started)
                next_note += 10
            self._watch(time.monotonic())
            time.sleep(0.2)
        if not self._stopping:
            log.warning("not ready after %.0f s; still trying (see the logs above)", self.ready_timeout_s)

    def _watch(self, now: float) -> None:
        nodes = self.nats.nodes if isinstance(self.nats, NatsCluster) else [self.nats] if self.nats else []
        for node in [*nodes, *([self.door] if self.door else [])]:
            if not node.running and not self._stopping:
                log.error("nats-server %s exited; restarting it", node.data_dir)
                node.start()
        for child in self.children:
            if child.alive or self._stopping:
                continue
            if child.restart_at is None:
                code = child.proc.returncode if child.proc else None
                child.failures = 0 if now - child.started_at > STABLE_AFTER_S else child.failures + 1
                delay = min(MAX_BACKOFF_S, 0.5 * 2**child.failures)
                log.error("%s exited with %s; restarting in %.1f s", child.name, code, delay)
                child.restart_at = now + delay
            elif now >= child.restart_at:
                child.start()

    def _stop_all(self, timeout_s: float = 15.0) -> None:
        log.info("stopping")
        for child in self.children:
            if child.alive and child.proc is not None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                child.proc.kill()
                child.proc.wait()
        if self.nats is not None:
            self.nats.stop()
        if self.door is not None:
            self.door.stop()
        log.info("stopped")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
