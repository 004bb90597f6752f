"""Stage `clean`: bronze.ami_interval -> silver.ami_clean, silver.ami_quarantine, silver.meter_day_quality.

Writes its outputs idempotently for the run's window (date partitions replaced, never appended twice).
"""

from __future__ import annotations

import logging

from pyspark import StorageLevel
from pyspark.sql import functions as F

from gridpersona.console import stage_prefix
from gridpersona.contracts.bronze import AMI_INTERVAL, CUSTOMER_ARCHIVE
from gridpersona.contracts.silver import AMI_CLEAN, AMI_QUARANTINE, METER_DAY_QUALITY, QUARANTINE_REASONS
from gridpersona.lake import check_schema
from gridpersona.stages.inputs import read_bronze
from gridpersona.stages.runner import StageContext, StageResult, calendar_frame
from gridpersona.transform import clean as C

log = logging.getLogger("gridpersona")


def run_clean(ctx: StageContext) -> StageResult:
    """bronze.ami_interval (window partitions) -> silver.ami_clean, silver.ami_quarantine, silver.meter_day_quality."""
    s = ctx.settings
    first, last = ctx.window
    dates = ctx.window_dates
    calendar = calendar_frame(ctx)
    raw = read_bronze(ctx.lake, AMI_INTERVAL.name).filter(F.col("date").between(first, last))
    archive = read_bronze(ctx.lake, CUSTOMER_ARCHIVE.name).select("meter_id", "contracted_capacity_kva")
    rule = C.OutlierRule(scale_multiple=s.clean.outlier_scale_multiple, scale_floor_kw=s.clean.outlier_scale_floor_kw,
                         neighbour_multiple=s.clean.outlier_neighbour_multiple, capacity_margin=s.clean.capacity_margin)
    log.info("%sclassifying the window's readings (%s .. %s): quarantine, outliers, interpolation; the "
             "first write below runs this pass", stage_prefix(), first, last)
    out = C.clean_interval_readings(
        raw, archive, calendar, time_zone=s.ami.time_zone, interval_minutes=s.ami.interval_minutes,
        first_date=first, last_date=last, max_interval_kwh=s.clean.max_interval_kwh,
        max_gap=s.clean.max_interpolate_intervals, rule=rule, cache=lambda df: df.persist(StorageLevel.MEMORY_AND_DISK))
    check_schema(AMI_QUARANTINE.name, AMI_QUARANTINE.schema, out.quarantine.schema)
    check_schema(AMI_CLEAN.name, AMI_CLEAN.schema, out.clean.schema)
    try:
        quarantined_rows = ctx.lake.replace(out.quarantine, AMI_QUARANTINE, where={"date": dates}).rows
        clean_rows = ctx.lake.replace(out.clean, AMI_CLEAN, where={"date": dates}).rows
    finally:
        out.release()

    log.info("%smeter-day quality and reconciliation from the written rows", stage_prefix())
    written_clean = ctx.lake.read(AMI_CLEAN.name).filter(F.col("date").between(first, last))
    written_quarantine = ctx.lake.read(AMI_QUARANTINE.name).filter(F.col("date").between(first, last))
    quality = C.meter_day_quality(written_clean, written_quarantine, archive, calendar)
    check_schema(METER_DAY_QUALITY.name, METER_DAY_QUALITY.schema, quality.schema)
    quality_rows = ctx.lake.replace(quality, METER_DAY_QUALITY, where={"date": dates}).rows

    # Reconciliation from what was written: every raw row is in exactly one of clean or quarantine.
    quarantined = {r["reason"]: r["count"] for r in written_quarantine.groupBy("reason").count().collect()}
    clean_counts = {r["quality"]: r["count"] for r in written_clean.groupBy("quality").count().collect()}
    raw_rows = ctx.lake.partition_rows(AMI_INTERVAL.name, "date", dates)
    if raw_rows is None:  # no per-file statistics in the log: count
        raw_rows = raw.count()
    kept_rows = clean_counts.get("measured", 0) + clean_counts.get("outlier_replaced", 0)
    total_q = sum(quarantined.values())
    result = StageResult(rows_in=raw_rows, outputs={AMI_CLEAN.name: clean_rows,
                                                    AMI_QUARANTINE.name: quarantined_rows,
                                                    METER_DAY_QUALITY.name: quality_rows})
    balance = "OK" if kept_rows + total_q == raw_rows else "MISMATCH"
    result.notes.append(
        f"reconciliation {balance}: raw {raw_rows:,} = clean {kept_rows:,} (measured {clean_counts.get('measured', 0):,}, "
        f"outlier_replaced {clean_counts.get('outlier_replaced', 0):,}) + quarantine {total_q:,} ("
        + ", ".join(f"{k} {quarantined.get(k, 0):,}" for k in QUARANTINE_REASONS) + ")")
    result.notes.append(f"interpolated {clean_counts.get('interpolated', 0):,} readings in short gaps")
    if balance != "OK":
        raise RuntimeError(f"clean: reconciliation failed: {result.notes[0]}")
    return result
