# Two commands: `make run` and `make test`. Everything else is set up on demand.
PYTHON ?= python3
BACKEND := backend
VENV := $(BACKEND)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench db-upgrade clean setup

setup: $(STAMP)

$(STAMP): $(BACKEND)/requirements.lock $(BACKEND)/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r $(BACKEND)/requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e $(BACKEND)
	@touch $(STAMP)

## Run the agent: API on 127.0.0.1:8000 plus the trading loop (offline by default).
run: $(STAMP)
	cd $(BACKEND) && .venv/bin/trading-agent run

db-upgrade: $(STAMP)
	cd $(BACKEND) && .venv/bin/trading-agent db upgrade

lint: $(STAMP)
	cd $(BACKEND) && .venv/bin/ruff check src tests benchmarks && .venv/bin/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	cd $(BACKEND) && .venv/bin/mypy

unit: $(STAMP)
	cd $(BACKEND) && .venv/bin/pytest -q

## Lint, type checks and the whole test suite.
test: lint typecheck unit

## Performance measurements (figures printed, never asserted in tests).
bench: $(STAMP)
	cd $(BACKEND) && for b in benchmarks/bench_*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(BACKEND)/data
