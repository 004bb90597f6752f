"""Clean: raw interval readings -> clean readings + quarantine + meter-day quality (seed 003 §3.1).

Every raw row ends in exactly one of the clean or the quarantine output:

- quarantined, with the first reason that applies, in this order: ``null_value``,
  ``unknown_meter`` (not in the customer archive), ``misaligned_ts`` (not on an
  interval boundary), ``out_of_window`` (local day before the window),
  ``future_ts`` (local day after the as-of date), ``negative``, ``out_of_range``
  (above ``clean.max_interval_kwh``), ``duplicate`` (a second reading for the same
  meter and instant; the first by kWh is kept);
- otherwise clean, as ``measured`` or, when its |Z| exceeds the threshold, as
  ``outlier_replaced`` (value replaced by linear interpolation of the nearest
  non-outlier neighbours; the raw value is kept in ``kwh_raw``).

Gaps of at most ``max_gap`` intervals between two clean readings are filled with
``interpolated`` rows (``kwh_raw`` null); longer gaps stay missing and leave the
day incomplete in ``meter_day_quality``.

Days are local calendar days in the configured zone; ``slot`` is the wall-clock
slot of the day (``minute_of_day // interval``). DST rule: on the spring-forward
day (92 quarter-hours) the skipped hour's slots hold no reading and count as 0 kWh;
on the fall-back day (100 quarter-hours) both readings of the repeated hour fall in
the same wall-clock slot and are summed. Energy is conserved either way: the day's
kWh is the sum of its readings, and its expected interval count is 92 or 100.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

QUARANTINE_REASONS = ("null_value", "unknown_meter", "misaligned_ts", "out_of_window", "future_ts",
                      "negative", "out_of_range", "duplicate")
QUALITY_CODES = ("measured", "outlier_replaced", "interpolated")

# Neighbours searched on each side for an outlier's replacement (bounded frames stay O(n)).
_NEIGHBOUR_ROWS = 8


def local_calendar(first: dt.date, last: dt.date, time_zone: str, interval_minutes: int) -> list[tuple[dt.date, int, int]]:
    """(local date, UTC epoch second of local midnight, expected intervals) for each day in [first, last]."""
    zone = ZoneInfo(time_zone)
    rows = []
    day = first
    while day <= last:
        start = dt.datetime.combine(day, dt.time(), zone)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
        seconds = int(end.timestamp() - start.timestamp())
        rows.append((day, int(start.timestamp()), seconds // (interval_minutes * 60)))
        day += dt.timedelta(days=1)
    return rows


def fixed_utc_offset_seconds(time_zone: str) -> int | None:
    """The zone's UTC offset if it has kept one offset since 2000 (e.g. Asia/Shanghai), else None."""
    zone = ZoneInfo(time_zone)
    offsets = {dt.datetime(year, month, 1, 12, tzinfo=zone).utcoffset() for year in range(2000, 2041) for month in (1, 4, 7, 10)}
    return int(offsets.pop().total_seconds()) if len(offsets) == 1 else None


def local_seconds(ts: str, time_zone: str) -> Column:
    """Local wall-clock time of instant column ``ts`` as seconds since 1970-01-01 00:00 local.

    Independent of the session time zone. Zones without DST use a constant offset
    (integer arithmetic only); others take the offset at each instant.
    """
    offset = fixed_utc_offset_seconds(time_zone)
    if offset is not None:
        return F.unix_seconds(F.col(ts)) + F.lit(offset)
    # from_utc_timestamp shifts the stored micros by the zone's offset at that instant.
    shift = ((F.unix_micros(F.from_utc_timestamp(F.col(ts), time_zone)) - F.unix_micros(F.col(ts))) / 1_000_000).cast("long")
    return F.unix_seconds(F.col(ts)) + shift


def with_local_time(df: DataFrame, time_zone: str, interval_minutes: int) -> DataFrame:
    """Add ``local_date``, ``slot`` (wall-clock slot of the local day) and ``aligned`` from ``ts``."""
    local = local_seconds("ts", time_zone)
    return (
        df.withColumn("_local_s", local)
        .withColumn("local_date", F.date_from_unix_date(F.floor(F.col("_local_s") / 86400).cast("int")))
        .withColumn("slot", (F.pmod(F.col("_local_s"), F.lit(86400)) / (interval_minutes * 60)).cast("int"))
        .withColumn("aligned", (F.pmod(F.col("_local_s"), F.lit(interval_minutes * 60)) == 0)
                    & (F.pmod(F.unix_micros("ts"), F.lit(1_000_000)) == 0))
        .drop("_local_s")
    )


def tag_reasons(raw: DataFrame, known_meters: DataFrame, *, time_zone: str, interval_minutes: int,
                first_date: dt.date, last_date: dt.date, max_interval_kwh: float) -> DataFrame:
    """Raw readings + ``local_date``, ``slot`` and ``reason`` (null when the row may be clean).

    ``known_meters`` has one column ``meter_id`` (the archive's meters); it is small and broadcast.
    """
    known = F.broadcast(known_meters.select("meter_id").distinct().withColumn("_known", F.lit(True)))
    df = with_local_time(raw.join(known, "meter_id", "left"), time_zone, interval_minutes)
    reason = (
        F.when(F.col("kwh").isNull(), "null_value")
        .when(F.col("_known").isNull(), "unknown_meter")
        .when(~F.col("aligned"), "misaligned_ts")
        .when(F.col("local_date") < F.lit(first_date), "out_of_window")
        .when(F.col("local_date") > F.lit(last_date), "future_ts")
        .when(F.col("kwh") < 0, "negative")
        .when(F.col("kwh") > max_interval_kwh, "out_of_range")
    )
    return df.withColumn("reason", reason).drop("_known", "aligned")


def meter_reading_stats(accepted: DataFrame) -> DataFrame:
    """Per meter: median, P99, mean and standard deviation of its readings (for the Z-scores)."""
    return accepted.groupBy("meter_id").agg(
        F.percentile_approx("kwh", F.array(F.lit(0.5), F.lit(0.99)), 2000).alias("_q"),
        F.mean("kwh").alias("mean_kwh"),
        F.stddev_pop("kwh").alias("std_kwh"),
    ).select("meter_id", F.col("_q")[0].alias("median_kwh"), F.col("_q")[1].alias("p99_kwh"), "mean_kwh", "std_kwh")


def outlier_score(method: str) -> Column:
    """Z of ``kwh`` against the meter's own readings (columns of meter_reading_stats joined in)."""
    if method == "zscore":
        return (F.col("kwh") - F.col("mean_kwh")) / F.greatest(F.col("std_kwh"), F.lit(1e-6))
    if method == "robust":
        # Scale = the meter's upper spread (P99 - median): load curves are skewed, so a
        # symmetric MAD would call every daily peak an outlier.
        return (F.col("kwh") - F.col("median_kwh")) / F.greatest(F.col("p99_kwh") - F.col("median_kwh"), F.lit(1e-3))
    raise ValueError(f"clean.outlier_method {method!r}: expected 'robust' or 'zscore'")


def _seconds(col: str) -> Column:
    return F.unix_seconds(F.col(col))


def clean_readings(tagged: DataFrame, stats: DataFrame, *, method: str, z_threshold: float, interval_minutes: int) -> DataFrame:
    """Rows of ``tag_reasons`` -> the same rows with final ``reason`` (duplicates added) and for
    non-quarantined rows ``kwh_clean`` and ``quality``. One shuffle: by meter, ordered by time."""
    by_meter = Window.partitionBy("meter_id").orderBy("ts", F.col("kwh").desc_nulls_last())
    df = tagged.join(F.broadcast(stats), "meter_id", "left")
    # Duplicates: a reading at the same instant as the accepted row before it (rows with an
    # earlier reason stay out of the comparison so they cannot shadow a good reading).
    ok = F.col("reason").isNull()
    ok_ts = F.when(ok, F.col("ts"))
    prev_ok_ts = F.last(ok_ts, ignorenulls=True).over(by_meter.rowsBetween(Window.unboundedPreceding, -1))
    df = df.withColumn("reason", F.when(ok & (prev_ok_ts == F.col("ts")), F.lit("duplicate")).otherwise(F.col("reason")))

    ok = F.col("reason").isNull()
    df = df.withColumn("outlier", ok & (F.abs(outlier_score(method)) > z_threshold))
    good = ok & ~F.col("outlier")
    before = by_meter.rowsBetween(-_NEIGHBOUR_ROWS, -1)
    after = by_meter.rowsBetween(1, _NEIGHBOUR_ROWS)
    prev_kwh = F.last(F.when(good, F.col("kwh")), ignorenulls=True).over(before)
    prev_t = F.last(F.when(good, _seconds("ts")), ignorenulls=True).over(before)
    next_kwh = F.first(F.when(good, F.col("kwh")), ignorenulls=True).over(after)
    next_t = F.first(F.when(good, _seconds("ts")), ignorenulls=True).over(after)
    df = (df.withColumn("_pk", prev_kwh).withColumn("_pt", prev_t)
            .withColumn("_nk", next_kwh).withColumn("_nt", next_t))
    t = _seconds("ts")
    interpolated = F.when(F.col("_pk").isNotNull() & F.col("_nk").isNotNull(),
                          F.col("_pk") + (F.col("_nk") - F.col("_pk")) * (t - F.col("_pt")) / (F.col("_nt") - F.col("_pt")))
    replacement = F.coalesce(interpolated, F.col("_pk"), F.col("_nk"), F.col("median_kwh"))
    return (
        df.withColumn("kwh_clean", F.when(~ok, F.lit(None).cast("double"))
                      .when(F.col("outlier"), replacement).otherwise(F.col("kwh")))
        .withColumn("quality", F.when(~ok, F.lit(None).cast("string"))
                    .when(F.col("outlier"), F.lit("outlier_replaced")).otherwise(F.lit("measured")))
        .drop("_pk", "_pt", "_nk", "_nt", "median_kwh", "p99_kwh", "mean_kwh", "std_kwh", "outlier")
    )


def fill_short_gaps(clean: DataFrame, *, max_gap: int, interval_minutes: int, time_zone: str) -> DataFrame:
    """Clean rows (meter_id, ts, kwh_clean, ...) -> the interpolated rows for gaps of 1..max_gap intervals.

    Returns meter_id, ts, local_date, slot, kwh_clean, quality='interpolated'.
    """
    step = interval_minutes * 60
    by_meter = Window.partitionBy("meter_id").orderBy("ts")
    df = (clean.select("meter_id", "ts", "kwh_clean")
          .withColumn("_prev_t", F.lag(_seconds("ts")).over(by_meter))
          .withColumn("_prev_kwh", F.lag("kwh_clean").over(by_meter))
          .withColumn("_missing", ((_seconds("ts") - F.col("_prev_t")) / step - 1).cast("int"))
          .filter((F.col("_missing") >= 1) & (F.col("_missing") <= max_gap)))
    filled = (df.withColumn("_i", F.explode(F.sequence(F.lit(1), F.col("_missing"))))
              .select("meter_id",
                      F.timestamp_seconds(F.col("_prev_t") + F.col("_i") * step).alias("ts"),
                      (F.col("_prev_kwh") + (F.col("kwh_clean") - F.col("_prev_kwh")) * F.col("_i") / (F.col("_missing") + 1)).alias("kwh_clean"),
                      F.lit("interpolated").alias("quality")))
    return with_local_time(filled, time_zone, interval_minutes).drop("aligned")


def meter_day_quality(clean: DataFrame, quarantine: DataFrame, calendar: DataFrame) -> DataFrame:
    """One row per meter and local day: expected, measured, replaced, interpolated, missing, quarantined.

    ``calendar``: date, expected_intervals. A day is complete when nothing is missing.
    """
    counts = clean.groupBy("meter_id", "date").agg(
        F.sum(F.when(F.col("quality") == "measured", 1).otherwise(0)).alias("measured_intervals"),
        F.sum(F.when(F.col("quality") == "outlier_replaced", 1).otherwise(0)).alias("outlier_intervals"),
        F.sum(F.when(F.col("quality") == "interpolated", 1).otherwise(0)).alias("interpolated_intervals"),
        F.count(F.lit(1)).alias("_present"),
    )
    quarantined = (quarantine.filter(F.col("local_date").isNotNull())
                   .groupBy("meter_id", F.col("local_date").alias("date")).agg(F.count(F.lit(1)).alias("quarantined_readings")))
    out = (counts.join(F.broadcast(calendar), "date")
           .join(quarantined, ["meter_id", "date"], "left")
           .withColumn("quarantined_readings", F.coalesce("quarantined_readings", F.lit(0)).cast("int"))
           .withColumn("missing_intervals", F.greatest(F.col("expected_intervals") - F.col("_present"), F.lit(0)).cast("int")))
    return out.select(
        "meter_id", "date", F.col("expected_intervals").cast("int"),
        F.col("measured_intervals").cast("int"), F.col("outlier_intervals").cast("int"),
        F.col("interpolated_intervals").cast("int"), "missing_intervals", "quarantined_readings",
        (F.col("missing_intervals") == 0).alias("complete"),
    )
