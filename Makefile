# `make run` sets everything up and runs web, worker and an embedded Redis; `make test` tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-app: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The test extra includes everything `make run` needs, so a test of `make run` installs nothing.
# The example third-party plugin is installed like any other plugin package: its tests and the
# end-to-end test find it through its entry point.
EXAMPLE_PLUGIN := tests/example_plugin
$(VENV)/.installed-test: pyproject.toml $(EXAMPLE_PLUGIN)/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,test]' -e $(EXAMPLE_PLUGIN)
	touch $@ $(VENV)/.installed-app

# Development defaults; anything already in the environment wins. With REDIS_URL set, the
# `redis` line of Procfile.dev is not started.
run: export LIKENESS_ENV ?= development
run: export LIKENESS_INSTANCE_PATH ?= $(CURDIR)/instance
run: export PATH := $(CURDIR)/$(BIN):$(PATH)
run: $(VENV)/.installed-app
	mkdir -p "$$LIKENESS_INSTANCE_PATH"
	flask --app wsgi db upgrade
	honcho -f Procfile.dev start $(if $(REDIS_URL),-c redis=0)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
