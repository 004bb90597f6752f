"""The pipeline stages: config + lake I/O + transformations, one function per stage.

Each writes its outputs idempotently for the run's as-of date and window
(partitions replaced, never appended twice).
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import functions as F

from gridpersona.bronze import read_bronze
from gridpersona.runtime import StageContext, StageResult
from gridpersona.transform import clean as C

AMI_CLEAN = "silver.ami_clean"
AMI_QUARANTINE = "silver.ami_quarantine"
METER_DAY_QUALITY = "silver.meter_day_quality"


def calendar_frame(ctx: StageContext, first=None, last=None):
    first, last = (first or ctx.window[0]), (last or ctx.window[1])
    rows = C.local_calendar(first, last, ctx.settings.ami.time_zone, ctx.settings.ami.interval_minutes)
    return ctx.spark.createDataFrame(rows, "date date, day_start_epoch long, expected_intervals int")


def run_clean(ctx: StageContext) -> StageResult:
    """bronze.ami_interval (window partitions) -> silver.ami_clean, silver.ami_quarantine, silver.meter_day_quality."""
    s = ctx.settings
    first, last = ctx.window
    dates = ctx.window_dates
    raw = read_bronze(ctx.lake, "bronze.ami_interval").filter(F.col("date").between(first, last))
    archive = read_bronze(ctx.lake, "bronze.customer_archive").select("meter_id")
    tagged = C.tag_reasons(raw, archive, time_zone=s.ami.time_zone, interval_minutes=s.ami.interval_minutes,
                           first_date=first, last_date=last, max_interval_kwh=s.clean.max_interval_kwh)
    stats = C.meter_reading_stats(tagged.filter(F.col("reason").isNull()))
    readings = C.clean_readings(tagged, stats, method=s.clean.outlier_method, z_threshold=s.clean.outlier_z,
                                interval_minutes=s.ami.interval_minutes)
    readings = readings.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        quarantine = readings.filter(F.col("reason").isNotNull()).select(
            "meter_id", "ts", "kwh", "date", "local_date", "reason")
        measured = readings.filter(F.col("reason").isNull()).select(
            "meter_id", "ts", F.col("local_date").alias("date"), "slot", "kwh_clean", F.col("kwh").alias("kwh_raw"), "quality")
        filled = C.fill_short_gaps(measured, max_gap=s.clean.max_interpolate_intervals,
                                   interval_minutes=s.ami.interval_minutes, time_zone=s.ami.time_zone)
        filled = filled.select("meter_id", "ts", F.col("local_date").alias("date"), "slot", "kwh_clean",
                               F.lit(None).cast("double").alias("kwh_raw"), "quality")
        clean = measured.unionByName(filled).withColumnRenamed("kwh_clean", "kwh").select(
            "meter_id", "ts", "date", "slot", "kwh", "kwh_raw", "quality")

        ctx.lake.replace(quarantine, AMI_QUARANTINE, where={"date": dates}, partition_by=["date"])
        ctx.lake.replace(clean, AMI_CLEAN, where={"date": dates}, partition_by=["date"])
        written_clean = ctx.lake.read(AMI_CLEAN).filter(F.col("date").between(first, last))
        written_quarantine = ctx.lake.read(AMI_QUARANTINE).filter(F.col("date").between(first, last))
        quality = C.meter_day_quality(written_clean, written_quarantine, calendar_frame(ctx).select("date", "expected_intervals"))
        ctx.lake.replace(quality, METER_DAY_QUALITY, where={"date": dates}, partition_by=["date"])

        # Reconciliation: every raw row is in exactly one of clean (measured or replaced) or quarantine.
        counts = {r["k"]: r["n"] for r in readings.groupBy(F.coalesce("reason", "quality").alias("k")).count()
                  .withColumnRenamed("count", "n").collect()}
    finally:
        readings.unpersist()
    raw_rows = sum(counts.values())
    clean_counts = {r["quality"]: r["count"] for r in written_clean.groupBy("quality").count().collect()}
    kept = clean_counts.get("measured", 0) + clean_counts.get("outlier_replaced", 0)
    quarantined = {k: v for k, v in counts.items() if k in C.QUARANTINE_REASONS}
    result = StageResult(rows_in=raw_rows)
    result.outputs = {AMI_CLEAN: sum(clean_counts.values()), AMI_QUARANTINE: sum(quarantined.values()),
                      METER_DAY_QUALITY: ctx.lake.read(METER_DAY_QUALITY).filter(F.col("date").between(first, last)).count()}
    balance = "OK" if kept + sum(quarantined.values()) == raw_rows else "MISMATCH"
    result.notes.append(
        f"reconciliation {balance}: raw {raw_rows:,} = clean {kept:,} (measured {clean_counts.get('measured', 0):,}, "
        f"outlier_replaced {clean_counts.get('outlier_replaced', 0):,}) + quarantine {sum(quarantined.values()):,} ("
        + ", ".join(f"{k} {quarantined.get(k, 0):,}" for k in C.QUARANTINE_REASONS) + ")")
    result.notes.append(f"interpolated {clean_counts.get('interpolated', 0):,} readings in short gaps")
    if balance != "OK":
        raise RuntimeError(f"clean: reconciliation failed: {result.notes[0]}")
    return result
