"""Settings of one engine worker process."""

from __future__ import annotations

import os
import re
import secrets
import socket
from typing import Literal

from pydantic import Field, field_validator

from llmaas import subjects
from llmaas.settings import ServiceSettings


def default_worker_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40]
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


class WorkerSettings(ServiceSettings):
    worker_id: str = Field(default_factory=default_worker_id)
    engine: Literal["synthetic"] = "synthetic"
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    drain_timeout_s: float = Field(
        default=10.0, ge=0, description="how long a stopping worker lets streams end"
    )

    # synthetic engine
    chat_model: str = "synthetic-chat"
    embedding_model: str = "synthetic-embed"
    tokens_per_s: float = Field(default=200.0, ge=0)
    ttft_ms: float = Field(default=0.0, ge=0)
    completion_tokens: int = Field(default=32, ge=1)
    capacity: int = Field(default=256, ge=1)

    @field_validator("worker_id")
    @classmethod
    def _subject_safe(cls, value: str) -> str:
        return subjects.check_token(value)
