"""Stages commit whole, read one snapshot, and fail cleanly on a conflict (hand-made stages, in-process)."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from gridpersona.lake import deltalog
from gridpersona.stages import runner as runtime
from gridpersona.lake import CHECKPOINT_HOOKS, Lake, LakeError, WriteConflictError
from gridpersona.contracts.ops import JOB_RUNS
from gridpersona.stages.runner import StageContext, StageResult, run_stage, stage_runs

AS_OF = dt.date(2026, 6, 30)
A, B = "gold.a", "gold.b"


def _frame(spark, value: int, n: int = 3):
    return spark.range(n).select(F.col("id").alias("k"), F.lit(value).alias("v"), F.lit(AS_OF).alias("as_of"))


def _values(lake: Lake, table: str) -> set[int]:
    return {r["v"] for r in lake.read(table).collect()}


def _writer(spark, value: int, fail_after_first: bool = False):
    """A stage writing gold.a then gold.b (value ``value``); optionally raising between the two."""

    def stage(ctx: StageContext) -> StageResult:
        ctx.lake.replace(_frame(spark, value), A, where={"as_of": AS_OF}, partition_by=["as_of"])
        if fail_after_first:
            raise RuntimeError("boom between the tables")
        ctx.lake.replace(_frame(spark, value), B, where={"as_of": AS_OF}, partition_by=["as_of"])
        return StageResult(outputs={A: 3, B: 3})

    return stage


def _ctx(lake: Lake) -> StageContext:
    return StageContext(lake.settings, lake.spark, lake, AS_OF, 30)


def _fresh(lake: Lake) -> Lake:
    """Another reader/writer of the same lake, as another process would be."""
    return Lake(lake.settings, lake.spark)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fake_running_row(lake: Lake, run_id: str, stage: str, pid: int) -> None:
    row = (run_id, stage, AS_OF, 30, dt.datetime.now(dt.timezone.utc), None, "running", None, None, None, None,
           "h", "0", "test", pid, socket.gethostname(), None, None, None)
    lake.write_arrow(JOB_RUNS.name, runtime.job_runs_arrow([row]), mode="append", add_columns=True)


def test_a_stage_failing_between_its_tables_leaves_both_published_and_a_rerun_shows_both_new(lake, spark):
    run_stage("two", _writer(spark, 1), _ctx(lake), outputs=[A, B])
    failing = _ctx(lake)
    with pytest.raises(RuntimeError, match="boom between the tables"):
        run_stage("two", _writer(spark, 2, fail_after_first=True), failing, outputs=[A, B])
    reader = _fresh(lake)
    assert _values(reader, A) == {1} and _values(reader, B) == {1}
    assert reader.version(B) == 0
    (failed,) = [r for r in stage_runs(reader) if r["run_id"] == failing.run_id]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom between the tables"
    # The failed stage's commit to gold.a (version 1) was rolled back at once: version 2 restores version 0.
    assert reader.version(A) == 2 and reader.history_entry(A, 2)["operation"] == "RESTORE"

    rerun = _ctx(lake)
    run_stage("two", _writer(spark, 3), rerun, outputs=[A, B])
    reader = _fresh(lake)
    assert _values(reader, A) == {3} and _values(reader, B) == {3}
    (done,) = [r for r in stage_runs(reader) if r["run_id"] == rerun.run_id]
    assert done["versions_written"] == {A: reader.version(A), B: reader.version(B)}


def test_a_crashed_stage_publishes_nothing_and_the_next_writer_rolls_it_back(lake, spark):
    run_stage("two", _writer(spark, 1), _ctx(lake), outputs=[A, B])
    # A process that died after committing gold.a: its running row, its tagged commit, no end row, no lock.
    crashed = Lake(lake.settings, spark)
    _fake_running_row(crashed, "deadbeef0001", "two", _dead_pid())
    crashed.begin_stage("deadbeef0001", "two", [A, B])
    crashed.replace(_frame(spark, 9), A, where={"as_of": AS_OF})
    crashed.end_stage()  # the kernel releases a dead process's locks; nothing else happens

    reader = _fresh(lake)
    assert _values(reader, A) == {1} and reader.version(A) == 0 and reader._latest_physical(A) == 1
    assert [r["status"] for r in stage_runs(reader) if r["run_id"] == "deadbeef0001"] == ["crashed"]

    run_stage("two", _writer(spark, 2), _ctx(lake), outputs=[A, B])
    reader = _fresh(lake)
    assert _values(reader, A) == {2} and _values(reader, B) == {2}
    ops = [reader.history_entry(A, v)["operation"] for v in range(reader._latest_physical(A) + 1)]
    assert ops[2] == "RESTORE"  # the crashed commit (version 1) undone before the rerun wrote


def test_a_table_only_a_crashed_first_run_wrote_reads_as_absent_and_is_rebuilt(lake, spark):
    _fake_running_row(lake, "deadbeef0002", "two", _dead_pid())
    lake.begin_stage("deadbeef0002", "two", [A])
    lake.replace(_frame(spark, 9), A, where={"as_of": AS_OF}, partition_by=["as_of"])
    lake.end_stage()
    reader = _fresh(lake)
    assert not reader.exists(A) and A not in reader.list_tables()
    with pytest.raises(LakeError, match="gold.a: no published version yet.*gridpersona runs"):
        reader.read(A)
    run_stage("two", _writer(spark, 4), _ctx(lake), outputs=[A, B])
    assert _values(_fresh(lake), A) == {4} and _fresh(lake).version(A) == 0  # rebuilt from scratch


def test_a_stage_reads_its_own_pending_writes_while_others_see_the_published_version(lake, spark):
    run_stage("two", _writer(spark, 1), _ctx(lake), outputs=[A, B])
    seen = {}

    def stage(ctx: StageContext) -> StageResult:
        ctx.lake.replace(_frame(spark, 5), A, where={"as_of": AS_OF})
        seen["own"] = _values(ctx.lake, A)
        seen["other"] = _values(_fresh(lake), A)
        return StageResult()

    run_stage("one", stage, _ctx(lake), outputs=[A])
    assert seen == {"own": {5}, "other": {1}}
    assert _values(_fresh(lake), A) == {5}


def test_inputs_are_pinned_at_the_stage_start_and_recorded(lake, spark):
    source = "bronze.src"
    lake.append(_frame(spark, 1), source, partition_by=["as_of"])
    seen = {}

    def stage(ctx: StageContext) -> StageResult:
        before = ctx.lake.read(source).count()
        _fresh(lake).append(_frame(spark, 2), source)  # an ingest committed while the stage runs
        seen["rows"] = (before, ctx.lake.read(source).count(), ctx.lake.partition_rows(source, "as_of", [AS_OF]))
        seen["version"] = ctx.lake.version(source)
        ctx.lake.replace(_frame(spark, before), A, where={"as_of": AS_OF}, partition_by=["as_of"])
        return StageResult()

    ctx = _ctx(lake)
    run_stage("reader", stage, ctx, outputs=[A], inputs=[source])
    assert seen == {"rows": (3, 3, 3), "version": 0}
    (run,) = stage_runs(_fresh(lake))
    assert run["versions_read"] == {source: 0} and run["versions_written"] == {A: 0}
    assert _fresh(lake).read(source).count() == 6  # the late rows are there for the next run


def test_a_second_writer_gets_a_one_line_conflict_and_writes_nothing(lake, spark):
    holder = Lake(lake.settings, spark)
    holder.begin_stage("abc123def456", "clean", [A])
    try:
        loser = _ctx(lake)
        with pytest.raises(WriteConflictError) as err:
            run_stage("clean", _writer(spark, 7), loser, outputs=[A, B])
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith(f"{A} is being written by run abc123def456 (stage clean, pid {os.getpid()}, since ")
        assert " UTC); nothing was written" in message
        assert not lake.exists(A) and not lake.exists(B)
        (row,) = stage_runs(lake)
        assert (row["run_id"], row["status"]) == (loser.run_id, "failed")
        # An ingest-style write (outside any stage) of a locked table is refused the same way.
        with pytest.raises(WriteConflictError, match=r"^gold.a is being written by run abc123def456"):
            lake.append(_frame(spark, 1), A)
    finally:
        holder.end_stage()
    lake.append(_frame(spark, 1), A)  # free again once the holder ends
    assert _values(lake, A) == {1}


def test_runs_tells_a_crashed_stage_from_a_running_one(lake, spark):
    _fake_running_row(lake, "deadbeef0003", "clean", _dead_pid())
    live = Lake(lake.settings, spark)
    _fake_running_row(live, "live00000001", "shapes", os.getpid())
    live.begin_stage("live00000001", "shapes", ["silver.daily_load_shape"])
    try:
        status = {r["run_id"]: r["status"] for r in stage_runs(lake)}
        assert status == {"deadbeef0003": "crashed", "live00000001": "running"}
    finally:
        live.end_stage()


def test_a_crashed_writes_leftovers_are_removed_but_committed_files_kept(lake, spark):
    lake.append(_frame(spark, 1), A, partition_by=["as_of"])
    root = lake.path(A)
    committed = sorted(deltalog.added_paths(root, -1))
    part = os.path.dirname(os.path.join(root, committed[0]))
    orphan = os.path.join(part, "part-00000-orphan.c000.snappy.parquet")
    with open(orphan, "wb") as fh:
        fh.write(b"moved in, never committed")
    staging = os.path.join(root, "_staging")
    os.makedirs(os.path.join(staging, "u1", "_temporary", "0"))
    with open(os.path.join(staging, "u1.journal"), "w") as fh:
        json.dump({"base_version": 0, "files": [os.path.relpath(orphan, root)]}, fh)
    with open(os.path.join(staging, "u2.journal"), "w") as fh:  # a journal written before version 0's commit
        json.dump({"base_version": -1, "files": committed}, fh)

    lake.append(_frame(spark, 2), A)
    assert not os.path.exists(staging) and not os.path.exists(orphan)
    assert all(os.path.exists(os.path.join(root, rel)) for rel in committed)
    assert _values(lake, A) == {1, 2}


def test_an_older_run_log_gains_the_new_columns_on_the_next_stage(lake, spark):
    old = JOB_RUNS.schema.fields[:14]
    from pyspark.sql import types as T

    row = ("r0", "clean", AS_OF, 30, dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc), 1.0, "succeeded", 1, 1, "{}",
           None, "h", "0.1.0", "test")
    lake.append(spark.createDataFrame([row], T.StructType(old)), JOB_RUNS.name)
    run_stage("two", _writer(spark, 1), _ctx(lake), outputs=[A, B])
    stored = lake.schema(JOB_RUNS.name)
    assert stored.fieldNames() == JOB_RUNS.schema.fieldNames()
    runs = {r["run_id"]: r for r in stage_runs(lake)}
    assert runs["r0"]["status"] == "succeeded" and runs["r0"]["versions_written"] == {}
    assert runs["r0"]["dates"] is None  # an old row reads as a whole-window run
    assert _values(lake, A) == {1}


def test_a_kill_point_hook_sees_each_commit_and_the_publish_point(lake, spark):
    points: list[str] = []
    CHECKPOINT_HOOKS.append(points.append)
    try:
        run_stage("two", _writer(spark, 1), _ctx(lake), outputs=[A, B])
    finally:
        CHECKPOINT_HOOKS.remove(points.append)
    assert points == ["two:staged:gold.a", "two:moved:gold.a", "two:committed:gold.a",
                      "two:staged:gold.b", "two:moved:gold.b", "two:committed:gold.b", "two:before-publish"]
