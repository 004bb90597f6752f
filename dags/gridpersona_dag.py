"""Airflow DAGs for gridpersona: daily cleaning, shapes, alerts and abnormal-use flags; monthly segments, advice,
forecasts, tags and campaigns.

Two DAGs, both submitting every stage with ``scripts/submit.sh`` through a ``BashOperator``:

- ``gridpersona_daily`` (02:00 local, every day): clean >> shapes with ``--incremental``, as-of = the
  day that just ended. Each stage writes only the dates of its window that are new or changed since
  its last succeeded run (the day that ended, late readings landed in older days, and for clean the
  days those reach through its look-back); see docs/operations.md. Then alerts with ``--window-days 1``:
  the mid-cycle bill and vacancy alerts of the day that ended (at most one per customer and bill period),
  and beside them anomalies with ``--window-days 1``: the abnormal-use flags still in evidence on that day,
  for the inspection teams (the stage reads ``anomalies.history_days`` before it for the baselines).
- ``gridpersona_monthly`` (04:00 local on the 1st): waits for the daily shapes of the month's last
  day, then segment-train >> segment-assign >> advice >> tags >> campaigns >> evaluate, tags >> profile and
  segment-assign >> forecast (the monthly kWh forecast per segment and region, from the bills);
  as-of = the month's last day. It reads the stored daily shapes and never reruns clean or shapes.

**Why submit.sh and not SparkSubmitOperator.** submit.sh is the one way gridpersona is submitted:
it validates the config before anything starts, builds and ships the artifacts (package zip with
its code version, config snapshot, optional packed virtual environment), adds the Delta packages
and conf for the delta-spark backend and passes ``--master`` through unchanged. The same command
runs by hand, in CI (tests/test_submit.py) and here, so a scheduled run cannot drift from a tested
one. A SparkSubmitOperator would have to repeat all of that in the DAG (py_files, archives, conf,
packages, application args) and adds its own traps: the master lives in an Airflow connection
whose host must be URL-encoded (an unencoded ``local[1]`` silently becomes ``--master yarn``),
``spark-binary`` accepts only a few names on PATH, and the driver runs on Airflow's Python unless
PYSPARK_PYTHON is set. The Airflow environment needs neither pyspark nor gridpersona; it only runs
bash. What we give up is the operator's YARN application tracking on kill: in the default client
deploy mode the driver is a child of the task, so killing or timing out the task ends the job.

**As-of date.** Both DAGs use data-interval timetables in the lake's local time zone, and the as-of
date is the last local day that is complete at the end of the run's data interval:
``(data_interval_end as a local date) - 1 day``. For the daily DAG the interval is
[D 02:00, D+1 02:00), so as-of = D: the day has ended and its readings had two hours to land.
For the monthly DAG ([1st 04:00, next 1st 04:00)) it is the month's last day. The logical date
(``ds``) is not used: it is the interval's *start* in UTC, which for a UTC+8 zone is the previous
calendar day, and with Airflow 3's default cron timetable it is the trigger time, not a day that
has been completed. Every stage is idempotent per as-of, so a retry or a rerun replaces exactly its
own output; an incremental retry after a failure plans from the last *succeeded* run, so it redoes
what the failed one did not publish.

**Missed days.** A daily run that did not happen (scheduler down, paused DAG) needs no replay: the
next run's plan picks up every window date whose readings are new or changed since the last
succeeded run, however many days that spans. A backfill (a changed cleaning rule, a date outside the
window) is a manual whole-window run: ``submit.sh clean --as-of D --window-days N``, then shapes.
Alerts are the exception: a night's alerts cover its own day, so a missed night's day is only caught
up (a customer still over the threshold is alerted the next night anyway) by a backfill,
``submit.sh alerts --as-of D --window-days N`` (days already alerted get the same rows again).

**No work at parse time.** The file imports Airflow only (no Spark, no gridpersona, no lake
access); everything that touches data runs inside the tasks. Settings come from Airflow Variables
(or AIRFLOW_VAR_* environment variables), read when a task renders, never at parse time:

- ``gridpersona_home``: the gridpersona checkout (default: the folder above this file)
- ``gridpersona_env``: config environment, conf/<env>.yaml (default: local)
- ``gridpersona_master``: spark-submit --master (default: local[2]; yarn, k8s://..., spark://...)
- ``gridpersona_python``: Python with gridpersona's dependencies (default: <home>/.venv/bin/python)
- ``gridpersona_submit_args``: more submit.sh arguments, e.g. ``--deploy-mode cluster --pack-venv``
  or ``--set lake.root=/data/lake``
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.sensors.external_task import ExternalTaskSensor
from airflow.sdk import DAG, CronDataIntervalTimetable

# Days are cut in this zone (config ami.time_zone); schedules and as-of dates follow it.
TIME_ZONE = os.environ.get("GRIDPERSONA_TIME_ZONE", "Asia/Shanghai")
DEFAULT_HOME = str(Path(__file__).resolve().parent.parent)

DAILY_DAG_ID = "gridpersona_daily"
MONTHLY_DAG_ID = "gridpersona_monthly"
DAILY_STAGES = ("clean", "shapes", "alerts", "anomalies")
# The intended monthly order; tags, campaigns and evaluate are issue 4's stages, advice issue 15's, forecast 16's.
MONTHLY_STAGES = ("segment-train", "segment-assign", "advice", "forecast", "tags", "campaigns", "evaluate",
                  "profile")
DAILY_CRON = "0 2 * * *"      # 2 h after local midnight: the day's readings have landed
MONTHLY_CRON = "0 4 1 * *"    # after the daily run of the month's last day

DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(hours=1),
    "execution_timeout": dt.timedelta(hours=6),
}


def as_of_for(data_interval_end: dt.datetime, time_zone: str = TIME_ZONE) -> str:
    """The last local day complete at ``data_interval_end``, as YYYY-MM-DD (the stages' --as-of)."""
    # The day that holds data_interval_end has not ended (if the interval ends at midnight, that day
    # has just begun): the one before it is the last complete day. Date arithmetic on a plain
    # datetime: pendulum's own arithmetic across a zoneinfo zone gives the wrong day.
    local = dt.datetime.fromtimestamp(data_interval_end.timestamp(), ZoneInfo(time_zone))
    return (local.date() - dt.timedelta(days=1)).isoformat()


def daily_logical_date_for(logical_date: dt.datetime, data_interval_end: dt.datetime, **_) -> dt.datetime:
    """Logical date of the daily run whose as-of is this monthly run's as-of (for the sensor)."""
    as_of = dt.date.fromisoformat(as_of_for(data_interval_end))
    hour, minute = int(DAILY_CRON.split()[1]), int(DAILY_CRON.split()[0])
    return dt.datetime.combine(as_of, dt.time(hour, minute), tzinfo=ZoneInfo(TIME_ZONE))


def _var(name: str, default: str) -> str:
    return "{{ var.value.get('%s', '%s') }}" % (name, default)


def submit_task(stage: str, incremental: bool = False, window_days: int | None = None) -> BashOperator:
    """A task that submits one stage with scripts/submit.sh for the run's as-of date (``incremental``:
    only the window's new or changed dates; ``window_days``: a window of that many days, not the config's)."""
    command = (
        '"$GRIDPERSONA_HOME/scripts/submit.sh" ' + stage
        + " --as-of {{ gridpersona_as_of(data_interval_end) }}"
        + (" --incremental" if incremental else "")
        + (f" --window-days {window_days}" if window_days else "")
        + ' --env "$GRIDPERSONA_ENV" --master "$GRIDPERSONA_MASTER" '
        + _var("gridpersona_submit_args", "")
        # A trailing space: a command ending in ".sh" would be taken for a template file name.
        + " "
    )
    return BashOperator(
        task_id=stage.replace("-", "_"),
        bash_command=command,
        env={
            "GRIDPERSONA_HOME": _var("gridpersona_home", DEFAULT_HOME),
            "GRIDPERSONA_ENV": _var("gridpersona_env", "local"),
            "GRIDPERSONA_MASTER": _var("gridpersona_master", "local[2]"),
            "GRIDPERSONA_PYTHON": _var("gridpersona_python", ""),
        },
        append_env=True,  # keep PATH, JAVA_HOME, HADOOP_CONF_DIR, ... of the worker
        cwd=_var("gridpersona_home", DEFAULT_HOME),  # a relative lake.root resolves in the checkout
    )


_MACROS = {"gridpersona_as_of": as_of_for}

with DAG(
    dag_id=DAILY_DAG_ID,
    description="gridpersona daily: clean the day's meter readings, build daily load shapes, mid-cycle alerts, "
                "abnormal-use flags",
    schedule=CronDataIntervalTimetable(DAILY_CRON, timezone=TIME_ZONE),
    start_date=dt.datetime(2026, 1, 1, tzinfo=ZoneInfo(TIME_ZONE)),
    catchup=False,          # the next run's plan picks up every day a missed run would have written
    max_active_runs=1,      # a run plans from the previous one's succeeded row: they must not overlap
    default_args=DEFAULT_ARGS,
    user_defined_macros=_MACROS,
    tags=["gridpersona", "daily"],
    doc_md=__doc__,
) as daily_dag:
    clean, shapes = (submit_task(s, incremental=True) for s in DAILY_STAGES[:2])
    # The day that ended only: earlier days were alerted by their own nights (a stored alert suppresses
    # later ones of its period), and a missed night is caught up by a backfill (docs/operations.md).
    alerts = submit_task("alerts", window_days=1)
    # The flags in evidence on the day that ended (their baselines come from the days before it).
    anomalies = submit_task("anomalies", window_days=1)
    clean >> shapes >> [alerts, anomalies]

with DAG(
    dag_id=MONTHLY_DAG_ID,
    description="gridpersona monthly: segments, advice, forecasts, tags, campaigns, evaluation and group portraits",
    schedule=CronDataIntervalTimetable(MONTHLY_CRON, timezone=TIME_ZONE),
    start_date=dt.datetime(2026, 1, 1, tzinfo=ZoneInfo(TIME_ZONE)),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    user_defined_macros=_MACROS,
    tags=["gridpersona", "monthly"],
    doc_md=__doc__,
) as monthly_dag:
    wait_for_daily = ExternalTaskSensor(
        task_id="wait_for_daily_shapes",
        external_dag_id=DAILY_DAG_ID,
        external_task_id="shapes",
        execution_date_fn=daily_logical_date_for,
        mode="reschedule",
        poke_interval=600,
        timeout=6 * 3600,
    )
    tasks = {s: submit_task(s) for s in MONTHLY_STAGES}
    wait_for_daily >> tasks["segment-train"] >> tasks["segment-assign"] >> tasks["advice"] >> tasks["tags"]
    tasks["tags"] >> tasks["campaigns"] >> tasks["evaluate"]
    tasks["tags"] >> tasks["profile"]  # group portraits read the segments and the tags
    tasks["segment-assign"] >> tasks["forecast"]  # bills grouped by the month's segments
