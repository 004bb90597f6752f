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
import math
from dataclasses import dataclass
from typing import Callable
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


def calendar_rows_schema() -> str:
    return "date date, day_start_epoch long, expected_intervals int"


def tag_reasons(raw: DataFrame, known_meters: DataFrame, calendar: DataFrame, *, time_zone: str, interval_minutes: int,
                first_date: dt.date, last_date: dt.date, max_interval_kwh: float) -> DataFrame:
    """Raw readings + ``local_date``, ``slot``, ``pos`` and ``reason`` (null when the row may be clean).

    ``known_meters`` has one column ``meter_id`` (the archive's meters); ``calendar`` is
    :func:`local_calendar` as a frame. Both are small and broadcast. ``pos`` is the
    reading's position among the local day's intervals (0 .. expected_intervals - 1),
    which differs from the wall-clock ``slot`` only on DST days.
    """
    known = F.broadcast(known_meters.select("meter_id").distinct().withColumn("_known", F.lit(True)))
    cal = F.broadcast(calendar.select(F.col("date").alias("local_date"), "day_start_epoch"))
    df = with_local_time(raw.join(known, "meter_id", "left"), time_zone, interval_minutes)
    df = (df.join(cal, "local_date", "left")
          .withColumn("pos", ((F.unix_seconds("ts") - F.col("day_start_epoch")) / (interval_minutes * 60)).cast("int"))
          .drop("day_start_epoch"))
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




# Histogram bins for the per-meter quantiles: log-spaced, 5 % wide.
_BIN_BASE = 1.05
_BIN_FLOOR_KWH = 1e-4


def meter_reading_stats(accepted: DataFrame) -> DataFrame:
    """Per meter: median and P99 (within 5 %, from a log-binned histogram), mean and std of its readings.

    The histogram is a plain ``groupBy(meter, bin).count()`` (code-generated, collapsed
    before the shuffle); quantiles are read off its cumulative counts. Exact enough for an
    outlier scale and far cheaper than a quantile sketch per reading.
    """
    value = F.greatest(F.col("kwh"), F.lit(_BIN_FLOOR_KWH))
    bins = (accepted.withColumn("bin", F.floor(F.log(value) / math.log(_BIN_BASE)).cast("int"))
            .groupBy("meter_id", "bin")
            .agg(F.count(F.lit(1)).alias("n"), F.sum("kwh").alias("s1"), F.sum(F.col("kwh") * F.col("kwh")).alias("s2")))
    by_meter = Window.partitionBy("meter_id")
    cum = (bins.withColumn("total", F.sum("n").over(by_meter))
           .withColumn("cum", F.sum("n").over(by_meter.orderBy("bin").rowsBetween(Window.unboundedPreceding, 0))))
    centre = lambda b: F.pow(F.lit(_BIN_BASE), b + 0.5)  # geometric middle of the bin
    stats = cum.groupBy("meter_id").agg(
        F.min(F.when(F.col("cum") >= 0.5 * F.col("total"), F.col("bin"))).alias("_b50"),
        F.min(F.when(F.col("cum") >= 0.99 * F.col("total"), F.col("bin"))).alias("_b99"),
        F.sum("n").alias("_n"), F.sum("s1").alias("_s1"), F.sum("s2").alias("_s2"),
    )
    mean = F.col("_s1") / F.col("_n")
    return stats.select(
        "meter_id",
        centre(F.col("_b50")).alias("median_kwh"),
        centre(F.col("_b99")).alias("p99_kwh"),
        mean.alias("mean_kwh"),
        F.sqrt(F.greatest(F.col("_s2") / F.col("_n") - mean * mean, F.lit(0.0))).alias("std_kwh"),
    )


def outlier_score(value: Column, method: str) -> Column:
    """Z of ``value`` against the meter's own readings (columns of meter_reading_stats in scope)."""
    if method == "zscore":
        return (value - F.col("mean_kwh")) / F.greatest(F.col("std_kwh"), F.lit(1e-6))
    if method == "robust":
        # Scale = the meter's upper spread (P99 - median): load curves are skewed, so a
        # symmetric MAD would call every daily peak an outlier.
        return (value - F.col("median_kwh")) / F.greatest(F.col("p99_kwh") - F.col("median_kwh"), F.lit(1e-3))
    raise ValueError(f"clean.outlier_method {method!r}: expected 'robust' or 'zscore'")


def flag_outliers(accepted: DataFrame, stats: DataFrame, *, method: str, z_threshold: float) -> DataFrame:
    """Accepted readings + ``outlier`` (|Z| above the threshold) and the meter's ``median_kwh``."""
    joined = accepted.join(F.broadcast(stats.select("meter_id", "median_kwh", "p99_kwh", "mean_kwh", "std_kwh")),
                           "meter_id", "left")
    return (joined.withColumn("outlier", F.coalesce(F.abs(outlier_score(F.col("kwh"), method)) > z_threshold, F.lit(False)))
            .drop("p99_kwh", "mean_kwh", "std_kwh"))


def _mask_words(positions: int) -> int:
    return (positions + 63) // 64


def _position_mask(pred: Column, positions: int) -> list[Column]:
    """bit_or of 1 << pos over the rows matching ``pred``: which positions of the day they fill."""
    return [F.bit_or(F.when(pred & (F.col("pos") >= 64 * w) & (F.col("pos") < 64 * (w + 1)),
                            F.expr(f"shiftleft(1L, pos - {64 * w})")).otherwise(F.lit(0).cast("long")))
            for w in range(_mask_words(positions))]


def _mask_count(prefix: str, positions: int) -> Column:
    total = F.lit(0)
    for w in range(_mask_words(positions)):
        total = total + F.bit_count(F.col(f"{prefix}{w}"))
    return total.cast("int")


def _mask_has(prefix: str, pos: Column, positions: int) -> Column:
    cond = F.lit(False)
    for w in range(_mask_words(positions)):
        in_word = (pos >= 64 * w) & (pos < 64 * (w + 1))
        bit = F.call_function("shiftright", F.col(f"{prefix}{w}"), pos - 64 * w)
        cond = cond | (in_word & (bit.bitwiseAND(F.lit(1)) == 1))
    return cond


def meter_day_readings(flagged: DataFrame, positions: int) -> DataFrame:
    """Flagged accepted readings -> one row per meter and local day.

    ``good``: array of ``positions`` kWh from the non-outlier readings (null where none;
    the largest where an instant was read twice); ``readings``: rows; ``present``: distinct
    positions read; ``good_present``: distinct positions with a non-outlier reading;
    ``outlier_mask*``: positions with an outlier. One aggregation of conditional maxima and
    bit masks: Spark's code-generated hash aggregate collapses each meter-day before the
    shuffle (no pivot, no collect_list).
    """
    ok = ~F.col("outlier")
    per_pos = [F.max(F.when(ok & (F.col("pos") == p), F.col("kwh"))).alias(f"_p{p}") for p in range(positions)]
    words = _mask_words(positions)
    masks = ([m.alias(f"all_mask{w}") for w, m in enumerate(_position_mask(F.lit(True), positions))]
             + [m.alias(f"good_mask{w}") for w, m in enumerate(_position_mask(ok, positions))]
             + [m.alias(f"outlier_mask{w}") for w, m in enumerate(_position_mask(~ok, positions))])
    days = flagged.groupBy("meter_id", F.col("local_date").alias("date")).agg(
        F.count(F.lit(1)).alias("readings"), F.first("median_kwh").alias("median_kwh"), *masks, *per_pos)
    return days.select(
        "meter_id", "date", "readings", "median_kwh",
        _mask_count("all_mask", positions).alias("present"),
        _mask_count("good_mask", positions).alias("good_present"),
        *[f"outlier_mask{w}" for w in range(words)],
        F.array(*[f"_p{p}" for p in range(positions)]).alias("good"),
    )


def _first_present(arr: Column, n: Column) -> Column:
    return F.when(arr[0].isNotNull(), F.lit(0)).otherwise(
        F.array_min(F.filter(F.sequence(F.lit(0), n - 1), lambda j: arr[j].isNotNull())))


def _last_present(arr: Column, n: Column) -> Column:
    return F.when(arr[n - 1].isNotNull(), n - 1).otherwise(
        F.array_max(F.filter(F.sequence(F.lit(0), n - 1), lambda j: arr[j].isNotNull())))


def repair_days(days: DataFrame, calendar: DataFrame, *, max_gap: int) -> DataFrame:
    """Meter-days of :func:`meter_day_readings` -> + ``kwh`` (repaired array), ``needs_repair``,
    ``expected_intervals`` and ``day_start_epoch``.

    A position whose readings were all outliers is replaced by linear interpolation between
    the nearest good readings (across midnight too; one side, then the meter median, when a
    side is missing). A run of at most ``max_gap`` missing positions between two good
    readings is interpolated; longer runs stay null. Complete days pass through untouched:
    the array work runs on the few days that need it.
    """
    cal = F.broadcast(calendar.select("date", "day_start_epoch", "expected_intervals"))
    n = F.col("expected_intervals")
    df = days.join(cal, "date").withColumn("good", F.slice("good", 1, n))
    df = df.withColumn("needs_repair", F.col("good_present") < n)
    good = F.col("good")
    by_meter = Window.partitionBy("meter_id").orderBy("date")
    complete = ~F.col("needs_repair")
    has_good = F.col("good_present") > 0
    df = (df.withColumn("_first", F.when(complete, F.lit(0)).when(has_good, _first_present(good, n)))
            .withColumn("_last", F.when(complete, n - 1).when(has_good, _last_present(good, n))))
    prev_ok = F.lag("date").over(by_meter) == F.date_sub("date", 1)
    next_ok = F.lead("date").over(by_meter) == F.date_add("date", 1)
    df = (df.withColumn("_pv", F.when(prev_ok, F.lag(F.struct(
                F.col("_last").alias("i"), good[F.col("_last")].alias("v"), n.alias("n"))).over(by_meter)))
            .withColumn("_nv", F.when(next_ok, F.lead(F.struct(
                F.col("_first").alias("i"), good[F.col("_first")].alias("v"))).over(by_meter))))
    words = sum(1 for c in days.columns if c.startswith("outlier_mask"))

    def fix(x: Column, i: Column) -> Column:
        prev_in = F.when(i > 0, F.array_max(F.filter(F.sequence(F.lit(0), i - 1), lambda j: good[j].isNotNull())))
        next_in = F.when(i < n - 1, F.array_min(F.filter(F.sequence(i + 1, n - 1), lambda j: good[j].isNotNull())))
        # Positions on one line through midnight: the previous day's are negative, the next day's >= n.
        prev_pos = F.coalesce(prev_in, F.col("_pv.i") - F.col("_pv.n"))
        prev_val = F.coalesce(good[prev_in], F.col("_pv.v"))
        next_pos = F.coalesce(next_in, n + F.col("_nv.i"))
        next_val = F.coalesce(good[next_in], F.col("_nv.v"))
        line = prev_val + (next_val - prev_val) * (i - prev_pos) / (next_pos - prev_pos)
        return (F.when(x.isNotNull(), x)
                .when(_mask_has("outlier_mask", i, 64 * words), F.coalesce(line, prev_val, next_val, F.col("median_kwh")))
                .when(next_pos - prev_pos - 1 <= max_gap, line))

    df = df.withColumn("kwh", F.when(complete, good).otherwise(F.transform(good, fix)))
    return df.drop("_first", "_last", "_pv", "_nv")


def repaired_rows(repaired: DataFrame, outliers: DataFrame, *, interval_minutes: int, time_zone: str) -> DataFrame:
    """The clean rows that repair created: ``outlier_replaced`` (raw value in ``kwh_raw``) and ``interpolated``.

    ``outliers``: the outlier readings (meter_id, ts, kwh), small.
    """
    step = interval_minutes * 60
    words = sum(1 for c in repaired.columns if c.startswith("outlier_mask"))
    df = (repaired.filter("needs_repair")
          .select("meter_id", "date", "day_start_epoch", *[f"outlier_mask{w}" for w in range(words)],
                  F.posexplode(F.arrays_zip(F.col("good").alias("good"), F.col("kwh").alias("kwh"))).alias("pos", "r"))
          .filter(F.col("r.good").isNull() & F.col("r.kwh").isNotNull()))
    df = df.select(
        "meter_id", F.timestamp_seconds(F.col("day_start_epoch") + F.col("pos") * step).alias("ts"), "date",
        F.col("pos").alias("slot"), F.col("r.kwh").alias("kwh"),
        F.when(_mask_has("outlier_mask", F.col("pos"), 64 * words), "outlier_replaced").otherwise("interpolated").alias("quality"))
    raw = F.broadcast(outliers.groupBy("meter_id", "ts").agg(F.max("kwh").alias("_raw")))
    df = (df.join(raw, ["meter_id", "ts"], "left")
          .withColumn("kwh_raw", F.when(F.col("quality") == "outlier_replaced", F.col("_raw"))))
    if fixed_utc_offset_seconds(time_zone) is None:
        # DST zones: position and wall-clock slot differ on the two change days.
        df = with_local_time(df.drop("slot"), time_zone, interval_minutes).drop("local_date", "aligned")
    return df.select("meter_id", "ts", "date", "slot", "kwh", "kwh_raw", "quality")


def split_duplicates(flagged: DataFrame, days: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(kept, duplicates): on the meter-days read more often than they have distinct positions,
    keep one reading per instant (non-outlier first, then the largest kWh); the rest are
    duplicates. Only those few meter-days are sorted; all other readings pass through.

    Both outputs keep the columns of ``flagged``; kept rows cover every meter-day.
    """
    dup_days = F.broadcast(days.filter(F.col("readings") > F.col("present"))
                           .select("meter_id", F.col("date").alias("local_date")))
    plain = flagged.join(dup_days, ["meter_id", "local_date"], "left_anti")
    suspects = flagged.join(dup_days, ["meter_id", "local_date"], "left_semi")
    w = Window.partitionBy("meter_id", "ts").orderBy(F.col("outlier").asc(), F.col("kwh").desc())
    ranked = suspects.withColumn("_n", F.row_number().over(w))
    kept = plain.unionByName(ranked.filter(F.col("_n") == 1).drop("_n"))
    duplicates = ranked.filter(F.col("_n") > 1).drop("_n")
    return kept, duplicates


def meter_day_quality(clean: DataFrame, quarantine: DataFrame, known_meters: DataFrame, calendar: DataFrame) -> DataFrame:
    """One row per known meter and local day of the calendar: expected, measured, replaced,
    interpolated, missing and quarantined counts; a day with no reading at all is all missing."""
    counts = clean.groupBy("meter_id", "date").agg(
        F.sum(F.when(F.col("quality") == "measured", 1).otherwise(0)).cast("int").alias("measured_intervals"),
        F.sum(F.when(F.col("quality") == "outlier_replaced", 1).otherwise(0)).cast("int").alias("outlier_intervals"),
        F.sum(F.when(F.col("quality") == "interpolated", 1).otherwise(0)).cast("int").alias("interpolated_intervals"),
    )
    quarantined = quarantine.filter(F.col("local_date").isNotNull()).groupBy(
        "meter_id", F.col("local_date").alias("date")).agg(F.count(F.lit(1)).cast("int").alias("quarantined_readings"))
    grid = known_meters.select("meter_id").distinct().crossJoin(F.broadcast(calendar.select("date", "expected_intervals")))
    out = (grid.join(counts, ["meter_id", "date"], "left").join(quarantined, ["meter_id", "date"], "left")
           .fillna(0, ["measured_intervals", "outlier_intervals", "interpolated_intervals", "quarantined_readings"]))
    present = F.col("measured_intervals") + F.col("outlier_intervals") + F.col("interpolated_intervals")
    missing = F.greatest(F.col("expected_intervals") - present, F.lit(0)).cast("int")
    return out.select(
        "meter_id", "date", F.col("expected_intervals").cast("int"), "measured_intervals", "outlier_intervals",
        "interpolated_intervals", missing.alias("missing_intervals"), "quarantined_readings",
        (missing == 0).alias("complete"))


@dataclass
class CleanOutput:
    """The frames of one clean run; ``days`` is reused by several outputs (persist it)."""

    clean: DataFrame        # silver.ami_clean rows
    quarantine: DataFrame   # silver.ami_quarantine rows
    days: DataFrame
    stats: DataFrame


def clean_interval_readings(raw: DataFrame, known_meters: DataFrame, calendar: DataFrame, *, time_zone: str,
                            interval_minutes: int, first_date: dt.date, last_date: dt.date, max_interval_kwh: float,
                            method: str, z_threshold: float, max_gap: int,
                            cache: Callable[[DataFrame], DataFrame] = lambda df: df) -> CleanOutput:
    """Raw readings -> clean rows and quarantine rows (see the module docstring for the rules).

    ``cache`` is applied to the frames read more than once (the job passes ``persist``).
    """
    positions = int(max(r["expected_intervals"] for r in calendar.select("expected_intervals").collect()))
    tagged = tag_reasons(raw, known_meters, calendar, time_zone=time_zone, interval_minutes=interval_minutes,
                         first_date=first_date, last_date=last_date, max_interval_kwh=max_interval_kwh)
    accepted = tagged.filter(F.col("reason").isNull())
    stats = cache(meter_reading_stats(accepted))
    flagged = flag_outliers(accepted, stats, method=method, z_threshold=z_threshold)
    days = cache(meter_day_readings(flagged, positions))
    kept, duplicates = split_duplicates(flagged, days)
    quarantine_cols = ["meter_id", "ts", "kwh", "date", "local_date", "reason"]
    quarantine = (tagged.filter(F.col("reason").isNotNull()).select(*quarantine_cols)
                  .unionByName(duplicates.withColumn("reason", F.lit("duplicate")).select(*quarantine_cols)))
    repaired = repair_days(days, calendar, max_gap=max_gap)
    measured = kept.filter(~F.col("outlier")).select(
        "meter_id", "ts", F.col("local_date").alias("date"), "slot", "kwh", F.col("kwh").alias("kwh_raw"),
        F.lit("measured").alias("quality"))
    fixed = repaired_rows(repaired, flagged.filter("outlier").select("meter_id", "ts", "kwh"),
                          interval_minutes=interval_minutes, time_zone=time_zone)
    return CleanOutput(clean=measured.unionByName(fixed), quarantine=quarantine, days=days, stats=stats)
