# vipkeeper: `make run` (the lab demo) and `make test` (every tier this machine can run).
# Both install what they need: Debian packages (as root), a venv under .venv, the project editable.

SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# qemu-system-x86, linux-image-amd64, busybox-static, ipvsadm: the VM lane (tests/vm), which boots
# Debian's kernel under qemu for IPVS; --no-install-recommends below keeps them small.
# nftables: packet loss in the chaos cycles (tests/netns/test_chaos.py, bench/chaos.py).
APT_PACKAGES := python3 python3-venv iproute2 keepalived tcpdump procps kmod \
	qemu-system-x86 linux-image-amd64 busybox-static ipvsadm nftables
PY_SOURCES := $(wildcard api nodeagent operator lab tests bench)

.PHONY: help run test deps apt venv lint typecheck imports unit netns interop bench clean

help:
	@echo "make run    - lab demo: 3 agents in network namespaces elect, serve, fail over (root)"
	@echo "make test   - lint, types, import contracts, unit, netns and interop tests (root)"
	@echo "make bench  - every benchmark (failover, checks, IPVS, operator, chaos, fuzz) and one report in $(BENCH_REPORT) (root, ~2 h)"

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

# The long runs of issue 8's targets; `make bench CHAOS_CYCLES=100 FUZZ_INPUTS=100000` for a shorter one.
CHAOS_CYCLES ?= 1000
FUZZ_INPUTS ?= 1000000
BENCH_REPORT ?= docs/benchmarks
# One run per line: script and arguments, '|' between runs.
BENCH_RUNS := failover.py|checks.py|ipvs.py|operator_bench.py|chaos.py --cycles $(CHAOS_CYCLES) --seed 1|fuzz.py --inputs $(FUZZ_INPUTS)

# Every benchmark runs even if one before it fails; the report marks what this run did not produce
# (stale or missing results) and make exits non-zero naming the failures.
bench: deps
	@start=$$(date +%s); failed=""; runs='$(BENCH_RUNS)'; IFS='|'; \
	for run in $$runs; do \
	  IFS=' ' read -r -a argv <<< "$$run"; echo "=== bench/$$run"; \
	  $(PY) bench/"$${argv[@]}" || failed="$$failed $${argv[0]}"; \
	done; \
	$(PY) bench/report.py --since "$$start" --out $(BENCH_REPORT) || failed="$$failed report.py"; \
	if [ -n "$$failed" ]; then echo "benchmarks that failed:$$failed" >&2; exit 1; fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
