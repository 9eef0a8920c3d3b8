# Two commands: `make demo` (set up + whole pipeline on the bundled sample, CPU) and `make test` (the suite;
# also installs Debian's Chromium for the Space's browser test when run as root, else that test skips).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench

demo: $(VENV)/.installed
	$(VENV)/bin/qg-demo

# Two pytest workers of one torch thread each: a two-core machine runs the suite in about 60% of the time of one
# worker, while two workers on torch's default threads oversubscribe the cores and run it slower than one.
test: $(VENV)/.installed
	bash scripts/install_browser.sh
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2

bench: $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-bench.txt
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -e .
	touch $@
