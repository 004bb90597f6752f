# Common commands. `make demo` and `make test` are the README quickstart.
VENV ?= .venv
BIN := $(VENV)/bin
ENV ?= local

.PHONY: setup demo test test-fast tables clean-lake docs

setup:
	VENV=$(VENV) scripts/setup.sh

demo: setup            ## set up, then run the main job on the embedded default
	$(BIN)/gridpersona --env $(ENV) demo

test: setup            ## the full test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: setup       ## unit tests only, no end-to-end lake
	$(BIN)/python -m pytest -q -m "not e2e"

tables:
	$(BIN)/gridpersona --env $(ENV) tables

docs:                  ## regenerate docs/data_dictionary.md from the table contracts
	$(BIN)/python -m gridpersona.docs > docs/data_dictionary.md

clean-lake:
	rm -rf lake
