"""Settings of a guard process."""

from __future__ import annotations

from llmaas.settings import ServiceSettings


class GuardSettings(ServiceSettings):
    pass
