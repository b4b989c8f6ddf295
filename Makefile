# make demo: set up .venv and train + translate Multi30k on the CPU.
# make test: set up .venv and run the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORPUS ?= ../shared/corpora/multi30k
WORK ?= work/demo
DEMO_MINUTES ?= 20

.PHONY: setup test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.py $(BIN)/python
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -e '.[test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q tests

demo: setup
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh $(CORPUS) $(WORK) $(DEMO_MINUTES)

clean:
	rm -rf $(VENV) work .pytest_cache
