# activekd: `make demo` runs the main job, `make test` runs the tests. Both set up what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf

.PHONY: setup system-deps lock test test-fast lint protos protos-check demo bench bench-gpu clean

# A few lines on the terminal; the full apt and pip output goes to $(VENV)/setup.log, whose last
# lines are printed if a step fails (scripts/setup.sh).
setup: system-deps $(STAMP)

# Debian packages the tests and the demo use (a real redis-server, Fashion-MNIST, Prometheus).
system-deps:
	@VENV=$(VENV) bash scripts/setup.sh system-deps

# activekd[all] editable + dev and bench tools, at the versions pinned in constraints.txt.
$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	@VENV=$(VENV) bash scripts/setup.sh venv
	@touch $(STAMP)

# Rewrite constraints.txt from what $(VENV) has installed. After changing a range in pyproject.toml,
# resolve the ranges afresh in a new venv first (CONSTRAINTS= installs without the old pins):
#   rm -rf .venv && make setup CONSTRAINTS= && make lock
lock:
	@VENV=$(VENV) bash scripts/setup.sh lock

$(BUF):
	npm install --silent --prefix .tools @bufbuild/buf@$(BUF_VERSION)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup $(BUF)
	$(VENV)/bin/ruff check src services tests bench scripts
	$(VENV)/bin/ruff format --check src services tests bench scripts
	$(VENV)/bin/mypy src/activekd services
	$(BUF) lint
	$(PY) scripts/gen_protos.py --check

protos: setup
	$(PY) scripts/gen_protos.py

protos-check: setup
	$(PY) scripts/gen_protos.py --check

demo: setup
	$(VENV)/bin/activekd demo $(DEMO_ARGS)

bench: setup
	$(PY) bench/bench_selection.py
	$(PY) bench/bench_service.py

# On a machine with CUDA: the GPU tests, the full teacher cache, the label-efficiency grid and the
# GPU-vs-CPU benchmark, each time-boxed (see bench/gpu_session.sh); results under $(GPU_OUT).
GPU_OUT ?= bench/results/gpu-session
bench-gpu: setup
	OUT=$(GPU_OUT) PY=$(PY) bash bench/gpu_session.sh

clean:
	rm -rf .activekd .pytest_cache .mypy_cache .ruff_cache
