# Two commands for a fresh machine: `make demo` shows the provider at work, `make test` proves it.
# Both create .venv and install everything (Airflow included) from the package index.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The documentation site: built offline, warnings are errors (mkdocs.yml: strict). Material's
# banner about its successor is no warning of this build.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

.PHONY: demo test test-fast lint docs bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m airflow_provider_qwen.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MKDOCS)
	./scripts/install-chromium.sh
	./scripts/install-distributed.sh
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

docs: $(STAMP)
	$(MKDOCS)

bench: $(STAMP)
	$(BIN)/python bench/client_overhead.py
	$(BIN)/python bench/batch_throughput.py

clean:
	rm -rf $(VENV) build dist *.egg-info test-artifacts
