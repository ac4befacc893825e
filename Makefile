# The two commands of the README: `make demo` and `make test`.
# Each creates .venv and installs the project with what it needs, by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench bench-query clean

# setup.py builds the optional C extension store/_speedups.c (in place, with the editable install)
$(STAMP): pyproject.toml setup.py store/_speedups.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m replica demo

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

pytest: $(STAMP)
	$(PY) -m pytest

# ruff, mypy, then the whole suite. pytest's exit code 5 (no tests ran) is a failure like any other.
test: lint typecheck pytest

bench: $(STAMP)
	$(PY) bench/tree_bench.py

bench-query: $(STAMP)
	$(PY) bench/query_bench.py

# issue 5: merge of two branches of a 1M-datom database diverged by 1,000 transactions each
.PHONY: bench-merge
bench-merge: $(STAMP)
	$(PY) bench/merge_bench.py

# issue 6: sync over loopback websockets (clone 100k/1M, fast-forward, no-op, divergent)
.PHONY: bench-sync
bench-sync: $(STAMP)
	$(PY) bench/sync_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build store/_speedups.*.so
