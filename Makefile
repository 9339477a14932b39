# Volant for Python — the entry points a newcomer needs.
#   make demo   set everything up and boot the example VM (the main job)
#   make test   set everything up and run lint, type checks and the whole test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the product and its tests use (QEMU, guest image tools, netlink/NAT tools).
# The package lists must be fresh too: volant-image downloads the guest kernel and debs.
APT_PACKAGES := qemu-system-x86 busybox-static lz4 kmod e2fsprogs cpio iproute2 nftables gcc \
	dosfstools mtools xz-utils iputils-ping tmux wrk

.PHONY: help setup sysdeps venv lint typecheck test test-fast demo demo-down bench fuzz clean

help:
	@echo "make demo       set up and boot the example VM through volantd"
	@echo "make demo-down  stop the demo: VMs, daemon, network namespace"
	@echo "make test       set up, then ruff + mypy + the whole test suite"
	@echo "make test-fast  unit tests only"
	@echo "make bench      run the benchmarks (writes bench/results/, docs/performance.md)"
	@echo "make fuzz       run the fuzz harnesses (FUZZ_SECONDS each, default 600)"

setup: sysdeps venv

sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] || ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq; \
	fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

typecheck: venv
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m volant.demo up

demo-down: venv
	$(BIN)/python -m volant.demo down

bench: setup
	$(BIN)/python bench/run_all.py

fuzz: setup
	$(BIN)/python fuzz/run_all.py --seconds $${FUZZ_SECONDS:-600}

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
