# Two commands on a fresh machine: `make up` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Pip resolves the tested ranges from pyproject.toml; the stamps re-install when it changes.
UP_STAMP   := $(VENV)/.installed-up
TEST_STAMP := $(VENV)/.installed-test

.PHONY: up test lint typecheck unit integration bench clean help
.DEFAULT_GOAL := help

help:
	@echo "make up    - run the club network on an embedded Synapse (Ctrl-C stops it)"
	@echo "             CLUBS_DB=postgres: on PostgreSQL; CLUBS_WORKERS=1: Synapse workers + Redis"
	@echo "make test  - ruff, mypy --strict and the whole test suite against a real Synapse"
	@echo "make bench - benchmarks in bench/ (ratios against the same Synapse's floor)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(UP_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[server]'
	@touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[server,test]'
	@touch $@ $(UP_STAMP)

up: $(UP_STAMP)
	$(BIN)/clubs up

lint: $(TEST_STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

unit: $(TEST_STAMP)
	$(BIN)/pytest tests/unit

integration: $(TEST_STAMP)
	$(BIN)/pytest tests/integration

test: lint typecheck $(TEST_STAMP)
	$(BIN)/pytest

bench: $(TEST_STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
