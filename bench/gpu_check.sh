#!/usr/bin/env bash
# The real-engine checks on a GPU machine: the same end-to-end tests CI runs on the CPU engine
# (tests/e2e/test_vllm.py), then the pipeline-versus-direct engine bench. Needs the `gpu` extra:
#   make install ACCEL=gpu && make gpu-check
# vLLM picks the GPU by itself; the workers compile CUDA graphs there (enforce_eager is CPU-only).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi -L
.venv/bin/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
.venv/bin/pytest -q tests/e2e/test_vllm.py
.venv/bin/python -m bench.real_engine "$@"
