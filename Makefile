# lbproxy — `make up` runs the product in Docker, `make run` without Docker, `make test` tests it,
# `make bench` measures it against HAProxy and NGINX.
# Every target sets up what it needs (virtual environment, packages) by itself.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= config.yaml

.PHONY: help run test lint format bench clean

help:
	@echo "make run     run the balancer on port 5000 with local-process replicas (no Docker)"
	@echo "make test    create the virtual environment and run the whole test suite"
	@echo "make lint    ruff check and format check"
	@echo "make bench   lbproxy vs HAProxy, NGINX and direct with wrk, and its memory"
	@echo "             (BENCH_ARGS=\"--quick\" for a short check; --help for every option)"
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
	$(PY) -m ruff check src tests bench
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

format: $(STAMP)
	$(PY) -m ruff format src tests bench
	$(PY) -m ruff check --fix src tests bench

# Installs wrk, haproxy and nginx from Debian's packages when missing (as root or via sudo).
# Figures also go to .bench/<time>.json, to compare runs.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m bench --json .bench/$$(date +%Y%m%d-%H%M%S).json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
