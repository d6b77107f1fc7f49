# Two commands do all set-up on a fresh machine:
#   make demo   — create the venv, install, run the whole pipeline on the embedded default field
#   make test   — create the venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test test-fast lint bench bench-scale compare-beast clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/beastflow run

# two test processes at most (pytest-xdist), each running whole test files (their fixtures stay
# per file); many tests wait on servers, subprocesses and SLURM, so 2 cores run 2 at once
PYTEST_PARALLEL = -n auto --maxprocesses 2 --dist loadfile

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

# the inner loop: everything but the service, browser, slow and whole-pipeline tests
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not service and not browser and not slow and not pipeline"

# what CI checks before the tests: lint, formatting, types
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# every bench but the survey-scale run (hours at its default 200,000 stars: make bench-scale)
bench: $(BIN)/.installed
	for b in bench/bench_*.py; do [ $$b = bench/bench_scale.py ] || $(BIN)/python $$b || exit 1; done

bench-scale: $(BIN)/.installed
	$(BIN)/python bench/bench_scale.py

compare-beast: $(BIN)/.installed
	$(BIN)/python bench/compare_beast.py

clean:
	rm -rf $(VENV) beastflow-output demo-output .pytest_cache
