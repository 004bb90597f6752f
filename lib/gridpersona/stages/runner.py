"""Running stages: context, timings, row counts and the ``ops.job_runs`` log.

A stage is a function ``(ctx: StageContext) -> StageResult`` that reads through
``ctx.lake``, applies transformations and writes its outputs idempotently for
``ctx.as_of`` (a rerun replaces exactly its own output).

A stage commits whole or not at all: :func:`run_stage` locks its outputs,
appends a ``running`` row, runs it (its commits stay unpublished, its inputs
pinned at one version each), and publishes everything it wrote with one
``succeeded`` row (``versions_read`` / ``versions_written``). A stage that
raises is rolled back and logged ``failed``; one that dies keeps its ``running``
row, which :func:`stage_runs` reports as ``crashed``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import socket
import subprocess
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from gridpersona import __version__
from gridpersona.lake import locks
from gridpersona.config import Settings
from gridpersona.console import stage_scope
from gridpersona.contracts.ops import JOB_RUNS
from gridpersona.lake import Lake, checkpoint
from gridpersona.transform.clean import local_calendar

log = logging.getLogger("gridpersona")


class RunCache:
    """Frames one pipeline run computes once and several of its stages read (segment-train and
    segment-assign share the window's typical shapes). Owned by the run (``StageContext.cache``), so two
    runs never see each other's entries; each entry is kept under a key of everything it was computed from
    and recomputed when the key changes. :meth:`release` unpersists them (the runner does at the run's end).
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, Any]] = {}

    def get(self, name: str, key: Any, compute: Callable[[], Any]) -> Any:
        """The entry ``name`` if it was computed under ``key``, else ``compute()`` (replacing the old one)."""
        held = self._entries.get(name)
        if held is not None and held[0] == key:
            return held[1]
        if held is not None:
            self._drop(name)
        value = compute()
        self._entries[name] = (key, value)
        return value

    def release(self) -> None:
        """Unpersist and forget every entry."""
        for name in list(self._entries):
            self._drop(name)

    def _drop(self, name: str) -> None:
        _, value = self._entries.pop(name)
        if hasattr(value, "unpersist"):
            value.unpersist()


@dataclass
class StageContext:
    settings: Settings
    spark: SparkSession
    lake: Lake
    as_of: dt.date
    window_days: int
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    cache: RunCache = field(default_factory=RunCache)
    # The dates a date-partitioned stage (re)writes in this run: None = every date of the window; an
    # incremental run (stages.incremental) sets the new and changed ones.
    dates: tuple[dt.date, ...] | None = None

    @property
    def process_dates(self) -> list[dt.date]:
        """The dates this stage run writes, ascending: ``dates`` when set, else the window's."""
        return sorted(self.dates) if self.dates is not None else self.window_dates

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


def as_date(value) -> dt.date:
    """A date partition value (a date, or its ISO text as the Delta log holds it) as a date."""
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def partition_dates(lake: Lake, table: str) -> set[dt.date]:
    """The ``date`` partitions ``table`` holds, from its Delta log (no Spark job)."""
    return {as_date(v) for v in lake.partition_values(table, "date")}


def compact_dates(dates: Iterable[dt.date]) -> str:
    """'2026-06-01..2026-06-03,2026-06-10': runs of consecutive days joined; '' for none."""
    spans: list[list[dt.date]] = []
    for day in sorted(set(dates)):
        if spans and (day - spans[-1][1]).days == 1:
            spans[-1][1] = day
        else:
            spans.append([day, day])
    return ",".join(a.isoformat() if a == b else f"{a.isoformat()}..{b.isoformat()}" for a, b in spans)


def parse_compact_dates(text: str | None) -> list[dt.date] | None:
    """The dates of a :func:`compact_dates` text, ascending (None stays None: a whole-window run)."""
    if text is None:
        return None
    out: list[dt.date] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("..")
        a = dt.date.fromisoformat(first)
        b = dt.date.fromisoformat(last) if last else a
        out.extend(a + dt.timedelta(days=i) for i in range((b - a).days + 1))
    return out


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


def run_stage(name: str, fn: Callable[[StageContext], StageResult], ctx: StageContext,
              outputs: Iterable[str] = (), inputs: Iterable[str] = (),
              plan: Callable[[StageContext], Any] | None = None) -> StageResult:
    """Run one stage whole or not at all (module docstring); ``outputs`` are the tables it writes (locked
    from its start), ``inputs`` the tables it reads (pinned at its start; others at their first read).
    Appends its ``running`` row and its ``succeeded`` / ``failed`` row to ops.job_runs.

    ``plan`` (an incremental run): called once the inputs are pinned, it returns the dates to write
    (an object with ``dates`` and ``summary``, see stages.incremental.DatePlan); the stage then runs
    with ``ctx.dates`` set to them, recorded in the rows' ``dates``. No dates: the stage function is
    not called, nothing is written, and the run is still logged ``succeeded`` with the versions it read."""
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    log.info("[%s] as-of %s, window %d days, run %s", name, ctx.as_of, ctx.window_days, ctx.run_id)
    lake = ctx.lake
    read: dict[str, int] = {}
    try:
        with stage_scope(name), progress_heartbeat(ctx.spark, name, ctx.settings.spark.progress_log_seconds):
            scope = lake.begin_stage(ctx.run_id, name, outputs, inputs)
            read = scope.pins
            try:
                if plan is not None:
                    planned = plan(ctx)
                    log.info("[%s] %s", name, planned.summary)
                    ctx = dataclasses.replace(ctx, dates=tuple(planned.dates))
                _record(ctx, name, started, None, "running", None, required=True)
                if ctx.dates is not None and not ctx.dates:
                    result = StageResult(notes=["nothing new: no date of the window to write"])
                else:
                    result = fn(ctx)
                result.seconds = time.perf_counter() - t0
                checkpoint(name, "before-publish")
                # The publishing step: from this append on, readers see every table the stage wrote.
                _record(ctx, name, started, result.seconds, "succeeded", result, versions_read=scope.pins,
                        versions_written=scope.written, required=True)
            except BaseException:
                lake.rollback_stage()
                raise
            finally:
                lake.end_stage()
    except BaseException as exc:
        seconds = time.perf_counter() - t0
        log.error("[%s] failed after %.1f s: %s", name, seconds, exc)
        _record(ctx, name, started, seconds, "failed", None, versions_read=read,
                error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        raise
    for line in result.notes:
        log.info("[%s] %s", name, line)
    outs = ", ".join(f"{t} {n:,}" for t, n in result.outputs.items())
    log.info("[%s] done in %.1f s: %s rows in -> %s", name, result.seconds, f"{result.rows_in:,}", outs)
    return result


def _record(ctx: StageContext, stage: str, started: dt.datetime, seconds: float | None, status: str,
            result: StageResult | None, error: str | None = None, versions_read: dict | None = None,
            versions_written: dict | None = None, required: bool = False) -> None:
    """Append one row to ops.job_runs. ``required``: a row the stage cannot do without (its ``running`` row,
    which must precede its first commit, and its ``succeeded`` row, which publishes it) raises on failure."""
    row = (ctx.run_id, stage, ctx.as_of, ctx.window_days, started, None if seconds is None else round(seconds, 3),
           status, result.rows_in if result else None, result.rows_out if result else None,
           json.dumps(result.outputs) if result else None, error[:4000] if error else None,
           ctx.settings.config_hash(), code_version(), ctx.settings.env, os.getpid(), socket.gethostname(),
           json.dumps(dict(sorted(versions_read.items()))) if versions_read else None,
           json.dumps(dict(sorted(versions_written.items()))) if versions_written else None,
           None if ctx.dates is None else compact_dates(ctx.dates))
    try:
        # Through Arrow: on the embedded backend delta-rs commits it with no Spark job, so a failure that
        # broke Spark itself (Python workers that cannot start, a lost executor) is still recorded, and
        # faster. An older table gains the new nullable columns on this append.
        ctx.lake.write_arrow(JOB_RUNS.name, job_runs_arrow([row]), mode="append", add_columns=True)
    except Exception as exc:
        if required:
            raise
        log.warning("could not append to %s: %s", JOB_RUNS.name, exc)  # never hides the stage's own outcome


_ARROW_TYPES = {T.StringType: pa.string(), T.DateType: pa.date32(), T.IntegerType: pa.int32(),
                T.LongType: pa.int64(), T.DoubleType: pa.float64(), T.TimestampType: pa.timestamp("us", tz="UTC")}


def job_runs_arrow(rows: list[tuple]) -> pa.Table:
    """ops.job_runs rows (tuples in JOB_RUNS.schema order) as an Arrow table of the same schema."""
    schema = pa.schema([pa.field(f.name, _ARROW_TYPES[type(f.dataType)], nullable=f.nullable)
                        for f in JOB_RUNS.schema.fields])
    return pa.Table.from_pylist([dict(zip(schema.names, r)) for r in rows], schema=schema)


def _run_alive(lake: Lake, start: dict, held: list[tuple[str, dict | None]]) -> bool:
    """Whether the process of a ``running`` row still runs: it holds one of its outputs' locks, or (a stage
    without outputs) its pid lives on this host."""
    for _, owner in held:
        if owner and owner.get("run_id") == start["run_id"] and owner.get("stage") == start["stage"]:
            return True
    if start.get("host") == socket.gethostname():
        return locks.pid_alive(start.get("pid"))
    return False


def stage_runs(lake: Lake, as_of: dt.date | None = None, limit: int | None = None) -> list[dict]:
    """Stage runs in ops.job_runs, newest first: one dict per (run_id, stage) with ``status`` running /
    succeeded / failed / crashed (a ``running`` row with no end row whose process is gone), started_at,
    duration_s, rows_in, rows_out, versions_read, versions_written (dicts), error (first line) and dates
    (what an incremental run wrote, see :func:`compact_dates`; None for a whole-window run)."""
    if not lake.exists(JOB_RUNS.name):
        return []
    attempts: dict[tuple[str, str], dict] = {}
    for r in sorted(lake.read_arrow(JOB_RUNS.name).to_pylist(), key=lambda r: r["started_at"]):
        if as_of is not None and r["as_of"] != as_of:
            continue
        slot = attempts.setdefault((r["run_id"], r["stage"]), {"start": None, "end": None})
        slot["start" if r["status"] == "running" else "end"] = r
    held = locks.held_locks(lake.root)
    out = []
    for slot in attempts.values():
        row = slot["end"] or slot["start"]
        status = row["status"]
        if slot["end"] is None:
            status = "running" if _run_alive(lake, slot["start"], held) else "crashed"
        out.append({
            "run_id": row["run_id"], "stage": row["stage"], "as_of": row["as_of"], "status": status,
            "started_at": row["started_at"], "duration_s": row["duration_s"] if slot["end"] else None,
            "rows_in": row["rows_in"], "rows_out": row["rows_out"], "pid": row.get("pid"), "host": row.get("host"),
            "versions_read": json.loads(row.get("versions_read") or "{}"),
            "versions_written": json.loads(row.get("versions_written") or "{}"),
            "error": (row["error"] or "").split("\n", 1)[0] or None,
            "dates": row.get("dates"),
        })
    out.sort(key=lambda r: r["started_at"], reverse=True)
    return out[:limit] if limit else out


def calendar_frame(ctx: StageContext, first=None, last=None):
    """The local calendar of the window (or first..last): date, day_start_epoch, expected_intervals."""
    first, last = (first or ctx.window[0]), (last or ctx.window[1])
    rows = local_calendar(first, last, ctx.settings.ami.time_zone, ctx.settings.ami.interval_minutes)
    return ctx.spark.createDataFrame(rows, "date date, day_start_epoch long, expected_intervals int")
