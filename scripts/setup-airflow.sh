#!/usr/bin/env bash
# Set up Apache Airflow beside gridpersona, in its own virtual environment (.venv-airflow), from the
# pinned lock file scripts/airflow-requirements.lock. Idempotent: a second run only checks.
# Airflow needs neither pyspark nor gridpersona: its tasks run scripts/submit.sh, which uses the
# project's .venv. Used by `make test` (tests/test_airflow_dag.py) and for local scheduling.
#   PYTHON=python3.11 scripts/setup-airflow.sh         # interpreter (>= 3.10; the lock was made on 3.11)
#   AIRFLOW_VENV=/path/to/venv scripts/setup-airflow.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
AIRFLOW_VENV=${AIRFLOW_VENV:-.venv-airflow}
LOCK=scripts/airflow-requirements.lock

say() { printf '[setup-airflow] %s\n' "$*"; }

if [ ! -x "$AIRFLOW_VENV/bin/python" ]; then
  say "creating virtual environment $AIRFLOW_VENV"
  "$PYTHON" -m venv "$AIRFLOW_VENV"
fi
stamp="$AIRFLOW_VENV/.gridpersona-airflow-installed"
if [ ! -f "$stamp" ] || [ "$LOCK" -nt "$stamp" ]; then
  say "installing Apache Airflow from $LOCK (first time: about a minute)"
  start=$(date +%s)
  "$AIRFLOW_VENV/bin/python" -m pip install -q --upgrade pip
  "$AIRFLOW_VENV/bin/python" -m pip install -q -r "$LOCK"
  touch "$stamp"
  say "installed in $(( $(date +%s) - start )) s"
fi
say "ready: apache-airflow $("$AIRFLOW_VENV/bin/python" -c "import importlib.metadata as m; print(m.version('apache-airflow'))") in $AIRFLOW_VENV"
