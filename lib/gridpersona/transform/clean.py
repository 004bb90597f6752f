"""Clean: raw interval readings -> clean readings + quarantine + meter-day quality (seed 003 §3.1).

Every raw row ends in exactly one of the clean or the quarantine output:

- quarantined, with the first reason that applies, in this order: ``null_value``,
  ``unknown_meter`` (not in the customer archive), ``misaligned_ts`` (not on an
  interval boundary), ``out_of_window`` (local day before the window),
  ``future_ts`` (local day after the as-of date), ``negative``, ``out_of_range``
  (above ``clean.max_interval_kwh``), ``duplicate`` (a second reading for the same
  meter and instant; the first by kWh is kept);
- otherwise clean, as ``measured`` or, when it is implausible for its meter, as
  ``outlier_replaced`` (value replaced by linear interpolation of the nearest
  non-outlier neighbours; the raw value is kept in ``kwh_raw``).

Implausible (:class:`OutlierRule`): above the contracted capacity x interval hours x
``capacity_margin`` (when the archive knows the capacity), or an isolated one-interval
spike: above ``scale_multiple`` x max(the meter's P99, ``scale_floor_kw`` x interval
hours) and above ``neighbour_multiple`` x both time neighbours, neither of which is high
itself. A high reading next to another high one is a sustained appliance load, and the
floor keeps a low-use meter's ordinary kettle or shower from counting as a fault.

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
from typing import Callable, Iterable
from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F


def affected_dates(changed: Iterable[dt.date], lookback_days: int) -> set[dt.date]:
    """The days whose clean output depends on the readings of a day in ``changed``.

    A day's output reads the readings of the day and of its two neighbours (outlier
    neighbours and interpolation across midnight) and the scales of those three days;
    a day's scale reads the ``lookback_days`` days before it. So a reading landing on
    day x changes days x - 1 .. x + lookback_days + 1, and no other.
    """
    out: set[dt.date] = set()
    for day in changed:
        out.update(day + dt.timedelta(days=k) for k in range(-1, lookback_days + 2))
    return out


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
    """Per meter: median and P99 of its readings (within 5 %, from a log-binned histogram).

    The histogram is a plain ``groupBy(meter, bin).count()`` (code-generated, collapsed
    before the shuffle); quantiles are read off its cumulative counts. Exact enough for an
    outlier scale and far cheaper than a quantile sketch per reading.
    """
    value = F.greatest(F.col("kwh"), F.lit(_BIN_FLOOR_KWH))
    bins = (accepted.withColumn("bin", F.floor(F.log(value) / math.log(_BIN_BASE)).cast("int"))
            .groupBy("meter_id", "bin").agg(F.count(F.lit(1)).alias("n")))
    by_meter = Window.partitionBy("meter_id")
    cum = (bins.withColumn("total", F.sum("n").over(by_meter))
           .withColumn("cum", F.sum("n").over(by_meter.orderBy("bin").rowsBetween(Window.unboundedPreceding, 0))))
    centre = lambda b: F.pow(F.lit(_BIN_BASE), b + 0.5)  # geometric middle of the bin
    stats = cum.groupBy("meter_id").agg(
        F.min(F.when(F.col("cum") >= 0.5 * F.col("total"), F.col("bin"))).alias("_b50"),
        F.min(F.when(F.col("cum") >= 0.99 * F.col("total"), F.col("bin"))).alias("_b99"),
    )
    return stats.select("meter_id", centre(F.col("_b50")).alias("median_kwh"), centre(F.col("_b99")).alias("p99_kwh"))


def flag_candidates(accepted: DataFrame, stats: DataFrame, *, interval_minutes: int, scale_multiple: float,
                    scale_floor_kw: float, capacity_margin: float) -> DataFrame:
    """Accepted readings + ``candidate``, ``high``, ``over_capacity`` and the meter's ``median_kwh``.

    ``stats``: :func:`meter_reading_stats` plus ``contracted_capacity_kva`` (null: unknown).
    ``high``: above ``scale_multiple`` x the meter's scale, max(P99, ``scale_floor_kw`` x
    interval hours); ``over_capacity``: above ``capacity_margin`` x the contracted capacity
    x interval hours (never when the capacity is unknown). A candidate is either; whether a
    high reading is an outlier also depends on its neighbours (:func:`decide_outliers`).
    """
    hours = interval_minutes / 60.0
    scale = F.greatest(F.col("p99_kwh"), F.lit(scale_floor_kw * hours))
    joined = accepted.join(F.broadcast(stats.select("meter_id", "median_kwh", "p99_kwh", "contracted_capacity_kva")),
                           "meter_id", "left")
    return (joined
            .withColumn("high", F.coalesce(F.col("kwh") > scale_multiple * scale, F.lit(False)))
            .withColumn("over_capacity", F.coalesce(
                F.col("kwh") > F.col("contracted_capacity_kva") * (hours * capacity_margin), F.lit(False)))
            .withColumn("candidate", F.col("high") | F.col("over_capacity"))
            .drop("p99_kwh", "contracted_capacity_kva"))


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

    ``good``: array of ``positions`` kWh from the non-candidate readings (null where none;
    the largest where an instant was read twice); ``readings``: rows; ``present``: distinct
    positions read; ``good_present``: distinct positions with a non-candidate reading;
    ``candidate_mask*``: positions with a candidate outlier. One aggregation of conditional
    maxima and bit masks: Spark's code-generated hash aggregate collapses each meter-day
    before the shuffle (no pivot, no collect_list).
    """
    ok = ~F.col("candidate")
    per_pos = [F.max(F.when(ok & (F.col("pos") == p), F.col("kwh"))).alias(f"_p{p}") for p in range(positions)]
    words = _mask_words(positions)
    masks = ([m.alias(f"all_mask{w}") for w, m in enumerate(_position_mask(F.lit(True), positions))]
             + [m.alias(f"good_mask{w}") for w, m in enumerate(_position_mask(ok, positions))]
             + [m.alias(f"candidate_mask{w}") for w, m in enumerate(_position_mask(~ok, positions))])
    days = flagged.groupBy("meter_id", F.col("local_date").alias("date")).agg(
        F.count(F.lit(1)).alias("readings"), F.first("median_kwh").alias("median_kwh"), *masks, *per_pos)
    return days.select(
        "meter_id", "date", "readings", "median_kwh",
        _mask_count("all_mask", positions).alias("present"),
        _mask_count("good_mask", positions).alias("good_present"),
        *[f"candidate_mask{w}" for w in range(words)],
        F.array(*[f"_p{p}" for p in range(positions)]).alias("good"),
    )


def locate_neighbours(candidates: DataFrame, calendar: DataFrame) -> DataFrame:
    """Candidate readings + the (date, position) of their time neighbours, one interval before
    (``_l_date``, ``_l_pos``) and after (``_r_date``, ``_r_pos``), across midnight too.

    ``candidates``: (meter_id, ts, date, pos, kwh, high, over_capacity) of the readings
    :func:`flag_candidates` marked (small).
    """
    n = F.col("_n")
    return (candidates
            .join(F.broadcast(calendar.select("date", F.col("expected_intervals").alias("_n"))), "date", "left")
            .join(F.broadcast(calendar.select(F.date_add("date", 1).alias("date"),
                                              F.col("expected_intervals").alias("_prev_n"))), "date", "left")
            .withColumn("_l_date", F.when(F.col("pos") > 0, F.col("date")).otherwise(F.date_sub("date", 1)))
            .withColumn("_l_pos", F.when(F.col("pos") > 0, F.col("pos") - 1).otherwise(F.col("_prev_n") - 1))
            .withColumn("_r_date", F.when(F.col("pos") < n - 1, F.col("date")).otherwise(F.date_add("date", 1)))
            .withColumn("_r_pos", F.when(F.col("pos") < n - 1, F.col("pos") + 1).otherwise(F.lit(0)))
            .drop("_n", "_prev_n"))


def decide_outliers(located: DataFrame, days: DataFrame, *, neighbour_multiple: float) -> DataFrame:
    """Candidates of :func:`locate_neighbours` -> (meter_id, ts, date, pos, kwh, outlier).

    ``days``: :func:`meter_day_readings`. A reading over capacity is an outlier. A ``high``
    reading is one only when it is an isolated one-interval spike: neither time neighbour
    is a candidate itself, and it exceeds ``neighbour_multiple`` x the larger neighbour (a
    missing neighbour counts as 0). A high reading next to another high reading is a
    sustained load (a shower, a heater, a charger), not a fault.
    """
    words = sum(1 for c in days.columns if c.startswith("candidate_mask"))
    masks = [f"candidate_mask{w}" for w in range(words)]
    # Only the few meter-days next to a candidate are read from ``days``.
    keys = located.select("meter_id", F.explode(F.array("_l_date", "_r_date")).alias("date"))
    near = days.join(F.broadcast(keys), ["meter_id", "date"], "left_semi")

    def side(name: str) -> DataFrame:
        return near.select(F.col("meter_id").alias(f"_{name}_m"), F.col("date").alias(f"_{name}_d"),
                           F.struct("good", *masks).alias(f"_{name}"))

    c = (located
         .join(F.broadcast(side("l")), (F.col("meter_id") == F.col("_l_m")) & (F.col("_l_date") == F.col("_l_d")), "left")
         .join(F.broadcast(side("r")), (F.col("meter_id") == F.col("_r_m")) & (F.col("_r_date") == F.col("_r_d")), "left"))
    pos_bits = 64 * words
    l_high = F.coalesce(_mask_has("_l.candidate_mask", F.col("_l_pos"), pos_bits), F.lit(False))
    r_high = F.coalesce(_mask_has("_r.candidate_mask", F.col("_r_pos"), pos_bits), F.lit(False))
    neighbour_kwh = F.greatest(F.coalesce(F.col("_l.good")[F.col("_l_pos")], F.lit(0.0)),
                               F.coalesce(F.col("_r.good")[F.col("_r_pos")], F.lit(0.0)))
    isolated = ~l_high & ~r_high & (F.col("kwh") > neighbour_multiple * neighbour_kwh)
    return c.select("meter_id", "ts", "date", "pos", "kwh",
                    (F.col("over_capacity") | (F.col("high") & isolated)).alias("outlier"))


def settle_days(days: DataFrame, decided: DataFrame, positions: int) -> DataFrame:
    """Days of :func:`meter_day_readings` with the decisions of :func:`decide_outliers` applied.

    A candidate that is no outlier goes back into ``good`` (the largest reading of its
    instant); ``outlier_mask*`` marks the positions of the outliers, which repair replaces.
    Only the few meter-days with a candidate change.
    """
    per_pos = decided.groupBy("meter_id", "date", "pos").agg(F.max("kwh").alias("kwh"), F.bool_or("outlier").alias("outlier"))
    per_day = per_pos.groupBy("meter_id", "date").agg(
        *[m.alias(f"outlier_mask{w}") for w, m in enumerate(_position_mask(F.col("outlier"), positions))],
        F.map_from_entries(F.collect_list(F.when(~F.col("outlier"), F.struct("pos", "kwh")))).alias("_restore"))
    words = _mask_words(positions)
    restore = F.col("_restore")
    keep_some = restore.isNotNull() & (F.size(restore) > 0)
    df = days.join(F.broadcast(per_day), ["meter_id", "date"], "left")
    good = F.when(keep_some, F.transform("good", lambda x, i: F.coalesce(x, F.try_element_at(restore, i)))).otherwise(F.col("good"))
    return (df.withColumn("good", good)
            .withColumn("good_present", F.when(keep_some, F.size(F.filter("good", lambda x: x.isNotNull())))
                        .otherwise(F.col("good_present")))
            .select(*[c for c in days.columns if not c.startswith("candidate_mask")],
                    *[F.coalesce(F.col(f"outlier_mask{w}"), F.lit(0).cast("long")).alias(f"outlier_mask{w}")
                      for w in range(words)]))


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
    keep one reading per instant (non-candidate first, then the largest kWh); the rest are
    duplicates. Only those few meter-days are sorted; all other readings pass through.

    Both outputs keep the columns of ``flagged``; kept rows cover every meter-day.
    """
    dup_days = F.broadcast(days.filter(F.col("readings") > F.col("present"))
                           .select("meter_id", F.col("date").alias("local_date")))
    plain = flagged.join(dup_days, ["meter_id", "local_date"], "left_anti")
    suspects = flagged.join(dup_days, ["meter_id", "local_date"], "left_semi")
    w = Window.partitionBy("meter_id", "ts").orderBy(F.col("candidate").asc(), F.col("kwh").desc())
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


@dataclass(frozen=True)
class OutlierRule:
    """When an accepted reading is an outlier (``clean.*`` keys of the same names).

    ``scale_multiple`` x max(meter P99, ``scale_floor_kw`` x interval hours) is the level a
    reading must exceed to be ``high``; ``neighbour_multiple``: how far above both time
    neighbours an isolated spike stands; ``capacity_margin``: multiple of the contracted
    capacity x interval hours above which a reading is physically implausible.
    """

    scale_multiple: float = 3.0
    scale_floor_kw: float = 5.0
    neighbour_multiple: float = 3.0
    capacity_margin: float = 2.0


@dataclass
class CleanOutput:
    """The frames of one clean run; ``cached`` are reused by several outputs (release them after the writes)."""

    clean: DataFrame        # silver.ami_clean rows
    quarantine: DataFrame   # silver.ami_quarantine rows
    cached: list[DataFrame]

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()


def meter_capacity(known_meters: DataFrame) -> DataFrame:
    """(meter_id, contracted_capacity_kva): the largest capacity the archive gives the meter;
    null when the archive has no such column or no value for it."""
    capacity = (F.col("contracted_capacity_kva") if "contracted_capacity_kva" in known_meters.columns
                else F.lit(None).cast("double"))
    return known_meters.groupBy("meter_id").agg(F.max(capacity).cast("double").alias("contracted_capacity_kva"))


def clean_interval_readings(raw: DataFrame, known_meters: DataFrame, calendar: DataFrame, *, time_zone: str,
                            interval_minutes: int, first_date: dt.date, last_date: dt.date, max_interval_kwh: float,
                            max_gap: int, rule: OutlierRule = OutlierRule(),
                            cache: Callable[[DataFrame], DataFrame] = lambda df: df) -> CleanOutput:
    """Raw readings -> clean rows and quarantine rows (see the module docstring for the rules).

    ``known_meters``: the archive's ``meter_id`` and, when it has it, ``contracted_capacity_kva``.
    ``cache`` is applied to the frames read more than once (the job passes ``persist``).
    """
    positions = int(max(r["expected_intervals"] for r in calendar.select("expected_intervals").collect()))
    tagged = tag_reasons(raw, known_meters, calendar, time_zone=time_zone, interval_minutes=interval_minutes,
                         first_date=first_date, last_date=last_date, max_interval_kwh=max_interval_kwh)
    accepted = tagged.filter(F.col("reason").isNull())
    stats = cache(meter_reading_stats(accepted).join(meter_capacity(known_meters), "meter_id", "left"))
    flagged = flag_candidates(accepted, stats, interval_minutes=interval_minutes, scale_multiple=rule.scale_multiple,
                              scale_floor_kw=rule.scale_floor_kw, capacity_margin=rule.capacity_margin)
    days = cache(meter_day_readings(flagged, positions))
    candidates = flagged.filter("candidate").select(
        "meter_id", "ts", F.col("local_date").alias("date"), "pos", "kwh", "high", "over_capacity")
    located = cache(locate_neighbours(candidates, calendar))
    decided = cache(decide_outliers(located, days, neighbour_multiple=rule.neighbour_multiple))
    kept, duplicates = split_duplicates(flagged, days)
    quarantine_cols = ["meter_id", "ts", "kwh", "date", "local_date", "reason"]
    quarantine = (tagged.filter(F.col("reason").isNotNull()).select(*quarantine_cols)
                  .unionByName(duplicates.withColumn("reason", F.lit("duplicate")).select(*quarantine_cols)))
    repaired = repair_days(settle_days(days, decided, positions), calendar, max_gap=max_gap)
    outliers = decided.filter("outlier")
    # A kept candidate is measured unless it was decided an outlier.
    confirmed = F.broadcast(outliers.select("meter_id", "ts").distinct().withColumn("_outlier", F.lit(True)))
    measured = (kept.join(confirmed, ["meter_id", "ts"], "left")
                .filter(~(F.col("candidate") & F.col("_outlier").isNotNull()))
                .select("meter_id", "ts", F.col("local_date").alias("date"), "slot", "kwh", F.col("kwh").alias("kwh_raw"),
                        F.lit("measured").alias("quality")))
    fixed = repaired_rows(repaired, outliers.select("meter_id", "ts", "kwh"),
                          interval_minutes=interval_minutes, time_zone=time_zone)
    return CleanOutput(clean=measured.unionByName(fixed), quarantine=quarantine, cached=[stats, days, located, decided])
