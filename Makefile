# The verbs a newcomer types. `make run` and `make test` are the two that matter.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := shared_schemas planexec planner_service executor_service migrations
PORT ?= 8100

.PHONY: run demo planner test lint typecheck schemas migrate bench clean-data help

help:
	@echo "make run      the pair, real tool servers and the demo intents on the embedded Postgres"
	@echo "make demo     the same, then exit: status 0 when every demo outcome was the expected one"
	@echo "make test     lint, type-check and run the test suite against real Postgres"
	@echo "make schemas  re-export shared_schemas/jsonschema/*.json from the models"
	@echo "make lint     ruff check + format check"
	@echo "make bench    benchmarks -> bench/results.json"
	@echo "make chaos    the process-level fault tests at 10x their CI counts"
	@echo "make screenshots  the console screenshots (docs/screenshots/) taken from the demo"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,demo]'
	touch $(STAMP)

run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m planexec.demo

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m planexec.demo --exit

planner: $(STAMP)
	@echo "planexec planner alone: docs at http://127.0.0.1:$(PORT)/docs (Ctrl-C stops)"
	PLANEXEC_PORT=$(PORT) PLANEXEC_CATALOG_FILE=$${PLANEXEC_CATALOG_FILE:-planner_service/catalogs/demo.json} \
		$(BIN)/planexec planner --migrate

migrate: $(STAMP)
	$(BIN)/planexec migrate

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict $(PACKAGES)

schemas: $(STAMP)
	$(BIN)/python -m shared_schemas.export

test: lint typecheck
	$(BIN)/python -m pytest

bench: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "make bench needs wrk (Debian package 'wrk')"; exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,demo,bench]'
	$(BIN)/python -m bench.run

clean-data:
	rm -rf .data

# The process-level fault tests (tests/chaos, RELIABILITY §2) at 10x their CI counts.
.PHONY: chaos
chaos: $(STAMP)
	PLANEXEC_CHAOS_SCALE=$${PLANEXEC_CHAOS_SCALE:-10} $(BIN)/python -m pytest tests/chaos -s

# The console screenshots of the README, taken from the demo's runs in headless Chromium.
.PHONY: screenshots
screenshots: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m planexec.demo.screenshots
