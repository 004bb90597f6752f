#!/usr/bin/env bash
# Package gridpersona and submit one stage (or the whole chain) with spark-submit.
# `scripts/submit.sh --help` documents every option.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<'EOF'
Usage: scripts/submit.sh [OPTIONS] STAGE --as-of YYYY-MM-DD [-- EXTRA_SPARK_SUBMIT_ARGS...]

Builds gridpersona into an artifact spark-submit ships, validates and ships the
configuration, and submits jobs/<STAGE>.py with pyspark's own spark-submit.

STAGE                   clean, shapes, segment-train, segment-assign, profile (any jobs/<stage>.py),
                        or all (every stage in order, one Spark application)

Job options (passed to the job; the config is validated here first, before anything is submitted):
  --as-of YYYY-MM-DD    last local day of the run's window (required)
  --window-days N       days in the window (default: pipeline.window_days)
  --incremental         clean and shapes write only the window's new or changed dates (not with --window-days)
  --env NAME            environment: conf/<NAME>.yaml over conf/base.yaml (default: local)
  --set KEY=VALUE       override one config key, e.g. --set lake.root=/data/lake (repeatable)
  --conf-dir DIR        config folder to ship (default: the project's conf/)

Spark options:
  --master URL          passed to spark-submit unchanged (default: local[2]); yarn, k8s://https://HOST:PORT,
                        spark://HOST:PORT work as they are
  --deploy-mode MODE    client (default) or cluster. In cluster mode the config travels as
                        --archives conf.zip#gridpersona_conf and the driver reads it from there
  --conf KEY=VALUE      extra spark-submit --conf (repeatable; wins over the config's spark.conf)
  --name NAME           application name (default: gridpersona-STAGE-AS_OF)
  --delta-packages GAV  Maven coordinates for the delta-spark backend
                        (default: $GRIDPERSONA_DELTA_PACKAGES or io.delta:delta-spark_4.2_2.13:4.4.1).
                        If $GRIDPERSONA_DELTA_JARS lists local jar files (comma-separated) they are
                        shipped with --jars instead, for clusters without Maven access.
  -- ARGS...            everything after -- goes to spark-submit verbatim, before the application

Python dependencies:
  --pack-venv           build a relocatable virtual environment with the runtime dependencies
                        (venv-pack, build/submit/gridpersona-env.tar.gz), ship it with
                        --archives ...#environment and run executors (and a cluster-mode driver) on
                        ./environment/bin/python. Needed where the cluster's Python lacks deltalake,
                        pyarrow, pydantic, pyyaml, numpy. With a local master the archive is
                        unpacked into the build dir and the Python workers run on it
  --venv-archive PATH   ship an already packed environment (.tar.gz from venv-pack/conda-pack)
                        the same way instead of building one

Tools:
  --python PATH         Python with gridpersona's dependencies; validates the config and runs the
                        client-mode driver (default: $GRIDPERSONA_PYTHON, else ./.venv/bin/python,
                        else python3)
  --spark-submit PATH   spark-submit to use (default: $SPARK_SUBMIT, else pyspark's own bin/spark-submit)
  --build-dir DIR       where artifacts are built (default: build/submit)
  --build-only          build and validate, print the spark-submit command, do not submit
  --dry-run             same as --build-only
  -h, --help            this help

Artifacts (in --build-dir): gridpersona.zip (the package, for --py-files; code version baked in),
conf/ and conf.zip (snapshot of the config folder), gridpersona-env.tar.gz (with --pack-venv).

Backends: with lake.backend=delta-spark the Delta packages and
spark.sql.extensions / spark.sql.catalog.spark_catalog are added; with deltalake (default) nothing.

Examples:
  scripts/submit.sh clean --as-of 2026-08-29
  scripts/submit.sh all --as-of 2026-08-29 --master yarn --env cluster --pack-venv
  scripts/submit.sh shapes --as-of 2026-08-29 --master spark://head:7077 --conf spark.executor.memory=8g
EOF
}

die() { printf 'submit.sh: error: %s\n' "$*" >&2; exit 2; }
say() { printf '[submit] %s\n' "$*" >&2; }

STAGE="" AS_OF="" WINDOW_DAYS="" INCREMENTAL="" ENV_NAME="local" CONF_DIR="$ROOT/conf"
MASTER="local[2]" DEPLOY_MODE="client" APP_NAME="" BUILD_DIR="$ROOT/build/submit"
PACK_VENV=0 VENV_ARCHIVE="" BUILD_ONLY=0
DELTA_PACKAGES=${GRIDPERSONA_DELTA_PACKAGES:-io.delta:delta-spark_4.2_2.13:4.4.1}
PYTHON=${GRIDPERSONA_PYTHON:-}
SPARK_SUBMIT=${SPARK_SUBMIT:-}
SETS=() CONFS=() EXTRA=()

need() { [ $# -ge 2 ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --as-of) need "$@"; AS_OF=$2; shift 2 ;;
    --window-days) need "$@"; WINDOW_DAYS=$2; shift 2 ;;
    --incremental) INCREMENTAL=1; shift ;;
    --env) need "$@"; ENV_NAME=$2; shift 2 ;;
    --set) need "$@"; SETS+=("$2"); shift 2 ;;
    --conf-dir) need "$@"; CONF_DIR=$2; shift 2 ;;
    --master) need "$@"; MASTER=$2; shift 2 ;;
    --deploy-mode) need "$@"; DEPLOY_MODE=$2; shift 2 ;;
    --conf) need "$@"; CONFS+=("$2"); shift 2 ;;
    --name) need "$@"; APP_NAME=$2; shift 2 ;;
    --delta-packages) need "$@"; DELTA_PACKAGES=$2; shift 2 ;;
    --pack-venv) PACK_VENV=1; shift ;;
    --venv-archive) need "$@"; VENV_ARCHIVE=$2; shift 2 ;;
    --python) need "$@"; PYTHON=$2; shift 2 ;;
    --spark-submit) need "$@"; SPARK_SUBMIT=$2; shift 2 ;;
    --build-dir) need "$@"; BUILD_DIR=$2; shift 2 ;;
    --build-only|--dry-run) BUILD_ONLY=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$STAGE" ] || die "one stage at a time (got $STAGE and $1); use 'all' for the chain"; STAGE=$1; shift ;;
  esac
done

[ -n "$STAGE" ] || die "name a stage (clean, shapes, segment-train, segment-assign, profile, or all)"
[ -n "$AS_OF" ] || die "--as-of YYYY-MM-DD is required"
[[ "$AS_OF" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] || die "--as-of $AS_OF is not a date (YYYY-MM-DD)"
[ -z "$WINDOW_DAYS" ] || [[ "$WINDOW_DAYS" =~ ^[1-9][0-9]*$ ]] || die "--window-days $WINDOW_DAYS must be a positive integer"
[ -z "$WINDOW_DAYS" ] || [ -z "$INCREMENTAL" ] || die "--incremental and --window-days exclude each other (an incremental run plans within pipeline.window_days)"
case "$DEPLOY_MODE" in client|cluster) ;; *) die "--deploy-mode must be client or cluster, got $DEPLOY_MODE" ;; esac
for kv in ${CONFS[@]+"${CONFS[@]}"}; do [[ "$kv" == *=* ]] || die "--conf $kv: expected KEY=VALUE"; done
# jobs/<stage>.py, dashes as underscores; profile's script is segment_profile.py (a jobs/profile.py
# would shadow the standard library's profile module that pyspark imports).
case "$STAGE" in profile) JOB="$ROOT/jobs/segment_profile.py" ;; *) JOB="$ROOT/jobs/${STAGE//-/_}.py" ;; esac
[ -f "$JOB" ] || die "no job for stage '$STAGE' ($JOB); stages: $(cd "$ROOT/jobs" && ls ./*.py | sed 's#^\./##; s/\.py$//; s/^segment_profile$/profile/; s/_/-/g' | tr '\n' ' ')"
[ -d "$CONF_DIR" ] || die "config folder $CONF_DIR does not exist"
CONF_DIR=$(cd "$CONF_DIR" && pwd)

if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=$(command -v python3); fi
fi
[ -x "$PYTHON" ] || PYTHON=$(command -v "$PYTHON" || true)
[ -n "$PYTHON" ] && [ -x "$PYTHON" ] || die "no Python found; pass --python or set GRIDPERSONA_PYTHON"
# The repo's own lib/ comes first, so the code that is validated and zipped is this checkout's.
py() { PYTHONPATH="$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$@"; }

# 1. Validate the configuration the job will load (fails here, naming file and key, not on the cluster).
SET_ARGS=()
for kv in ${SETS[@]+"${SETS[@]}"}; do SET_ARGS+=(--set "$kv"); done
PLAN=$(py -m gridpersona.app.submit plan --env "$ENV_NAME" --conf-dir "$CONF_DIR" ${SET_ARGS[@]+"${SET_ARGS[@]}"}) || exit 2
BACKEND=$(sed -n 's/^backend=//p' <<<"$PLAN")
CONFIG_HASH=$(sed -n 's/^config_hash=//p' <<<"$PLAN")
[ -n "$SPARK_SUBMIT" ] || SPARK_SUBMIT="$(sed -n 's/^spark_home=//p' <<<"$PLAN")/bin/spark-submit"
[ -x "$SPARK_SUBMIT" ] || die "spark-submit not found at $SPARK_SUBMIT (install pyspark or pass --spark-submit)"
say "config: env $ENV_NAME, backend $BACKEND, lake $(sed -n 's/^lake_root=//p' <<<"$PLAN"), config hash $CONFIG_HASH"

# 2. Build the artifacts: the package zip (code version baked in) and a snapshot of the config.
SHA=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)
if [ -n "$SHA" ] && [ -n "$(git -C "$ROOT" status --porcelain -- lib 2>/dev/null)" ]; then SHA="$SHA.dirty"; fi
mkdir -p "$BUILD_DIR"
BUILD_DIR=$(cd "$BUILD_DIR" && pwd)
BUILT=$(py -m gridpersona.app.submit build --out-dir "$BUILD_DIR" --conf-dir "$CONF_DIR" --git-sha "$SHA") || exit 2
CODE_VERSION=$(sed -n 's/^code_version=//p' <<<"$BUILT")
say "built $BUILD_DIR/gridpersona.zip ($CODE_VERSION) and the config snapshot $BUILD_DIR/conf"

if [ "$PACK_VENV" = 1 ]; then
  [ -z "$VENV_ARCHIVE" ] || die "give --pack-venv or --venv-archive, not both"
  VENV_ARCHIVE="$BUILD_DIR/gridpersona-env.tar.gz"
  ENV_DIR="$BUILD_DIR/env"
  # Runtime dependencies without pyspark: the cluster's Spark provides its own pyspark on the Python path.
  DEPS=$(py - "$ROOT/pyproject.toml" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print(" ".join(d for d in deps if re.split(r"[<>=!~ \[]", d)[0].lower() != "pyspark"))
EOF
)
  say "packing a virtual environment with: $DEPS venv-pack"
  rm -rf "$ENV_DIR" "$VENV_ARCHIVE"
  "$PYTHON" -m venv --copies "$ENV_DIR"
  # shellcheck disable=SC2086  # DEPS is a list of requirement specifiers
  "$ENV_DIR/bin/python" -m pip install -q $DEPS venv-pack
  "$ENV_DIR/bin/venv-pack" -q -p "$ENV_DIR" -o "$VENV_ARCHIVE"
  say "packed $VENV_ARCHIVE ($(du -h "$VENV_ARCHIVE" | cut -f1))"
fi
[ -z "$VENV_ARCHIVE" ] || [ -f "$VENV_ARCHIVE" ] || die "--venv-archive $VENV_ARCHIVE does not exist"

# 3. Assemble spark-submit.
CMD=("$SPARK_SUBMIT" --master "$MASTER" --deploy-mode "$DEPLOY_MODE"
     --name "${APP_NAME:-gridpersona-$STAGE-$AS_OF}" --py-files "$BUILD_DIR/gridpersona.zip")
ARCHIVES=()
if [ "$DEPLOY_MODE" = cluster ]; then
  # The driver runs on the cluster: it finds the config unpacked in its working directory.
  ARCHIVES+=("$BUILD_DIR/conf.zip#gridpersona_conf")
  JOB_CONF_DIR=gridpersona_conf
else
  JOB_CONF_DIR="$BUILD_DIR/conf"
fi
export PYSPARK_DRIVER_PYTHON PYSPARK_PYTHON
if [ -n "$VENV_ARCHIVE" ] && [[ "$MASTER" == local* ]]; then
  # A local master has no container working directory to unpack into: unpack the archive here
  # and run the Python workers on it, which checks that the packed environment works.
  rm -rf "$BUILD_DIR/environment" && mkdir -p "$BUILD_DIR/environment"
  tar -xzf "$VENV_ARCHIVE" -C "$BUILD_DIR/environment"
  PYSPARK_PYTHON="$BUILD_DIR/environment/bin/python" PYSPARK_DRIVER_PYTHON="$PYTHON"
elif [ -n "$VENV_ARCHIVE" ]; then
  ARCHIVES+=("$VENV_ARCHIVE#environment")
  PYSPARK_PYTHON=./environment/bin/python
  if [ "$DEPLOY_MODE" = client ]; then PYSPARK_DRIVER_PYTHON="$PYTHON"; else unset PYSPARK_DRIVER_PYTHON; fi
elif [[ "$MASTER" == local* ]]; then
  PYSPARK_PYTHON="$PYTHON" PYSPARK_DRIVER_PYTHON="$PYTHON"
elif [ "$DEPLOY_MODE" = client ]; then
  PYSPARK_DRIVER_PYTHON="$PYTHON"
  PYSPARK_PYTHON=${PYSPARK_PYTHON:-python3}
else
  unset PYSPARK_DRIVER_PYTHON
  PYSPARK_PYTHON=${PYSPARK_PYTHON:-python3}
fi
if [ ${#ARCHIVES[@]} -gt 0 ]; then CMD+=(--archives "$(IFS=,; echo "${ARCHIVES[*]}")"); fi
if [[ "$MASTER" == local* ]]; then
  # Local runs get gridpersona's quiet log4j config; clusters keep their own logging.
  CMD+=(--driver-java-options "-Dlog4j2.configurationFile=file:$ROOT/lib/gridpersona/log4j2.properties")
fi
if [ "$BACKEND" = delta-spark ]; then
  if [ -n "${GRIDPERSONA_DELTA_JARS:-}" ]; then CMD+=(--jars "$GRIDPERSONA_DELTA_JARS"); else CMD+=(--packages "$DELTA_PACKAGES"); fi
  CMD+=(--conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
        --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog)
fi
# The config's spark.conf first, so --conf given here wins (spark-submit keeps the last value).
while IFS= read -r kv; do
  [ -n "$kv" ] && CMD+=(--conf "$kv")
done < <(sed -n 's/^conf=//p' <<<"$PLAN")
for kv in ${CONFS[@]+"${CONFS[@]}"}; do CMD+=(--conf "$kv"); done
CMD+=(${EXTRA[@]+"${EXTRA[@]}"})
CMD+=("$JOB" --as-of "$AS_OF" --env "$ENV_NAME" --conf-dir "$JOB_CONF_DIR" ${SET_ARGS[@]+"${SET_ARGS[@]}"})
[ -z "$WINDOW_DAYS" ] || CMD+=(--window-days "$WINDOW_DAYS")
[ -z "$INCREMENTAL" ] || CMD+=(--incremental)

printf -v SHOWN '%q ' "${CMD[@]}"
say "PYSPARK_PYTHON=${PYSPARK_PYTHON:-} PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-}"
say "${SHOWN% }"
if [ "$BUILD_ONLY" = 1 ]; then
  exit 0
fi
exec "${CMD[@]}"
