# One-command set-up on a fresh Debian machine: `make run` starts a node, `make test` runs the
# tests. Each target creates what it needs (the venv, Debian's etcd for the comparison tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-all lint typecheck proto system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,fast]'
	touch $(STAMP)

# etcd-server and etcd-client (3.4.23) give the real etcd and etcdctl the tests compare with;
# openssl makes the TLS tests' certificates.
system-deps:
	@if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null || ! command -v openssl >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client openssl; \
	fi

run: $(STAMP)
	$(BIN)/petra $(ARGS)

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Everything, including the slow soaks.
test-all: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -m '' $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy raft wal engine snapshot server/wire server/tls.py

proto: $(STAMP)
	$(BIN)/python -m api.generate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
