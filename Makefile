# The two commands a new user needs; each does its own set-up with only Python 3.11+ and pip.
# `make demo` installs the package alone; `make test` and `make bench` add their extras. Each set-up
# has its own stamp in the venv, so `make demo` then `make test` still installs the test extras.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
BASE    = $(VENV)/.installed-base
EXTRAS  = $(VENV)/.installed-test-bench

.PHONY: demo test bench install clean

$(BASE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	$(BIN)/python -m compileall -q engine  # bytecode even where PYTHONDONTWRITEBYTECODE is set
	touch $@

$(EXTRAS): $(BASE)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m compileall -q bench
	touch $@

install: $(EXTRAS)   ## everything: the package, the test and bench extras

demo: $(BASE)        ## export from the embedded fake platform
	$(BIN)/aep-export demo --out demo-export

test: $(EXTRAS)      ## the whole test suite
	$(BIN)/python -m pytest -q

bench: $(EXTRAS)     ## quick side-by-side benchmark (see README: Performance)
	$(BIN)/python -m bench --quick

clean:
	rm -rf demo-export $(VENV) *.egg-info
