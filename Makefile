# lbproxy — `make up` runs the product in Docker, `make run` without Docker, `make test` tests it,
# `make experiments` reproduces the experiments (experiments/README.md).
# Every target sets up what it needs (virtual environment, packages) by itself.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= config.yaml

.PHONY: help run test lint format clean experiments

help:
	@echo "make run     run the balancer on port 5000 with local-process replicas (no Docker)"
	@echo "make test    create the virtual environment and run the whole test suite"
	@echo "make experiments  run experiments 1-4 and more against real balancers; results in"
	@echo "             experiments/results/ (EXPERIMENTS_ARGS='--help' lists the options)"
	@echo "make lint    ruff check and format check"
	@echo "make clean   remove the virtual environment and caches"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m lbproxy run --config $(CONFIG)

test: $(STAMP)
	$(PY) -m ruff check src tests experiments
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check src tests experiments
	$(PY) -m ruff format --check src tests experiments

format: $(STAMP)
	$(PY) -m ruff format src tests experiments
	$(PY) -m ruff check --fix src tests experiments

experiments: $(STAMP)
	$(PY) -m experiments $(EXPERIMENTS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
