# The quick start: `make demo` runs the main job, `make test` runs the tests.
# Each target creates the virtual environment and installs the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The benchmarks' peers (DBOS): installed for bench-flow only, so `make test` never needs them.
BENCH_STAMP := $(VENV)/.installed-bench
# The test run fails unless every row of the shipped machines fired (see pyproject's
# fsm_coverage_machines); pass PYTEST_ARGS to run a subset without the gate.
PYTEST_ARGS ?= --fsm-coverage --fsm-coverage-fail-under=100

.PHONY: demo service test test-fast lint mutation mutation-gate bench bench-flow bench-dbos diagrams clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/fsm demo $(DEMO_ARGS)

# The example ASGI service (examples/service) on $$FSM_DB_URL and $$FSM_KAFKA_BOOTSTRAP_SERVERS;
# SERVICE_ARGS adds flags (python -m examples.service --help).
service: $(STAMP)
	$(BIN)/python -m examples.service $(SERVICE_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The core alone: no PostgreSQL, broker or campaign (the coverage gate needs the whole suite).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy fsm adapters userstatus tests benchmarks examples

# Mutation testing with mutmut (tests/mutation.py): every module of fsm/ against the fast
# suite, the score per module; long, by hand. Survivors: docs/testing.md.
mutation: $(STAMP)
	$(BIN)/python -m tests.mutation all

# The gate CI runs: the engine core (validation, runtime, definition, table) against the
# engine's tests, failing under 90% of the mutants killed; about 3 minutes on 2 cores.
mutation-gate: $(STAMP)
	$(BIN)/python -m tests.mutation core --fail-under 90

diagrams: $(STAMP)
	$(BIN)/fsm diagram --all

bench: $(STAMP)
	$(BIN)/python benchmarks/transitions_per_second.py

bench-flow: $(BENCH_STAMP)
	$(BIN)/python benchmarks/flow_throughput.py

# DBOS Transact alone against the hand-written loop, in one process (benchmarks/dbos_peer.py).
bench-dbos: $(BENCH_STAMP)
	$(BIN)/python benchmarks/dbos_peer.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV)
