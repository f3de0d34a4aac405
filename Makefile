# Every target sets up .venv itself, so each is one command on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2
export PYTHONHASHSEED := 0

.PHONY: setup run test test-full bench lint format clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/supportrl pipeline

# the fast tier on both cores (pytest-xdist), one BLAS thread per worker; tests that start
# Ray share one worker (tests/conftest.py)
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow" -q -n 2 --dist loadgroup

test-full: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
