# One command to set up and run the demo, one to set up and run the tests.
# Everything installs into this folder: .venv (Python) and .tools (agent CLIs, via npm).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint tools bench fault-table clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tgflow demo

tools: $(STAMP)
	bash scripts/install-agent-clis.sh
	bash scripts/install-browser.sh
	bash scripts/install-sandbox.sh
	bash scripts/install-postgres.sh

# The suite in parallel: most tests wait on subprocesses, servers and browsers, so three workers
# share two cores. A module with a module-scoped server stays on one worker (--dist loadgroup,
# the groups made in tests/conftest.py); tests marked serial run afterwards, alone.
# One file for a developer, sequentially: .venv/bin/python -m pytest -q tests/run/test_node.py
TEST_WORKERS ?= 3

test: $(STAMP) tools lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not serial"
	$(BIN)/python -m pytest -q -m serial

# ruff, the layer contracts (the library never imports Prefect, stages import downwards only)
# and the type checker.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

# docs/faults.md, the table of the fault cases, from the docstrings of tests/faults/ (stdlib only).
fault-table:
	$(PY) scripts/fault_table.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .hypothesis
