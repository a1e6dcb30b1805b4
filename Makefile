# `make run` sets everything up and runs web, worker and an embedded Redis; `make test` tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test faults load fuzz-api lint format clean cnn

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

# The cnn extra (`make cnn`, or CNN=1 on `make run` / `make test`): torch first, pinned, since
# an unpinned torch pulls several GB of CUDA. TORCH_PIP_ARGS tells pip where the CPU build is
# on a machine where it is not found by default (README, "The CNN embedder").
TORCH_PIP_ARGS ?=
$(VENV)/.installed-cnn: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/pip install --quiet -e '.[cnn]'
	touch $@

cnn: $(VENV)/.installed-cnn

# Development defaults; anything already in the environment wins. With REDIS_URL set, the
# `redis` line of Procfile.dev is not started.
run: export LIKENESS_ENV ?= development
run: export LIKENESS_INSTANCE_PATH ?= $(CURDIR)/instance
run: export PATH := $(CURDIR)/$(BIN):$(PATH)
run: $(VENV)/.installed-app $(if $(CNN),$(VENV)/.installed-cnn)
	mkdir -p "$$LIKENESS_INSTANCE_PATH"
	flask --app wsgi db upgrade
	honcho -f Procfile.dev start $(if $(REDIS_URL),-c redis=0)

test: $(VENV)/.installed-test $(if $(CNN),$(VENV)/.installed-cnn)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fault scenarios that take seconds each (worker processes, Redis restarts, timeouts);
# `make test` skips them. TEST_DATABASE_URL and TEST_REDIS_URL choose the parts, as for tests.
faults: $(VENV)/.installed-test
	$(BIN)/python -m pytest --faults -m faults $(PYTEST_ARGS)

# The load test (bench/load.py): gunicorn and a worker on PostgreSQL (LOAD_DATABASE_URL, a
# database it drops and creates) under locust; LOAD_ARGS passes options (--users, --seconds).
$(VENV)/.installed-load: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[load]'
	touch $@

load: $(VENV)/.installed-test $(VENV)/.installed-load
	$(BIN)/python bench/load.py $(LOAD_ARGS)

# Schemathesis against the OpenAPI document (tests/test_api_fuzz.py) with many more examples per
# operation than `make test` gives it.
FUZZ_API_EXAMPLES ?= 300
fuzz-api: $(VENV)/.installed-test
	FUZZ_API_EXAMPLES=$(FUZZ_API_EXAMPLES) $(BIN)/python -m pytest tests/test_api_fuzz.py $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/bandit --quiet --configfile pyproject.toml --recursive app plugins

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
