"""Each tenant's share of a guard replica: jobs screened at once, jobs waiting, bytes held.

Without it, one tenant's burst of huge prompts fills every screening slot and the memory behind
them, and another tenant's two-word prompt waits behind it until the edge gives up (503). Here a
tenant screens at most ``running`` jobs at a time, holds at most ``waiting`` more, and at most
``max_bytes`` of jobs in all; past that its new jobs are answered 429 at once. The replica-wide
slots (``guard_concurrency``) stay far above one tenant's share, so other tenants always find
room.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from llmaas.errors import RateLimited


@dataclass
class _Share:
    turns: asyncio.Semaphore
    jobs: int = 0
    bytes: int = 0


class TenantShares:
    def __init__(self, *, running: int, waiting: int, max_bytes: int) -> None:
        self.running = running
        self.waiting = waiting
        self.max_bytes = max_bytes
        self._shares: dict[str, _Share] = {}

    @contextlib.asynccontextmanager
    async def turn(self, tenant: str, size: int) -> AsyncIterator[None]:
        """Waits for one of ``tenant``'s screening turns; RateLimited at once past its share."""
        share = self._shares.get(tenant)
        if share is None:
            share = self._shares[tenant] = _Share(asyncio.Semaphore(self.running))
        if share.jobs >= self.running + self.waiting or (share.jobs and share.bytes + size > self.max_bytes):
            raise RateLimited(
                "Too many prompts of this tenant are being screened at once; retry shortly.",
                type_="requests",
                retry_after_s=1,
            )
        share.jobs += 1
        share.bytes += size
        try:
            async with share.turns:
                yield
        finally:
            share.jobs -= 1
            share.bytes -= size
            if not share.jobs:
                del self._shares[tenant]

    def held(self, tenant: str) -> tuple[int, int]:
        """(jobs, bytes) ``tenant`` holds now."""
        share = self._shares.get(tenant)
        return (share.jobs, share.bytes) if share else (0, 0)
