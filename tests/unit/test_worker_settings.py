"""A worker is configured by a TOML file, flags overriding it; a typo in the file is an error."""

from pathlib import Path

import pytest

from workers.worker.app import vllm_spec
from workers.worker.settings import WorkerSettings

EXAMPLE = Path(__file__).parents[2] / "infra" / "workers" / "gpu-example.toml"


def test_the_shipped_example_loads_and_flags_override_it() -> None:
    settings = WorkerSettings.load(EXAMPLE, max_model_len=8192)
    assert (settings.engine, settings.model, settings.reasoning_parser) == ("vllm", "qwen3:8b", "qwen3")
    assert settings.max_model_len == 8192
    spec = vllm_spec(settings)
    assert spec.path == "/srv/models/Qwen3-8B" and spec.extra == {"enable_prefix_caching": True}
    assert spec.tensor_parallel_size == 1 and spec.gpu_memory_utilization == 0.9


def test_an_unknown_key_names_itself(tmp_path: Path) -> None:
    config = tmp_path / "w.toml"
    config.write_text('engine = "vllm"\nmodle = "qwen3:8b"\n')
    with pytest.raises(ValueError, match=r"unknown setting.*modle"):
        WorkerSettings.load(config)


def test_a_model_outside_the_builtin_ones_needs_a_path() -> None:
    with pytest.raises(ValueError, match="model_path is required"):
        vllm_spec(WorkerSettings(engine="vllm", model="mistral:7b"))
