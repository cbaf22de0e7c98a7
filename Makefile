# The README's two commands: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: serve test install install-test dcmtk lint typecheck bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python dcmtk
	$(BIN)/pip install -q -e '.[test]'

# The tests drive DCMTK's findscu/echoscu as the modality.
dcmtk:
	@if ! /usr/bin/findscu --version 2>/dev/null | grep -q dcmtk; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk; fi; \
	fi

serve: install
	$(BIN)/mwl-bridge serve

test: install-test
	$(BIN)/ruff check bridge tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

typecheck: install-test
	$(BIN)/mypy

bench: install-test
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/cfind.py
