"""Settings of one engine worker process."""

from __future__ import annotations

import os
import re
import secrets
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from llmaas import subjects
from llmaas.settings import DEFAULT_DATA_DIR, ServiceSettings


def default_worker_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40]
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


class WorkerSettings(ServiceSettings):
    """One worker serves one model with one engine. Flags, ``LLMAAS_*`` variables or a TOML file."""

    worker_id: str = Field(default_factory=default_worker_id)
    engine: Literal["synthetic", "simulated", "vllm"] = "synthetic"
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    drain_timeout_s: float = Field(
        default=10.0, ge=0, description="how long a stopping worker lets streams end"
    )
    batch_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="share of the capacity batch lines may hold; an interactive job finding the worker "
        "full stops the youngest batch line (both put back, unbilled, to run later)",
    )

    # synthetic engine
    chat_model: str = "synthetic-chat"
    embedding_model: str = "synthetic-embed"
    tokens_per_s: float = Field(default=200.0, ge=0)
    ttft_ms: float = Field(default=0.0, ge=0)
    completion_tokens: int = Field(default=32, ge=1)
    capacity: int = Field(default=256, ge=1)

    # simulated engine (workers.engines.simulated): a vLLM-like performance model in real time
    simulated_model: str = "simulated-chat"
    simulated_profile: Literal["llama-8b-h100", "llama-70b-4xh100"] = "llama-8b-h100"
    simulated_time_scale: float = Field(
        default=1.0, gt=0, description="real seconds per simulated second (0.1: ten times faster)"
    )

    # vLLM engine: which model, from where, with which engine arguments
    model: str = Field(default="smollm2:135m", description="catalog name the model is served under")
    task: Literal["generate", "embed"] = Field(
        default="generate", description="generate (chat, completions) or embed; set for model_path"
    )
    model_path: str | None = Field(
        default=None, description="HF folder of the weights; None for the built-in local models"
    )
    data_dir: Path = Field(default=DEFAULT_DATA_DIR, description="where local models are prepared")
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_model_len: int | None = Field(default=None, ge=16)
    max_num_seqs: int | None = Field(default=None, ge=1)
    dtype: str = "auto"
    enforce_eager: bool | None = None
    cpu_kv_cache_gb: float = Field(default=1.0, gt=0, description="KV cache size on CPU engines")
    reasoning_parser: str | None = Field(
        default=None, description="vLLM reasoning parser of a reasoning model (deepseek_r1, qwen3, ...)"
    )
    tool_parser: str | None = Field(
        default=None, description="vLLM tool-call parser of the model family (hermes, llama3_json, ...)"
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="any other vLLM AsyncEngineArgs field, passed as is"
    )

    @classmethod
    def load(cls, config: Path | None, **overrides: Any) -> WorkerSettings:
        """Settings from a TOML file (keys are the field names), overridden by explicit flags."""
        values: dict[str, Any] = {}
        if config is not None:
            with config.open("rb") as fh:
                values = tomllib.load(fh)
            unknown = sorted(set(values) - set(cls.model_fields))
            if unknown:
                raise ValueError(f"{config}: unknown setting(s) {', '.join(unknown)}")
        return cls(**{**values, **overrides})

    @field_validator("worker_id")
    @classmethod
    def _subject_safe(cls, value: str) -> str:
        return subjects.check_token(value)
