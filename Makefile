# tophosts: `make run` serves on :8080, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8080

.PHONY: all run check test lint format bench bench-quick fuzz soak soak-redis clean

all: test run

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/tophosts serve --port $(PORT)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict

# Four pytest workers on two cores: most tests wait on processes and sockets.
test: lint
	$(BIN)/pytest -n 4

# The inner loop, under 30 s: lint, types, and the tests that start no process.
check: lint
	$(BIN)/pytest -q -n 2 -m "not e2e and not browser and not slow"

# The benchmark suite (issues 3-5): scenarios 1-7, charts and JSON under
# bench/results/ (about 12 minutes; `--scenarios 1,2,3,4,5` for the first five,
# under 10). `bench-quick` is the < 40 s smoke run.
bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench --plot

bench-quick: $(VENV)/.dev-installed
	$(BIN)/python -m bench --quick

# Coverage-guided fuzzing (tests/fuzz/README.md): every atheris harness for
# FUZZ_SECONDS (3 minutes) each, one after another, crashers written into
# tests/fuzz/regressions/; then many more generated bodies and schemathesis
# examples than `make test` runs. `make test` fuzzes for 20 s in all.
FUZZ_SECONDS ?= 180
fuzz: $(VENV)/.dev-installed
	$(BIN)/python -m tests.fuzz all --seconds $(FUZZ_SECONDS)
	TOPHOSTS_FUZZ_EXAMPLES=5000 TOPHOSTS_SCHEMATHESIS_EXAMPLES=1000 \
		$(BIN)/pytest -q tests/test_fuzz.py tests/test_openapi.py

# Ten minutes of mixed load at 80% of capacity, then a minute of overload
# (see bench/soak.py and RELIABILITY.md). Not part of `make test`.
soak: $(VENV)/.dev-installed
	$(BIN)/python -m bench.soak --store memory

soak-redis: $(VENV)/.dev-installed
	$(BIN)/python -m bench.soak --store redis

format: $(VENV)/.dev-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .fuzz
