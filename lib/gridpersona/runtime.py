"""Running stages: context, timings, row counts and the ``ops.job_runs`` log.

A stage is a function ``(ctx: StageContext) -> StageResult`` that reads through
``ctx.lake``, applies transformations and writes its outputs idempotently for
``ctx.as_of`` (a rerun replaces exactly its own output).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import subprocess
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from gridpersona import __version__
from gridpersona.config import Settings
from gridpersona.console import stage_scope
from gridpersona.lake import Lake

log = logging.getLogger("gridpersona")

JOB_RUNS_TABLE = "ops.job_runs"
JOB_RUNS_SCHEMA = T.StructType([
    T.StructField("run_id", T.StringType(), False),
    T.StructField("stage", T.StringType(), False),
    T.StructField("as_of", T.DateType(), False),
    T.StructField("window_days", T.IntegerType(), True),
    T.StructField("started_at", T.TimestampType(), False),
    T.StructField("duration_s", T.DoubleType(), True),
    T.StructField("status", T.StringType(), False),
    T.StructField("rows_in", T.LongType(), True),
    T.StructField("rows_out", T.LongType(), True),
    T.StructField("outputs", T.StringType(), True),
    T.StructField("error", T.StringType(), True),
    T.StructField("config_hash", T.StringType(), True),
    T.StructField("code_version", T.StringType(), True),
    T.StructField("env", T.StringType(), True),
])


@dataclass
class StageContext:
    settings: Settings
    spark: SparkSession
    lake: Lake
    as_of: dt.date
    window_days: int
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def window(self) -> tuple[dt.date, dt.date]:
        """First and last local day of the run's window (inclusive)."""
        return self.as_of - dt.timedelta(days=self.window_days - 1), self.as_of

    @property
    def window_dates(self) -> list[dt.date]:
        first, last = self.window
        return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass
class StageResult:
    rows_in: int = 0
    outputs: dict[str, int] = field(default_factory=dict)  # table -> rows written
    notes: list[str] = field(default_factory=list)  # lines for the console summary
    seconds: float = 0.0

    @property
    def rows_out(self) -> int:
        return sum(self.outputs.values())


def code_version() -> str:
    """The package version plus the git commit: baked into a shipped artifact by scripts/submit.sh, else asked of git."""
    try:
        from gridpersona._build_info import CODE_VERSION  # only in artifacts built by submit.sh

        return CODE_VERSION
    except ImportError:
        pass
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=__file__.rsplit("/lib/", 1)[0]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def spark_progress_line(spark: SparkSession) -> str | None:
    """'2 Spark stages running (ids 112, 113): 37/200 tasks done' for the active stages, None when idle."""
    tracker = spark.sparkContext.statusTracker()
    infos = [i for i in (tracker.getStageInfo(s) for s in sorted(tracker.getActiveStageIds())) if i is not None]
    if not infos:
        return None
    done, total = sum(i.numCompletedTasks for i in infos), sum(i.numTasks for i in infos)
    ids = ", ".join(str(i.stageId) for i in infos)
    return f"{len(infos)} Spark stage(s) running (ids {ids}): {done}/{total} tasks done"


@contextlib.contextmanager
def progress_heartbeat(spark: SparkSession, name: str, every_s: float) -> Iterator[None]:
    """Log what Spark is doing every ``every_s`` seconds while the block runs (0: nothing)."""
    if every_s <= 0:
        yield
        return
    stop = threading.Event()
    t0 = time.perf_counter()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                line = spark_progress_line(spark)
            except Exception:  # the gateway may be gone (the stage's own error says why)
                return
            log.info("[%s] still running after %.0f s: %s", name, time.perf_counter() - t0,
                     line or "driver-side work (no Spark stage active)")

    thread = threading.Thread(target=beat, name=f"progress-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def run_stage(name: str, fn: Callable[[StageContext], StageResult], ctx: StageContext) -> StageResult:
    """Run one stage with timing and logging; append its outcome to ops.job_runs, failed or not."""
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    log.info("[%s] as-of %s, window %d days, run %s", name, ctx.as_of, ctx.window_days, ctx.run_id)
    try:
        with stage_scope(name), progress_heartbeat(ctx.spark, name, ctx.settings.spark.progress_log_seconds):
            result = fn(ctx)
    except BaseException as exc:
        seconds = time.perf_counter() - t0
        log.error("[%s] failed after %.1f s: %s", name, seconds, exc)
        _record(ctx, name, started, seconds, "failed", None, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        raise
    result.seconds = time.perf_counter() - t0
    for line in result.notes:
        log.info("[%s] %s", name, line)
    outs = ", ".join(f"{t} {n:,}" for t, n in result.outputs.items())
    log.info("[%s] done in %.1f s: %s rows in -> %s", name, result.seconds, f"{result.rows_in:,}", outs)
    _record(ctx, name, started, result.seconds, "succeeded", result)
    return result


def _record(ctx: StageContext, stage: str, started: dt.datetime, seconds: float, status: str,
            result: StageResult | None, error: str | None = None) -> None:
    import json

    row = (ctx.run_id, stage, ctx.as_of, ctx.window_days, started, round(seconds, 3), status,
           result.rows_in if result else None, result.rows_out if result else None,
           json.dumps(result.outputs) if result else None, error[:4000] if error else None,
           ctx.settings.config_hash(), code_version(), ctx.settings.env)
    try:
        if ctx.lake.backend == "deltalake":
            # Through Arrow and delta-rs, no Spark job: a failure that broke Spark itself (Python
            # workers that cannot start, a lost executor) is still recorded, and faster.
            ctx.lake.write_arrow(JOB_RUNS_TABLE, job_runs_arrow([row]), mode="append")
        else:
            ctx.lake.append(ctx.spark.createDataFrame([row], JOB_RUNS_SCHEMA), JOB_RUNS_TABLE)
    except Exception as exc:  # the run log must never hide the stage's own outcome
        log.warning("could not append to %s: %s", JOB_RUNS_TABLE, exc)


_ARROW_TYPES = {T.StringType: pa.string(), T.DateType: pa.date32(), T.IntegerType: pa.int32(),
                T.LongType: pa.int64(), T.DoubleType: pa.float64(), T.TimestampType: pa.timestamp("us", tz="UTC")}


def job_runs_arrow(rows: list[tuple]) -> pa.Table:
    """ops.job_runs rows (tuples in JOB_RUNS_SCHEMA order) as an Arrow table of the same schema."""
    schema = pa.schema([pa.field(f.name, _ARROW_TYPES[type(f.dataType)], nullable=f.nullable)
                        for f in JOB_RUNS_SCHEMA.fields])
    return pa.Table.from_pylist([dict(zip(schema.names, r)) for r in rows], schema=schema)
