"""Progress lines and the ops.job_runs run log, on hand-made stages (no pipeline run needed)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os

import pytest
from pyspark.sql import functions as F

from gridpersona.stages import runner as runtime
from gridpersona.contracts.ops import JOB_RUNS
from gridpersona.stages.runner import StageContext, StageResult, run_stage

AS_OF = dt.date(2026, 6, 30)


def _ctx(settings, spark, lake) -> StageContext:
    return StageContext(settings, spark, lake, AS_OF, 30)


def _end_row(lake):
    """The one end row (succeeded / failed) of a single stage run; its running row precedes it."""
    rows = lake.read(JOB_RUNS.name).collect()
    assert [r["status"] for r in rows].count("running") == 1
    (row,) = [r for r in rows if r["status"] != "running"]
    return row


def test_a_stage_prints_each_write_as_it_goes_and_logs_a_succeeded_run(settings, spark, lake, caplog, monkeypatch):
    import sys
    import types

    # The run row carries the code version of the code that ran: here, one baked into a shipped artifact.
    monkeypatch.setitem(sys.modules, "gridpersona._build_info", types.SimpleNamespace(CODE_VERSION="0.9.9+b4ked01"))

    def tiny_stage(ctx: StageContext) -> StageResult:
        df = ctx.spark.range(5).select(F.col("id").alias("meter_n"), F.lit(AS_OF).alias("as_of"))
        written = ctx.lake.replace(df, "gold.tiny", where={"as_of": [AS_OF]}, partition_by=["as_of"])
        return StageResult(rows_in=7, outputs={"gold.tiny": written.rows})

    ctx = _ctx(settings, spark, lake)
    with caplog.at_level(logging.INFO, logger="gridpersona"):
        run_stage("tiny", tiny_stage, ctx, outputs=["gold.tiny"])
    messages = [r.getMessage() for r in caplog.records]
    start = next(i for i, m in enumerate(messages) if m.startswith("[tiny] as-of 2026-06-30"))
    write = next(i for i, m in enumerate(messages) if m.startswith("[tiny] replace gold.tiny: 5 rows, version 0"))
    done = next(i for i, m in enumerate(messages) if m.startswith("[tiny] done in "))
    assert start < write < done  # progress while the stage runs, not only its total at the end
    assert "7 rows in -> gold.tiny 5" in messages[done]

    row = _end_row(lake)
    assert (row["run_id"], row["stage"], row["as_of"], row["window_days"]) == (ctx.run_id, "tiny", AS_OF, 30)
    assert (row["status"], row["rows_in"], row["rows_out"], row["error"]) == ("succeeded", 7, 5, None)
    assert row["duration_s"] > 0 and row["started_at"] is not None
    assert json.loads(row["versions_written"]) == {"gold.tiny": 0} and row["pid"] == os.getpid() and row["host"]
    assert row["config_hash"] == settings.config_hash()
    assert row["code_version"] == "0.9.9+b4ked01"
    assert row["env"] == "test"


def test_a_failed_stage_is_recorded_as_failed_with_its_error_and_still_raises(settings, spark, lake):
    def broken_stage(ctx: StageContext) -> StageResult:
        raise ValueError("bronze.ami_interval: column kwh is missing")

    ctx = _ctx(settings, spark, lake)
    with pytest.raises(ValueError, match="column kwh is missing"):
        run_stage("broken", broken_stage, ctx)
    row = _end_row(lake)
    assert (row["run_id"], row["stage"], row["as_of"], row["status"]) == (ctx.run_id, "broken", AS_OF, "failed")
    assert row["error"].startswith("ValueError: bronze.ami_interval: column kwh is missing")
    assert "broken_stage" in row["error"]  # the traceback says where
    assert row["rows_in"] is None and row["rows_out"] is None
    assert row["config_hash"] == settings.config_hash() and row["code_version"]


def test_a_failure_that_breaks_spark_itself_is_still_recorded(settings, spark, lake):
    class BrokenSpark:
        """Stands for a session whose Python workers cannot start: every job fails."""

        def __getattr__(self, name):
            raise RuntimeError("Cannot run program \"./environment/bin/python\": No such file or directory")

    def stage_needing_spark(ctx: StageContext) -> StageResult:
        ctx.spark.createDataFrame([(1,)], "x int").count()
        return StageResult()

    ctx = StageContext(settings, BrokenSpark(), lake, AS_OF, 30)
    with pytest.raises(RuntimeError):
        run_stage("shapes", stage_needing_spark, ctx)
    row = _end_row(lake)
    assert (row["stage"], row["status"]) == ("shapes", "failed")
    assert "./environment/bin/python" in row["error"]


def test_run_log_rows_written_without_spark_match_the_table_schema(settings, spark, lake):
    from gridpersona.lake import check_schema

    started = dt.datetime(2026, 7, 1, 2, 0, tzinfo=dt.timezone.utc)
    row = ("r1", "clean", AS_OF, 30, started, 1.5, "succeeded", 10, 9, "{}", None, "h", "0.1.0", "test", 42, "host1",
           '{"bronze.ami_interval": 3}', '{"silver.ami_clean": 4}', "2026-06-01..2026-06-03,2026-06-10")
    # A table first written by Spark (older lakes) takes rows written through Arrow, and back.
    lake.append(spark.createDataFrame([row], JOB_RUNS.schema), JOB_RUNS.name)
    lake.write_arrow(JOB_RUNS.name, runtime.job_runs_arrow([row]), mode="append")
    check_schema(JOB_RUNS.name, JOB_RUNS.schema, lake.read(JOB_RUNS.name).schema)
    rows = lake.read(JOB_RUNS.name).collect()
    assert len(rows) == 2 and rows[0] == rows[1]
    assert rows[0]["started_at"] == dt.datetime.fromtimestamp(started.timestamp())  # PySpark: naive, process-local


def test_code_version_outside_an_artifact_is_the_package_version_and_the_git_commit():
    import subprocess
    from pathlib import Path

    from gridpersona import __version__

    checkout = Path(runtime.__file__).resolve().parents[3]
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=checkout).stdout.strip()
    assert __version__ and runtime.code_version() == (f"{__version__}+{sha}" if sha else __version__)


def test_code_version_prefers_the_version_baked_into_a_shipped_artifact(monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "gridpersona._build_info", types.SimpleNamespace(CODE_VERSION="0.1.0+abc1234"))
    assert runtime.code_version() == "0.1.0+abc1234"
