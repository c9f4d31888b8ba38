"""Builds a worker service from its settings (no work at import)."""

from __future__ import annotations

from workers.engines.base import Engine
from workers.engines.synthetic import SyntheticConfig, SyntheticEngine
from workers.worker.metrics import WorkerMetrics
from workers.worker.service import WorkerService
from workers.worker.settings import WorkerSettings


def build_engine(settings: WorkerSettings) -> Engine:
    # Only the synthetic engine exists so far; the vLLM engine plugs in here.
    return SyntheticEngine(
        SyntheticConfig(
            chat_model=settings.chat_model,
            embedding_model=settings.embedding_model,
            tokens_per_s=settings.tokens_per_s,
            ttft_s=settings.ttft_ms / 1000,
            completion_tokens=settings.completion_tokens,
            capacity=settings.capacity,
        )
    )


def create_service(settings: WorkerSettings) -> WorkerService:
    return WorkerService(settings, build_engine(settings), WorkerMetrics())
