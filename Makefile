# Common commands. `make demo` and `make test` are the README quickstart.
VENV ?= .venv
BIN := $(VENV)/bin
ENV ?= local

.PHONY: setup airflow-setup demo test test-fast tables clean-lake docs bench

setup:
	VENV=$(VENV) scripts/setup.sh

airflow-setup:         ## Apache Airflow in its own venv (.venv-airflow) from scripts/airflow-requirements.lock
	scripts/setup-airflow.sh

demo: setup            ## set up, then run the main job on the embedded default
	$(BIN)/gridpersona --env $(ENV) demo

test: setup airflow-setup  ## the full test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: setup airflow-setup  ## unit tests only, no end-to-end lake
	$(BIN)/python -m pytest -q -m "not e2e"

tables:
	$(BIN)/gridpersona --env $(ENV) tables

docs:                  ## regenerate docs/data_dictionary.md from the table contracts
	$(BIN)/python -m gridpersona.contracts.dictionary > docs/data_dictionary.md
	$(BIN)/python -m gridpersona.config.tagdocs > docs/tags.md

bench: setup           ## benchmark: 20k meters x 30 days (and 3x), Spark stages vs DuckDB + scikit-learn (bench/README.md)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/run.py --meters 20000 --days 30 --scale 1,3 --clean-window-days 10

clean-lake:
	rm -rf lake
