"""Builds a worker service from its settings (no work at import)."""

from __future__ import annotations

import logging

from workers.engines.base import Engine
from workers.engines.simulated import SimulatedConfig, SimulatedEngine
from workers.engines.synthetic import SyntheticConfig, SyntheticEngine
from workers.engines.vllm_engine import VllmEngine, VllmSpec
from workers.models import local
from workers.simulation.profiles import PROFILES
from workers.worker.metrics import WorkerMetrics
from workers.worker.service import WorkerService
from workers.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def vllm_spec(settings: WorkerSettings) -> VllmSpec:
    """The engine spec, resolving the built-in local models when no path is given."""
    path, task, dtype = settings.model_path, settings.task, settings.dtype
    if path is None:
        if settings.model == local.CHAT_MODEL:
            model = local.chat_model(settings.data_dir.expanduser(), progress=log.info)
        elif settings.model == local.EMBEDDING_MODEL:
            model = local.embedding_model()
            # 22 M parameters: full precision costs nothing and avoids half-precision CPU kernels.
            dtype = "float32" if dtype == "auto" else dtype
        else:
            raise ValueError(
                f"model_path is required for '{settings.model}' (built in: "
                f"{local.CHAT_MODEL}, {local.EMBEDDING_MODEL})"
            )
        path, task = str(model.path), model.task
    return VllmSpec(
        model=settings.model,
        path=path,
        task=task,
        tensor_parallel_size=settings.tensor_parallel_size,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        dtype=dtype,
        enforce_eager=settings.enforce_eager,
        cpu_kv_cache_gb=settings.cpu_kv_cache_gb,
        reasoning_parser=settings.reasoning_parser,
        tool_parser=settings.tool_parser,
        extra=settings.engine_args,
    )


def build_engine(settings: WorkerSettings) -> Engine:
    if settings.engine == "vllm":
        return VllmEngine(vllm_spec(settings))
    if settings.engine == "simulated":
        return SimulatedEngine(
            SimulatedConfig(
                model=settings.simulated_model,
                perf=PROFILES[settings.simulated_profile],
                completion_tokens=settings.completion_tokens,
                time_scale=settings.simulated_time_scale,
            )
        )
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
