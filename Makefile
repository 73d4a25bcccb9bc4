# activekd: `make demo` runs the main job, `make test` runs the tests. Both set up what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := redis-server dataset-fashion-mnist prometheus

.PHONY: setup system-deps test test-fast lint protos protos-check demo bench bench-gpu clean

setup: system-deps $(STAMP)

# Debian packages the tests and the demo use (a real redis-server, Fashion-MNIST, Prometheus).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing="$$missing dataset-fashion-mnist"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $(STAMP)

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
