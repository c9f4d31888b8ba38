"""Failed authentications per source address: throttled, and written to the audit trail in summary.

Anyone can fail to authenticate (no key is needed to try), so one audit event per failure would let
anyone grow the trail at will, and an unthrottled door lets anyone guess the admin token as fast as
the edge answers. Here, per source and window (a minute by default):

- the first failure is written at once (the one an operator looks for), later ones only counted,
  and one summary event with their count is written when the window ends;
- past ``allowed`` failures in the window, the source's authentication attempts are answered 429
  without being checked, until the window ends;
- at most ``max_sources`` sources are followed at once; failures from sources beyond that are
  counted together under the source ``*``, so memory and the trail stay bounded under a spread
  attack too.

What each edge counts is its own: N edges let N times the failures through, still bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llmaas import audit
from llmaas.audit import AuditLog
from llmaas.errors import RateLimited

OVERFLOW = "*"
"""The source that stands for every source past ``max_sources`` in a window."""


@dataclass
class _Window:
    started: float
    failures: int = 0
    throttled: int = 0
    last: audit.AuditEvent | None = None
    reasons: set[str] = field(default_factory=set)
    actors: set[str] = field(default_factory=set)


class FailedLogins:
    def __init__(
        self,
        log: AuditLog,
        *,
        window_s: float = 60.0,
        allowed: int = 20,
        max_sources: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.window_s = window_s
        self.allowed = allowed
        self.max_sources = max_sources
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_every_window())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush(everything=True)

    def check(self, source: str) -> None:
        """Raises RateLimited (429) while ``source`` is past its failures for this window."""
        window = self._windows.get(source) or (
            self._windows.get(OVERFLOW) if len(self._windows) >= self.max_sources else None
        )
        if window is None or window.failures < self.allowed:
            return
        window.throttled += 1
        retry = max(1.0, window.started + self.window_s - self._clock())
        raise RateLimited(
            "Too many failed authentications from this address: retry later.",
            type_="requests",
            retry_after_s=round(retry),
        )

    def failed(self, event: audit.AuditEvent) -> None:
        """One failure, as the event that would describe it."""
        source = event.source
        window = self._windows.get(source)
        if window is None:
            if len(self._windows) >= self.max_sources:
                source = OVERFLOW
                window = self._windows.get(OVERFLOW)
            if window is None:
                window = self._windows[source] = _Window(started=self._clock())
                self.log.record(event)  # the first of a window, at once
                window.failures = 1
                return
        window.failures += 1
        window.last = event
        if len(window.reasons) < 10:
            window.reasons.add(event.detail.get("reason", event.action)[:80])
        if len(window.actors) < 10:
            window.actors.add(event.actor)

    def flush(self, *, everything: bool = False) -> None:
        """Summaries of the windows that ended (all of them: ``everything``)."""
        now = self._clock()
        for source, window in list(self._windows.items()):
            if not everything and now - window.started < self.window_s:
                continue
            del self._windows[source]
            if window.last is None:  # one failure, already written
                continue
            detail = {
                "count": str(window.failures - 1),
                "throttled": str(window.throttled),
                "window_s": f"{self.window_s:g}",
                "reasons": "; ".join(sorted(window.reasons))[:800],
                "actors": ", ".join(sorted(window.actors)),
            }
            last = window.last
            self.log.record(
                audit.event(
                    last.actor if len(window.actors) == 1 and source != OVERFLOW else "anonymous",
                    f"{last.action}.summary",
                    last.target,
                    "denied",
                    source=source,
                    detail=detail,
                )
            )

    async def _flush_every_window(self) -> None:
        while True:
            await asyncio.sleep(min(self.window_s, 5.0))
            self.flush()
