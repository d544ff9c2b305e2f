# The two commands a new user needs; each does its own set-up with only Python 3.11+ and pip.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test bench install clean

$(BIN)/aep-export: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m compileall -q engine bench  # bytecode even where PYTHONDONTWRITEBYTECODE is set
	touch $@

install: $(BIN)/aep-export

demo: install        ## export from the embedded fake platform
	$(BIN)/aep-export demo --out demo-export

test: install        ## the whole test suite
	$(BIN)/python -m pytest -q

bench: install       ## quick side-by-side benchmark (see README: Performance)
	$(BIN)/python -m bench --quick

clean:
	rm -rf demo-export $(VENV) *.egg-info
