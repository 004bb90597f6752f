"""Stage `clean`: bronze.ami_interval -> silver.ami_clean, silver.ami_quarantine, silver.meter_day_quality.

Writes exactly the dates of the run (``StageContext.process_dates``: the window, or the new and changed
days of an incremental run), replacing their partitions. A day's output reads the readings of the day and
its two neighbours and the look-back of daily statistics before it (``clean.scale_lookback_days``), taken
from the stored silver.meter_day_quality where it has them and from bronze otherwise, so a day cleaned in
a nightly run equals the same day cleaned in a window run.
"""

from __future__ import annotations

import datetime as dt
import logging
import math

from pyspark import StorageLevel
from pyspark.sql import functions as F

from gridpersona.console import stage_prefix
from gridpersona.contracts.bronze import AMI_INTERVAL, CUSTOMER_ARCHIVE
from gridpersona.contracts.silver import (AMI_CLEAN, AMI_QUARANTINE, METER_DAY_QUALITY, METER_DAY_READINGS,
                                         QUARANTINE_REASONS)
from gridpersona.lake import ArrowRows, check_schema
from gridpersona.session import session_conf
from gridpersona.stages.inputs import read_bronze
from gridpersona.stages.runner import StageContext, StageResult, calendar_frame, partition_dates
from gridpersona.transform import clean as C

log = logging.getLogger("gridpersona")

_STAT_COLUMNS = ("day_max_kwh", "day_mean_kwh")

# Session settings while clean writes (restored after): measured on the default lake with Java Flight Recorder.
WRITE_CONF = {
    # Arrow batches to the kernel bounded by rows (maxRecordsPerBatch, 10,000 narrow reading rows) only:
    # below Int.MaxValue Spark 4 measures a batch's bytes after every row it adds (ArrowWriter.sizeInBytes
    # under BatchedPythonArrowInput.underBatchSizeLimit), a quarter of the JVM's CPU in clean. Not set for
    # the whole session: a batch of 10,000 wide rows (a meter's 90 days of 96 slots) would reach 700 MB.
    "spark.sql.execution.arrow.maxBytesPerBatch": "2147483647",
    # A task writing the date-partitioned tables keeps one open file per date (up to 100: a 90-day window)
    # instead of sorting its rows by date first; past 100 dates Spark sorts the rest. The 28.5M reading
    # rows of the default lake: 52.9 -> 39.7 s in a paired test. A nightly run writes two dates.
    "spark.sql.maxConcurrentOutputFileWriters": "100",
}


def _days(first: dt.date, last: dt.date) -> set[dt.date]:
    return {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}


def _stored_stat_dates(ctx: StageContext, wanted: set[dt.date]) -> set[dt.date]:
    """The dates of ``wanted`` whose statistics silver.meter_day_quality holds (none on a table written
    before it had them)."""
    lake = ctx.lake
    if not wanted or not lake.exists(METER_DAY_QUALITY.name):
        return set()
    if not set(_STAT_COLUMNS) <= set(lake.schema(METER_DAY_QUALITY.name).fieldNames()):
        return set()
    return wanted & partition_dates(lake, METER_DAY_QUALITY.name)


def run_clean(ctx: StageContext) -> StageResult:
    """bronze.ami_interval (the run's dates and their context) -> silver.ami_clean, silver.ami_quarantine,
    silver.meter_day_quality (the run's dates)."""
    s = ctx.settings
    dates = ctx.process_dates
    if not dates:
        return StageResult(notes=["nothing to clean: no new or changed day in the window"])
    lookback = s.clean.scale_lookback_days
    neighbours = {d + dt.timedelta(days=k) for d in dates for k in (-1, 1)}
    # Only days bronze holds: the log's partition values, no Spark job.
    held = partition_dates(ctx.lake, AMI_INTERVAL.name)
    read = {d for d in set(dates) | neighbours if d <= ctx.as_of} & held
    # A context day's scale reads its own look-back: every day from lookback+1 before the first date.
    wanted_stats = (_days(dates[0] - dt.timedelta(days=lookback + 1), dates[-1]) & held) - read
    stored = _stored_stat_dates(ctx, wanted_stats)
    read |= wanted_stats - stored
    read_dates = sorted(read | set(dates))
    first, last = read_dates[0], ctx.as_of
    calendar = calendar_frame(ctx, first, max(last, read_dates[-1]))
    raw = read_bronze(ctx.lake, AMI_INTERVAL.name).filter(F.col("date").isin(read_dates))
    archive = read_bronze(ctx.lake, CUSTOMER_ARCHIVE.name).select("meter_id", "contracted_capacity_kva")
    prior = None
    if stored:
        prior = (ctx.lake.read(METER_DAY_QUALITY.name).filter(F.col("date").isin(sorted(stored)))
                 .select("meter_id", "date", *_STAT_COLUMNS))
    rule = C.OutlierRule(scale_multiple=s.clean.outlier_scale_multiple, scale_floor_kw=s.clean.outlier_scale_floor_kw,
                         neighbour_multiple=s.clean.outlier_neighbour_multiple, capacity_margin=s.clean.capacity_margin)
    span = f"{dates[0]} .. {dates[-1]}" if len(dates) == (dates[-1] - dates[0]).days + 1 else f"{len(dates)} days"
    log.info("%scleaning %d day(s) (%s); reading %d day(s) of bronze (neighbours and look-back) and %d day(s) of "
             "stored statistics; the first write below runs the pass", stage_prefix(), len(dates), span,
             len(read_dates), len(stored))
    # Tasks of the per-meter pass sized by readings (the log's per-file counts: no Spark job).
    readings = ctx.lake.partition_rows(AMI_INTERVAL.name, "date", read_dates)
    shuffle = int(ctx.spark.conf.get("spark.sql.shuffle.partitions"))
    partitions = max(shuffle, math.ceil(readings / s.clean.rows_per_task)) if readings is not None else None
    out = C.clean_interval_readings(
        raw, archive, calendar, time_zone=s.ami.time_zone, interval_minutes=s.ami.interval_minutes,
        first_date=first, last_date=last, max_interval_kwh=s.clean.max_interval_kwh,
        max_gap=s.clean.max_interpolate_intervals, rule=rule, lookback_days=lookback, dates=dates, prior_stats=prior,
        partitions=partitions, cache=lambda df: df.persist(StorageLevel.MEMORY_AND_DISK))
    # silver.ami_clean's rows are made (and, on the embedded lake, written) by the tasks from the days' arrays,
    # cast to the contract's schema in the task (so not checked here: it is the contract's by construction).
    clean = ArrowRows(out.clean_days, out.clean_rows_fn, AMI_CLEAN.schema)
    for spec, df in ((AMI_QUARANTINE, out.quarantine), (METER_DAY_QUALITY, out.quality),
                     (METER_DAY_READINGS, out.readings)):
        check_schema(spec.name, spec.schema, df.schema)
    try:
        with session_conf(ctx.spark, WRITE_CONF):
            # Tables of at most a row or an array per meter-day are rebalanced by date before the write:
            # about one file per date (90 on the default lake, not 720 for the quarantine and 270 for the
            # quality), and adaptive execution still splits a date too big for one task (a day landed
            # twice quarantines all its readings).
            quarantined_rows = ctx.lake.replace(out.quarantine.hint("rebalance", "date"), AMI_QUARANTINE,
                                                where={"date": dates}).rows
            clean_rows = ctx.lake.replace(clean, AMI_CLEAN, where={"date": dates}).rows
            # The same readings as one array per meter-day, for shapes (from the cached pass: no second pass).
            day_rows = ctx.lake.replace(out.readings.hint("rebalance", "date"), METER_DAY_READINGS,
                                        where={"date": dates}).rows
            # The quality counts the quarantine rows just written (a small table), not a second pass over bronze.
            written_quarantine = ctx.lake.read(AMI_QUARANTINE.name).filter(F.col("date").isin(dates))
            quality_rows = ctx.lake.replace(out.quality_from(written_quarantine).hint("rebalance", "date"),
                                            METER_DAY_QUALITY, where={"date": dates}).rows
    finally:
        out.release()

    # Reconciliation from what was written: every raw row of the dates is in exactly one of clean or quarantine.
    written_quality = ctx.lake.read(METER_DAY_QUALITY.name).filter(F.col("date").isin(dates))
    sums = written_quality.agg(*[F.sum(c).alias(c) for c in
                                 ("measured_intervals", "outlier_intervals", "interpolated_intervals")]).collect()[0]
    measured, replaced, interpolated = (int(sums[c] or 0) for c in
                                        ("measured_intervals", "outlier_intervals", "interpolated_intervals"))
    quarantined = {r["reason"]: r["count"] for r in written_quarantine.groupBy("reason").count().collect()}
    raw_rows = ctx.lake.partition_rows(AMI_INTERVAL.name, "date", dates)
    if raw_rows is None:  # no per-file statistics in the log: count
        raw_rows = read_bronze(ctx.lake, AMI_INTERVAL.name).filter(F.col("date").isin(dates)).count()
    kept_rows = measured + replaced
    total_q = sum(quarantined.values())
    result = StageResult(rows_in=raw_rows, outputs={AMI_CLEAN.name: clean_rows,
                                                    AMI_QUARANTINE.name: quarantined_rows,
                                                    METER_DAY_QUALITY.name: quality_rows,
                                                    METER_DAY_READINGS.name: day_rows})
    balance = "OK" if kept_rows + total_q == raw_rows and kept_rows + interpolated == clean_rows else "MISMATCH"
    result.notes.append(
        f"reconciliation {balance}: raw {raw_rows:,} = clean {kept_rows:,} (measured {measured:,}, "
        f"outlier_replaced {replaced:,}) + quarantine {total_q:,} ("
        + ", ".join(f"{k} {quarantined.get(k, 0):,}" for k in QUARANTINE_REASONS) + f"); clean rows written "
        f"{clean_rows:,} = kept + interpolated")
    result.notes.append(f"interpolated {interpolated:,} readings in short gaps")
    if balance != "OK":
        raise RuntimeError(f"clean: reconciliation failed: {result.notes[0]}")
    return result
