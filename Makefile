# The quick start: `make demo` runs the main job, `make test` runs the tests.
# Each target creates the virtual environment and installs the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fsm check fsm.examples:ping
	$(BIN)/fsm run fsm.examples:ping start pause start finish
	$(BIN)/fsm run fsm.examples:update --context '{"user_id": 1, "new_status": "suspended"}'

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy fsm

bench: $(STAMP)
	$(BIN)/python benchmarks/transitions_per_second.py

clean:
	rm -rf $(VENV)
