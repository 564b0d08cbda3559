# lbproxy — `make up` runs the product in Docker, `make run` without Docker, `make test` tests it,
# `make experiments` reproduces the experiments (experiments/README.md), `make bench` measures it
# against HAProxy and NGINX.
# Every target sets up what it needs (virtual environment, packages, images) by itself.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= config.yaml
# `make run BACKEND=docker` runs the balancer on the host with container replicas.
BACKEND ?=
CODE   := src tests tools experiments bench setup.py
# The modules setup.py compiles (mypyc): an editable install compiles them in place, so an
# edit of one of them reinstalls.
HOT_SOURCES := $(shell grep -o '"lbproxy\.[a-z_.]*"' setup.py | tr -d '"' | tr . / | sed 's|^|src/|; s|$$|.py|')
# The data-path tests, run once more against the Python sources (LBPROXY_PURE_PYTHON=1): they
# are the reference and the fallback of the compiled modules.
PURE_TESTS := tests/test_front.py tests/test_front_protocol.py tests/test_front_framing.py \
	tests/test_transport.py tests/test_transport_protocol.py tests/test_proxy.py \
	tests/test_exchange.py tests/test_tunnel.py tests/test_headers.py tests/test_pool.py \
	tests/test_keys.py tests/test_maglev.py tests/test_ring.py tests/test_bench_hotpath.py \
	tests/test_compiled.py

# The compose stack; the tests run their own next to it by setting these.
export COMPOSE_PROJECT_NAME ?= lbproxy
export LBPROXY_PORT ?= 5000
export LBPROXY_ADMIN_PORT ?= 5001
export LBPROXY_NETWORK ?= lbproxy-net
export LBPROXY_INSTANCE ?= lbproxy
export LBPROXY_CONFIG_DIR ?= .
# Longest `make up` waits for the stack to serve.
UP_TIMEOUT ?= 180

# Whichever compose is installed: the plugin (`docker compose`) or the standalone tool.
COMPOSE ?= $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
	elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)

.PHONY: help venv run test lint format clean images up down logs compose-check experiments bench \
	fuzz swarm-up swarm-down browser compiler

help:
	@echo "make up      build the images (offline if need be) and start the stack on port 5000"
	@echo "make down    stop the stack and remove every container and network it made"
	@echo "             (stopping or restarting the balancer alone keeps its replicas)"
	@echo "make logs    follow the balancer's log"
	@echo "make swarm-up    deploy to this engine's swarm: a balancer per node on port 5000"
	@echo "             (host mode), the replicas as one Swarm service (docs/swarm.md)"
	@echo "make swarm-down  remove the swarm services and their overlay network"
	@echo "make run     run the balancer on port 5000 with local-process replicas (no Docker)"
	@echo "             (make run BACKEND=docker: on the host, with container replicas)"
	@echo "make test    create the virtual environment and run the whole test suite"
	@echo "make images  build lbproxy/lb and lbproxy/server without a registry"
	@echo "make experiments  run experiments 1-4 and more against real balancers; results in"
	@echo "             experiments/out/ (untracked; EXPERIMENTS_ARGS='--out experiments/results'"
	@echo "             rewrites the committed ones, EXPERIMENTS_ARGS='--help' lists the options)"
	@echo "make lint    ruff check and format check"
	@echo "make bench   lbproxy vs HAProxy, NGINX and direct with wrk, and its memory"
	@echo "             (BENCH_ARGS=\"--quick\" for a short check; --help for every option)"
	@echo "make fuzz    fuzz the balancer's request parsing and framing (atheris) for"
	@echo "             FUZZ_SECONDS (300); what it finds goes to .fuzz/corpus"
	@echo "make clean   remove the virtual environment, wheels and caches"

$(STAMP): pyproject.toml setup.py $(HOT_SOURCES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(MAKE) --no-print-directory compiler
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP) $(if $(filter docker,$(BACKEND)),images)
	$(PY) -m lbproxy run --config $(CONFIG) $(if $(BACKEND),--backend $(BACKEND))

# The images are built before pytest runs (a first build takes minutes, longer than any one
# test may take); without a reachable engine the Docker tests skip and say why.
test: $(STAMP) browser
	$(PY) -m ruff check $(CODE)
	@if command -v docker >/dev/null && docker info >/dev/null 2>&1; then $(PY) tools/images.py; \
	else echo "make test: no Docker engine reachable; the Docker tests will be skipped"; fi
	$(PY) -m pytest
	LBPROXY_PURE_PYTHON=1 $(PY) -m pytest -q $(PURE_TESTS)

# setup.py compiles the hot path with gcc against the headers of the Python that builds it
# (for a pyenv or python.org build they come with it; Debian's python3 needs python3-dev).
# Installed here when missing and this runs as root; otherwise the build is pure Python and
# says why (so does tests/test_compiled.py, which skips).
compiler:
	@if [ "$${LBPROXY_NO_COMPILE:-0}" != 0 ]; then exit 0; fi; \
	root=$$([ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo yes); \
	if ! command -v gcc >/dev/null; then \
		if [ -n "$$root" ]; then echo "make: installing gcc to compile the hot path"; \
			apt-get install -y -q --no-install-recommends gcc libc6-dev >/dev/null 2>&1 \
			|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q \
				--no-install-recommends gcc libc6-dev >/dev/null 2>&1; } \
			|| echo "make: cannot install gcc; lbproxy will be pure Python"; \
		else echo "make: no gcc (apt-get install gcc as root); lbproxy will be pure Python"; fi; \
	fi; \
	include=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])'); \
	if [ ! -f "$$include/Python.h" ]; then \
		case "$$include" in /usr/include/*) pkg=python3-dev;; *) pkg=;; esac; \
		if [ -n "$$root" ] && [ -n "$$pkg" ]; then echo "make: installing $$pkg (Python.h)"; \
			apt-get install -y -q --no-install-recommends $$pkg >/dev/null 2>&1 \
			|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q \
				--no-install-recommends $$pkg >/dev/null 2>&1; } \
			|| echo "make: cannot install $$pkg; lbproxy will be pure Python"; \
		else echo "make: no $$include/Python.h; lbproxy will be pure Python"; fi; \
	fi
# The dashboard's browser tests drive Debian's chromium through chromium-driver: installed
# here when missing and this runs as root; otherwise those tests skip and say why.
BROWSER_PKGS := chromium chromium-driver
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "make: installing $(BROWSER_PKGS) for the dashboard's browser tests"; \
			apt-get install -y -q --no-install-recommends $(BROWSER_PKGS) >/dev/null 2>&1 \
			|| { apt-get update -q >/dev/null 2>&1 && \
				apt-get install -y -q --no-install-recommends $(BROWSER_PKGS) >/dev/null 2>&1; } \
			|| echo "make: cannot install $(BROWSER_PKGS); the browser tests will be skipped"; \
		else echo "make: no chromium/chromedriver (apt-get install $(BROWSER_PKGS) as root);" \
			"the browser tests will be skipped"; fi; \
	fi

lint: $(STAMP)
	$(PY) -m ruff check $(CODE)
	$(PY) -m ruff format --check $(CODE)

format: $(STAMP)
	$(PY) -m ruff format $(CODE)
	$(PY) -m ruff check --fix $(CODE)

images: $(STAMP)
	@command -v docker >/dev/null || { echo "make: the docker command is not installed" >&2; exit 1; }
	$(PY) tools/images.py

compose-check:
	@test -n "$(COMPOSE)" || { echo "make: neither 'docker compose' (the Compose plugin) nor \
	'docker-compose' is installed; install one (Debian: apt-get install docker-compose)" >&2; \
	exit 1; }

# On a stack that is up this returns at once, whatever N is now, and compose leaves the
# balancer as it is unless its image or settings changed (then the new one adopts the replicas).
up: images compose-check
	$(COMPOSE) up -d --no-build
	@$(PY) tools/wait_up.py --url http://127.0.0.1:$(LBPROXY_PORT) --timeout $(UP_TIMEOUT) \
		|| { $(COMPOSE) logs --tail=40; exit 1; }
	@echo "logs: make logs    stop: make down"

# The balancer leaves its replicas running when it stops (for the next one to adopt): the
# replicas are removed here, by their label, before compose removes the network.
down: compose-check
	-$(COMPOSE) stop --timeout 20
	@ids=$$(docker ps -aq --filter label=lbproxy.instance=$(LBPROXY_INSTANCE)); \
	if [ -n "$$ids" ]; then docker rm -f $$ids >/dev/null; fi
	$(COMPOSE) down --remove-orphans --timeout 20

logs: compose-check
	$(COMPOSE) logs -f

# Docker Swarm (docs/swarm.md): the engine must belong to a swarm (`docker swarm init`).
# LBPROXY_PUBLISH_MODE=ingress puts replicated balancers behind the routing mesh instead
# (needs IPVS in the kernel; not tested here).
export LBPROXY_SWARM_BALANCER ?= lbproxy
export LBPROXY_SWARM_SERVICE ?= lbproxy-replicas
export LBPROXY_SWARM_NETWORK ?= lbproxy-overlay
export LBPROXY_PUBLISH_MODE ?= host
SWARM_ARGS = --balancer $(LBPROXY_SWARM_BALANCER) --service $(LBPROXY_SWARM_SERVICE) \
	--network $(LBPROXY_SWARM_NETWORK) --port $(LBPROXY_PORT)

# Refuses before building anything when the engine is in no swarm.
swarm-up: $(STAMP)
	@$(PY) tools/swarm.py check
	@command -v docker >/dev/null || { echo "make: the docker command is not installed" >&2; exit 1; }
	$(PY) tools/images.py
	$(PY) tools/swarm.py up $(SWARM_ARGS) --config-dir $(LBPROXY_CONFIG_DIR) \
		--publish-mode $(LBPROXY_PUBLISH_MODE) --timeout $(UP_TIMEOUT)

swarm-down: $(STAMP)
	$(PY) tools/swarm.py down $(SWARM_ARGS)

experiments: $(STAMP) $(if $(findstring docker,$(EXPERIMENTS_ARGS)),images)
	$(PY) -m experiments $(EXPERIMENTS_ARGS)

# Installs wrk, haproxy and nginx from Debian's packages when missing (as root or via sudo).
# Figures also go to .bench/<time>.json, to compare runs.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m bench --json .bench/$$(date +%Y%m%d-%H%M%S).json $(BENCH_ARGS)

# A long run of the harness that `make test` runs for 25 s (tests/fuzz_front.py says what it
# checks); new inputs are kept in .fuzz/corpus and seed the next run.
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	@mkdir -p .fuzz/corpus
	$(PY) tests/fuzz_front.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 -artifact_prefix=.fuzz/ .fuzz/corpus \
		tests/fuzz_corpus

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .fuzz build src/*.egg-info
	find src -name '*.so' -delete
