"""Settings of a guard process."""

from __future__ import annotations

from llmaas.settings import ServiceSettings


class GuardSettings(ServiceSettings):
    guard_enabled: bool = True
    """Prompt screening; off only for a whole deployment (LLMAAS_GUARD_ENABLED=false) until per-tenant
    switches arrive with tenants."""
