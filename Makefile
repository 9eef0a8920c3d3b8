# Two commands: `make demo` (set up + whole pipeline on the bundled sample, CPU) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench

demo: $(VENV)/.installed
	$(PY) -m qg.pipeline

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-bench.txt
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -e .
	touch $@
