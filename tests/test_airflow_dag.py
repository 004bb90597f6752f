"""The Airflow DAGs (dags/gridpersona_dag.py) under real Airflow, run from its own venv (.venv-airflow).

scripts/setup-airflow.sh installs it (make test does); Airflow is called by subprocess because it
lives beside the project's venv, not in it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from gridpersona.config import load_settings
from gridpersona.lake import Lake

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
AIRFLOW_VENV = Path(os.environ.get("AIRFLOW_VENV", ROOT / ".venv-airflow"))
DAYS = 4  # clean and shapes over the 4 days ending on AS_OF, read from a copy of the shared lake's bronze
AS_OF = dt.date(2026, 6, 7)  # the as-of of the manual run below; inside the shared lake's 14 days
QUICK_JVM = "-XX:TieredStopAtLevel=1"  # short-lived JVMs: C1 only (see tests/test_submit.py)

# Loads the DagBag and describes every DAG as JSON; also reports whether parsing imported Spark or gridpersona.
DESCRIBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {},
       "heavy_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("pyspark", "gridpersona", "py4j"))}
for dag_id, dag in bag.dags.items():
    tt = dag.timetable
    out["dags"][dag_id] = {
        "timetable": type(tt).__name__, "cron": tt.expression, "timezone": str(tt.timezone),
        "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
        "tasks": {t.task_id: {"type": type(t).__name__, "upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                              "command": getattr(t, "bash_command", None),
                              "external": [getattr(t, "external_dag_id", None), getattr(t, "external_task_id", None)]}
                  for t in dag.tasks},
    }
print("JSON:" + json.dumps(out))
"""

AS_OF_CASES = r"""
import json, sys
import pendulum
sys.path.insert(0, sys.argv[1])
from gridpersona_dag import as_of_for, daily_logical_date_for
cases = {
    "daily_0200_local": as_of_for(pendulum.datetime(2026, 6, 8, 2, tz="Asia/Shanghai").in_timezone("UTC")),
    "midnight_local": as_of_for(pendulum.datetime(2026, 6, 8, 0, tz="Asia/Shanghai").in_timezone("UTC")),
    "monthly_0400_local": as_of_for(pendulum.datetime(2026, 7, 1, 4, tz="Asia/Shanghai").in_timezone("UTC")),
    "daily_run_for_month_end": daily_logical_date_for(None, pendulum.datetime(2026, 7, 1, 4, tz="Asia/Shanghai")).isoformat(),
}
print("JSON:" + json.dumps(cases))
"""


def _json_line(stdout: str) -> dict:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("JSON:"))
    return json.loads(line[5:])


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """(run, env): run(*argv) runs a command of the Airflow venv with AIRFLOW_HOME in a tmp dir."""
    python = AIRFLOW_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"Airflow is not installed in {AIRFLOW_VENV}: run scripts/setup-airflow.sh (make test does)")
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "AIRFLOW"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS), "PYTHONPATH": ""})

    def run(*argv: str, extra_env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
        exe = str(python) if argv[0] == "python" else str(AIRFLOW_VENV / "bin" / argv[0])
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, env={**env, **(extra_env or {})},
                              timeout=timeout, cwd=home)
        assert proc.returncode == 0, f"{' '.join(argv[:3])} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        return proc

    return run


@pytest.fixture(scope="module")
def dagbag(airflow):
    return _json_line(airflow("python", "-c", DESCRIBE, str(DAGS)).stdout)


def test_dagbag_loads_both_dags_with_no_import_errors_and_no_spark_at_parse_time(dagbag):
    assert dagbag["import_errors"] == {}
    assert set(dagbag["dags"]) == {"gridpersona_daily", "gridpersona_monthly"}
    # Parsing imports Airflow only: no Spark, no gridpersona, so no lake or cluster access at parse time.
    assert dagbag["heavy_modules"] == []


def test_daily_dag_runs_clean_then_shapes_then_alerts_and_anomalies_at_0200_local_with_retries(dagbag):
    daily = dagbag["dags"]["gridpersona_daily"]
    assert (daily["timetable"], daily["cron"], daily["timezone"]) == ("CronDataIntervalTimetable", "0 2 * * *", "Asia/Shanghai")
    assert daily["catchup"] is False and daily["max_active_runs"] == 1
    assert {t: v["upstream"] for t, v in daily["tasks"].items()} == {"clean": [], "shapes": ["clean"],
                                                                    "alerts": ["shapes"], "anomalies": ["shapes"]}
    for stage, task in (("clean", daily["tasks"]["clean"]), ("shapes", daily["tasks"]["shapes"])):
        assert task["type"] == "BashOperator" and task["retries"] == 2
        assert task["command"].startswith(f'"$GRIDPERSONA_HOME/scripts/submit.sh" {stage} --as-of {{{{ gridpersona_as_of(data_interval_end) }}}}')
        assert " --incremental " in task["command"]  # only the window's new or changed dates
        assert task["command"].endswith(" ")  # never read as a template file name
    for stage in ("alerts", "anomalies"):
        task = daily["tasks"][stage]
        assert task["type"] == "BashOperator" and task["retries"] == 2
        assert task["command"].startswith(f'"$GRIDPERSONA_HOME/scripts/submit.sh" {stage} --as-of ')
        # The day that ended only (a backfill is a manual --window-days N run), never --incremental.
        assert " --window-days 1 " in task["command"] and "--incremental" not in task["command"]


def test_monthly_dag_waits_for_daily_then_segments_advice_forecast_tags_campaigns_evaluate_profile(dagbag):
    monthly = dagbag["dags"]["gridpersona_monthly"]
    assert (monthly["timetable"], monthly["cron"], monthly["timezone"]) == ("CronDataIntervalTimetable", "0 4 1 * *", "Asia/Shanghai")
    assert {t: v["upstream"] for t, v in monthly["tasks"].items()} == {
        "wait_for_daily_shapes": [],
        "segment_train": ["wait_for_daily_shapes"],
        "segment_assign": ["segment_train"],
        "advice": ["segment_assign"],
        "forecast": ["segment_assign"],
        "tags": ["advice"],
        "campaigns": ["tags"],
        "evaluate": ["campaigns"],
        "profile": ["tags"],
    }
    assert monthly["tasks"]["wait_for_daily_shapes"]["external"] == ["gridpersona_daily", "shapes"]
    stage_of = {"segment_train": "segment-train", "segment_assign": "segment-assign"}
    for task_id, task in monthly["tasks"].items():
        assert task["retries"] == 2
        if task["type"] == "BashOperator":
            assert f"submit.sh\" {stage_of.get(task_id, task_id)} --as-of" in task["command"]
            assert "--incremental" not in task["command"]  # a whole-window stage over the stored shapes


def test_as_of_is_the_last_local_day_complete_at_the_end_of_the_data_interval(airflow):
    cases = _json_line(airflow("python", "-c", AS_OF_CASES, str(DAGS)).stdout)
    assert cases["daily_0200_local"] == "2026-06-07"
    assert cases["midnight_local"] == "2026-06-07"
    assert cases["monthly_0400_local"] == "2026-06-30"
    # The monthly sensor waits for the daily run whose as-of is the month's last day.
    assert cases["daily_run_for_month_end"] == "2026-06-30T02:00:00+08:00"


@pytest.mark.e2e
def test_airflow_dags_test_runs_the_daily_path_end_to_end(airflow, synthetic_lake, spark, tmp_path):
    root = tmp_path / "lake"
    assert synthetic_lake.start <= AS_OF - dt.timedelta(days=DAYS - 1) and AS_OF <= synthetic_lake.as_of
    synthetic_lake.copy(root, [t for t in synthetic_lake.lake.list_tables() if t.startswith("bronze.")])
    settings = load_settings("test", [f"lake.root={root}", f"pipeline.window_days={DAYS}"])
    lake = Lake(settings, spark)

    airflow("airflow", "db", "migrate")
    variables = {
        "JAVA_TOOL_OPTIONS": QUICK_JVM,  # reaches the spark-submit JVMs through the BashOperator's env
        "AIRFLOW_VAR_GRIDPERSONA_HOME": str(ROOT),
        "AIRFLOW_VAR_GRIDPERSONA_ENV": "test",
        "AIRFLOW_VAR_GRIDPERSONA_MASTER": "local[2]",
        "AIRFLOW_VAR_GRIDPERSONA_PYTHON": sys.executable,
        "AIRFLOW_VAR_GRIDPERSONA_SUBMIT_ARGS": f"--set lake.root={root} --set pipeline.window_days={DAYS} "
                                               f"--build-dir {tmp_path / 'build'}",
    }
    # A manual run at 2026-06-08 08:00 local covers the last complete interval [06-07 02:00, 06-08 02:00).
    proc = airflow("airflow", "dags", "test", "gridpersona_daily", "2026-06-08T08:00:00+08:00", extra_env=variables)
    out = proc.stdout + proc.stderr
    assert "state=success" in out, out[-4000:]
    assert "--as-of 2026-06-07" in out

    runs = {r["stage"]: r for r in lake.read("ops.job_runs").filter(F.col("status") != "running").collect()}
    assert set(runs) == {"clean", "shapes", "alerts", "anomalies"}
    assert all(r["status"] == "succeeded" and r["as_of"] == AS_OF for r in runs.values())
    assert runs["clean"]["config_hash"] == settings.config_hash()
    assert runs["alerts"]["window_days"] == 1 and lake.exists("gold.alert_targets")  # the day that ended
    assert runs["anomalies"]["window_days"] == 1 and lake.exists("gold.anomaly_flags")
    shapes = lake.read("silver.daily_load_shape")
    assert shapes.filter(F.col("date") == AS_OF).count() > 0
    assert shapes.agg(F.max("date")).first()[0] == AS_OF
