# BYOK Portal. `make run` starts everything on embedded defaults; `make test` runs the suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Tests run on PostgreSQL when it is reachable (row locks and audit triggers need it); see README.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/byok
PYTEST_ARGS ?=
# The suite runs in parallel: one pytest-xdist worker per core, at most 4 (the Redis databases
# the worker tests use run out at 5; see tests/tasks/conftest.py). Each worker has its own test
# database (pytest-django suffixes it), Redis database, sandbox AWS and servers on ports of its
# own. TEST_WORKERS=0 runs everything in this one process (pdb, -x).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
# The production smoke test runs from requirements.txt alone, in a virtualenv of its own
# (outside the checkout), rebuilt from scratch whenever requirements.txt's content changes.
SMOKE_VENV ?= /tmp/byok-prod-venv
SMOKE_STAMP := $(SMOKE_VENV)/.requirements-$(shell sha256sum requirements.txt | cut -c1-16)
SMOKE_REDIS_URL ?= redis://127.0.0.1:6379/13
SMOKE_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/byok_smoke

.PHONY: help run sandbox-reset test smoke lint typecheck check bench clean

help:
	@echo "make run    - set up and start the whole portal on embedded defaults"
	@echo "make sandbox-reset - forget the sandbox AWS's keys, roles and sessions (var/sandbox/)"
	@echo "make test   - set up and run the test suite"
	@echo "make smoke  - production smoke test: requirements.txt alone, gunicorn + Celery on Redis + PostgreSQL"
	@echo "make lint   - ruff check + ruff format --check"
	@echo "make typecheck - mypy"
	@echo "make bench  - run the benchmarks under bench/ and write BENCHMARKS.md"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.runtime-installed: requirements.txt | $(VENV)/bin/python
	$(PIP) install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PIP) install -q -r requirements-dev.txt
	touch $(VENV)/.runtime-installed $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(SMOKE_STAMP):
	rm -rf $(SMOKE_VENV)
	$(PYTHON) -m venv $(SMOKE_VENV) || python3 -m venv $(SMOKE_VENV)
	$(SMOKE_VENV)/bin/pip install -q -r requirements.txt
	touch $@

smoke: $(SMOKE_STAMP) node_modules/.installed
	$(SMOKE_VENV)/bin/python scripts/prod_smoke.py --redis-url $(SMOKE_REDIS_URL) --database-url $(SMOKE_DATABASE_URL)

run: $(VENV)/.runtime-installed
	@VENV=$(VENV) bash scripts/run.sh

sandbox-reset: $(VENV)/.runtime-installed
	@$(PY) -m sandbox_aws.reset --state var/sandbox/state.json --url http://127.0.0.1:$${BYOK_SANDBOX_PORT:-4566}

test: $(VENV)/.dev-installed node_modules/.installed
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev-installed
	$(VENV)/bin/mypy .

bench: $(VENV)/.dev-installed
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) -m bench

clean:
	rm -rf $(VENV) node_modules var artifacts .pytest_cache .mypy_cache .ruff_cache
