# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
STACK := deploy/local/stack.sh

.PHONY: demo test test-all check test-timescaledb bootstrap stack down bench

bootstrap:
	@deploy/local/bootstrap.sh

stack: bootstrap
	@deploy/local/tools.sh
	@$(STACK) up >/dev/null

## The demo: local Kafka + PostgreSQL, migrate, the sink draining the sample stream, what landed.
demo: stack
	@eval "$$($(STACK) env)" && $(VENV)/mds-sink demo

## Lint, types, and every test but the TimescaleDB ones (no registry ships TimescaleDB).
test: check stack
	@eval "$$($(STACK) env)" && $(VENV)/pytest -m "not timescaledb" $(PYTEST_ARGS)

check: bootstrap
	@$(VENV)/ruff check src tests migrations benchmarks samples
	@$(VENV)/ruff format --check src tests migrations benchmarks samples
	@$(VENV)/mypy
	@$(VENV)/lint-imports --no-cache

## TimescaleDB tests, against a server with the extension: MDS_TEST_TIMESCALE_URL=postgresql://superuser@host/db
test-timescaledb: stack
	@eval "$$($(STACK) env)" && $(VENV)/pytest -m timescaledb $(PYTEST_ARGS)

bench: stack
	@eval "$$($(STACK) env)" && $(VENV)/python -m benchmarks.run $(BENCH_ARGS)

down:
	@$(STACK) down
