"""Settings of a scheduler process."""

from __future__ import annotations

from pydantic import Field

from llmaas.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    warmup_s: float = Field(
        default=1.5, ge=0, description="after start, wait this long for heartbeats before saying 'no worker'"
    )
    retry_after_s: float = Field(
        default=5.0, gt=0, description="Retry-After sent when no worker serves a model"
    )
