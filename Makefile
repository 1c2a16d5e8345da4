# The two commands a new machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dbm run ts_quick --out results/ts_quick --overwrite
	$(VENV)/bin/dbm show results/ts_quick
	$(VENV)/bin/dbm plot results/ts_quick

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(BENCH_STAMP)

# diffrax (the `bench` extra) is the side-by-side reference of the SDE benchmark
bench: $(BENCH_STAMP)
	$(PY) benchmarks/bench_reference.py
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_dyson.py

clean:
	rm -rf $(VENV) results .pytest_cache
