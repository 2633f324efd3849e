# vipkeeper: `make run` (the lab demo) and `make test` (every tier this machine can run).
# Both install what they need: Debian packages (as root), a venv under .venv, the project editable.

SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# qemu-system-x86, linux-image-amd64, busybox-static, ipvsadm: the VM lane (tests/vm), which boots
# Debian's kernel under qemu for IPVS; --no-install-recommends below keeps them small.
APT_PACKAGES := python3 python3-venv iproute2 keepalived tcpdump procps kmod \
	qemu-system-x86 linux-image-amd64 busybox-static ipvsadm
PY_SOURCES := $(wildcard api nodeagent operator lab tests bench)

.PHONY: help run test deps apt venv lint typecheck imports unit netns interop bench clean

help:
	@echo "make run    - lab demo: 3 agents in network namespaces elect, serve, fail over (root)"
	@echo "make test   - lint, types, import contracts, unit, netns and interop tests (root)"
	@echo "make bench  - benchmarks: failover and checks vs keepalived, IPVS vs ipvsadm, operator at scale (root)"

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

deps: apt venv

run: deps
	$(BIN)/vipkeeper-lab demo

lint: venv
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)

typecheck: venv
	$(BIN)/mypy api/vipkeeper_api nodeagent/vipkeeper_agent operator/vipkeeper_operator lab/vipkeeper_lab bench

imports: venv
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest -q tests/unit

netns: deps
	$(BIN)/pytest -q tests/netns

interop: deps
	$(BIN)/pytest -q tests/interop

test: deps lint typecheck imports
	$(BIN)/pytest -q tests

bench: deps
	$(PY) bench/failover.py
	$(PY) bench/checks.py
	$(PY) bench/ipvs.py
	$(PY) bench/operator_bench.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
