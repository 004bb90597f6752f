#!/usr/bin/env bash
# Set up gridpersona from nothing: Java 17 (a JDK: javac builds the SQL guard), a virtual
# environment in .venv, the project with its dev dependencies and the dl extra (torch), the SQL guard's jar.
# Idempotent: a second run only checks.
#   PYTHON=python3.11 scripts/setup.sh      # choose the interpreter (>= 3.11)
#   VENV=/path/to/venv scripts/setup.sh     # choose the venv location
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

say() { printf '[setup] %s\n' "$*"; }

java_major() {
  java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] || ! command -v javac >/dev/null 2>&1; then
  say "no JDK >= 17 (java and javac) found: installing Debian's openjdk-17-jdk-headless"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless >/dev/null
fi
say "java: $(java -version 2>&1 | head -n 1), $(javac -version 2>&1)"

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gridpersona needs Python >= 3.11, found " + sys.version)'
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.gridpersona-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing gridpersona, its dev dependencies and the dl extra (PyTorch, CPU; first time: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev,dl]"
  touch "$stamp"
fi
# The SQL guard (read-only `gridpersona sql` / `sql-server`): compiled once against pyspark's jars, cached.
say "SQL guard: $("$VENV/bin/python" -c 'from gridpersona.analyst.guard import build_jar; print(build_jar())')"
say "ready: $("$VENV/bin/gridpersona" --version), $("$VENV/bin/python" -c 'import pyspark, deltalake; print("pyspark", pyspark.__version__, "deltalake", deltalake.__version__)')"
