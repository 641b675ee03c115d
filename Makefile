# plandb: `make demo` and `make test` work as the first command on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench stress lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) scripts/bench.py

stress: $(STAMP)
	$(PY) scripts/stress.py

lint: $(STAMP)
	$(VENV)/bin/ruff check plandb tests scripts

clean:
	rm -rf $(VENV) build dist .pytest_cache
