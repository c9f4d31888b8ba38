# The two commands a newcomer needs: `make run` (set up and start the platform) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv with the project and its dev tools

run: install  ## start the whole stack on this machine (llmaas up)
	$(BIN)/llmaas up

lint: install  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install lint  ## lint, then every test against a real nats-server
	$(BIN)/pytest

bench: install  ## pipeline overhead versus the engine called directly
	$(BIN)/python -m bench.overhead

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
