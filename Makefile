# The two Quick start commands are `make run` and `make test`; everything they need is installed here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# `make cluster`: three Kafka nodes, PostgreSQL with a standby under pg_auto_failover, two projectors and two
# APIs, in the foreground (docs/cluster.md).
.PHONY: cluster cluster-down test-cluster soak-cluster compiled run test soak test-unit lint deps kafka-jars services-up services-down clean-data bench bench-quick bench-formance bench-growth bench-deps observe

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

deps: $(STAMP) kafka-jars compiled

# ledger/ compiled by mypyc into .build/mypyc, unless the build there is of the current sources.
compiled: $(STAMP)
	@$(PY) -m tools.compiled

kafka-jars: $(STAMP)
	@$(PY) -m tools.local kafka-jars >/dev/null

run: deps
	$(PY) -m tools.run

# Prometheus with the ledger's rules (infra/prometheus/rules.yml) over a running `make run` or `make cluster`,
# on http://127.0.0.1:9090 in the foreground (Debian's prometheus package, installed when missing).
observe: deps
	$(PY) -m tools.observe

cluster: deps
	$(PY) -m tools.cluster

cluster-down: $(STAMP)
	$(PY) -m tools.cluster down

# Kills a Kafka node and the PostgreSQL primary under load (tests/cluster); reuses a running `make cluster`.
test-cluster: deps
	$(PY) -m pytest tests/cluster -m cluster -q -s

# The suite in a world of its own, then the short cluster test (about 2 minutes: a Kafka node and the primary
# lost under load; it needs the ports of `make cluster`, so not beside `make run`).
test: deps lint
	$(PY) -m tools.testing
	$(PY) -m pytest tests/cluster -m cluster -q -s -p no:cacheprovider

# The nemesis for 30 minutes (LEDGER_SOAK_SECONDS), seeded (LEDGER_SOAK_SEED); its report in .data/logs.
soak: deps
	LEDGER_SOAK_SECONDS=$${LEDGER_SOAK_SECONDS:-1800} $(PY) -m tools.testing tests/faults/test_nemesis.py -s -q

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy ledger

services-up: deps
	$(PY) -m tools.local up

services-down: $(STAMP)
	$(PY) -m tools.local down

clean-data: services-down
	rm -rf .data

bench-deps: deps
	$(PY) -m pip install -q -e '.[dev,bench]'

bench: bench-deps
	$(PY) -m bench.run

# Issue 24's write matrix, ours and Formance Ledger v2's (built from source once, on its own PostgreSQL) in one run.
bench-formance: bench-deps
	$(PY) -m bench.run --only matrix,formance

# Issue 24's growth: a waited write's cost on a fresh database, then holding 2M and 5M transactions (~20 min).
bench-growth: bench-deps
	$(PY) -m bench.run --only growth

bench-quick: bench-deps
	$(PY) -m bench.run --quick

# The nemesis over `make cluster` (tests/cluster/nemesis.py): a Kafka node, the primary's or the standby's machine,
# an API or a projector lost one at a time under load, with a bank-style checker; LEDGER_SOAK_SECONDS (1800),
# LEDGER_SOAK_SEED; reuses a running `make cluster` or starts one (and stops it after); report in .data/logs.
soak-cluster: deps
	LEDGER_SOAK_SECONDS=$${LEDGER_SOAK_SECONDS:-1800} $(PY) -m tests.cluster.nemesis
