"""Settings of a scheduler process."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmaas.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    warmup_s: float = Field(
        default=1.5, ge=0, description="after start, wait this long for heartbeats before saying 'no worker'"
    )
    retry_after_s: float = Field(
        default=5.0, gt=0, description="Retry-After sent when no worker serves a model"
    )
    placement_policy: Literal["default", "least-loaded", "llm-d", "round-robin"] = Field(
        default="default",
        description="how a worker is chosen (workers.scheduler.placement.policy); the others are baselines",
    )
    placement_weights: dict[str, float] = Field(
        default_factory=dict,
        description='scorer name -> weight, replacing the policy\'s (e.g. {"prefix_affinity": 4} for llm-d)',
    )
