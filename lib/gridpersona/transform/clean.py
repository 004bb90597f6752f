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




# ------------------------------------------------------------------ meter-days
# Everything after tagging works on one row per meter and local day holding the day's readings as an array
# indexed by position: one aggregation over the readings, then array expressions on the (few) days with a
# candidate outlier or a gap. The readings are never sorted or windowed.


def _chunk_width(positions: int) -> int:
    return next(c for c in (8, 6, 5, 4, 3, 2, 1) if positions % c == 0)


def meter_day_arrays(accepted: DataFrame, positions: int) -> DataFrame:
    """Accepted readings (meter_id, local_date, pos, kwh) -> one row per meter and local day.

    ``_p0 .. _p{positions-1}``: the largest reading of each position (null where none), kept as
    columns (a columnar cache scans them fast; :func:`position_array` makes the array where needed);
    ``readings``: rows; ``present``: positions read; ``day_max_kwh``: the largest reading;
    ``day_mean_kwh``: the mean of the positions' readings. Two hash aggregations, as in
    :func:`gridpersona.transform.shapes.slot_columns`: per meter, day and group of positions
    first (collapsed before the shuffle), then per meter and day.
    """
    w = _chunk_width(positions)
    group = (F.col("pos") / w).cast("int")
    first = (accepted.select("meter_id", F.col("local_date").alias("date"), "kwh", group.alias("_g"),
                             (F.col("pos") - group * w).alias("_j"))
             .groupBy("meter_id", "date", "_g").agg(
                 F.count(F.lit(1)).alias("_n"),
                 *[F.max(F.when(F.col("_j") == j, F.col("kwh"))).alias(f"_v{j}") for j in range(w)]))
    days = first.repartition("meter_id", "date").groupBy("meter_id", "date").agg(
        F.sum("_n").cast("int").alias("readings"),
        *[F.max(F.when(F.col("_g") == q, F.col(f"_v{j}"))).alias(f"_p{q * w + j}")
          for q in range(positions // w) for j in range(w)])
    # Scalar expressions over the position columns (code-generated), not lambdas over the array: a
    # higher-order function is interpreted element by element, on every meter-day.
    cols = [F.col(f"_p{p}") for p in range(positions)]
    present = sum((c.isNotNull().cast("int") for c in cols), F.lit(0))
    total = F.lit(0.0)
    for c in cols:  # in position order: the same bits whatever order the rows came in
        total = total + F.coalesce(c, F.lit(0.0))
    return days.select("meter_id", "date", "readings", present.alias("present"), F.greatest(*cols).alias("day_max_kwh"),
                       (total / present).alias("day_mean_kwh"), *cols)


def position_array(positions: int) -> Column:
    """The position columns of :func:`meter_day_arrays` as one array (index = position)."""
    return F.array(*[F.col(f"_p{p}") for p in range(positions)])


def _median(values: Column) -> Column:
    s = F.array_sort(values)
    k = F.size(s)
    return F.when(k > 0, (s[((k - 1) / 2).cast("int")] + s[(k / 2).cast("int")]) / 2)


def lookback_scales(stats: DataFrame, lookback_days: int) -> DataFrame:
    """(meter_id, date, day_max_kwh, day_mean_kwh), one row per meter and day with readings ->
    (meter_id, date, outlier_scale_kwh, fill_level_kwh): the medians of ``day_max_kwh`` and
    ``day_mean_kwh`` over the meter's days with readings among the ``lookback_days`` days before
    the day (null when there are none). A window over the small day rows, never the readings.
    """
    w = Window.partitionBy("meter_id").orderBy(F.unix_date("date")).rangeBetween(-lookback_days, -1)
    return stats.select("meter_id", "date",
                        _median(F.collect_list("day_max_kwh").over(w)).alias("outlier_scale_kwh"),
                        _median(F.collect_list("day_mean_kwh").over(w)).alias("fill_level_kwh"))


def _thresholds(df: DataFrame, *, interval_minutes: int, rule: "OutlierRule") -> DataFrame:
    hours = interval_minutes / 60.0
    high_at = rule.scale_multiple * F.greatest(F.coalesce(F.col("outlier_scale_kwh"), F.lit(0.0)),
                                               F.lit(rule.scale_floor_kw * hours))
    return (df.withColumn("_high_at", high_at)
            .withColumn("_cap_at", F.col("contracted_capacity_kva") * (hours * rule.capacity_margin)))


def _is_candidate(x: Column) -> Column:
    """A reading above the day's high level or above the capacity bound (never when the capacity is unknown)."""
    return F.coalesce((x > F.col("_high_at")) | F.coalesce(x > F.col("_cap_at"), F.lit(False)), F.lit(False))


def _first_where(arr: Column, n: Column, pred) -> Column:
    return F.array_min(F.filter(F.sequence(F.lit(0), n - 1), lambda j: pred(arr[j])))


def _last_where(arr: Column, n: Column, pred) -> Column:
    return F.array_max(F.filter(F.sequence(F.lit(0), n - 1), lambda j: pred(arr[j])))


def day_edges(flagged: DataFrame) -> DataFrame:
    """What a neighbour day needs of each flagged day: its first and last reading with their candidate
    flags (outlier decisions next to midnight) and its first and last non-candidate reading
    (interpolation across midnight). Simple on the many complete days without a candidate."""
    v, n = F.col("v"), F.col("expected_intervals")
    good = lambda x: x.isNotNull() & ~_is_candidate(x)
    plain = (F.col("present") == n) & ~F.col("has_candidate")
    first_good = F.when(plain, F.lit(0)).otherwise(_first_where(v, n, good))
    last_good = F.when(plain, n - 1).otherwise(_last_where(v, n, good))
    return flagged.select(
        "meter_id", "date",
        F.struct(v[0].alias("first_v"), _is_candidate(v[0]).alias("first_c"),
                 v[n - 1].alias("last_v"), _is_candidate(v[n - 1]).alias("last_c"),
                 first_good.alias("first_good_i"), v[first_good].alias("first_good_v"),
                 last_good.alias("last_good_i"), v[last_good].alias("last_good_v"), n.alias("n")).alias("edge"))


def decide_and_repair(flagged: DataFrame, edges: DataFrame, *, rule: "OutlierRule", max_gap: int,
                      cache: Callable[[DataFrame], DataFrame] = lambda df: df) -> DataFrame:
    """Flagged days + their neighbours' :func:`day_edges` -> + ``outlier`` (array of booleans; null on a day
    without candidates) and ``kwh`` (the repaired array).

    A candidate over capacity is an outlier. A ``high`` candidate is one only when it is an isolated
    one-interval spike: neither time neighbour (across midnight too) is a candidate itself and it exceeds
    ``neighbour_multiple`` x the larger neighbour (a missing one counts as 0). An outlier is replaced by
    linear interpolation between the nearest kept readings (across midnight: the neighbour day's nearest
    non-candidate reading; one side, then the meter's fill level, then the day's mean, when a side is
    missing); a run of at most ``max_gap`` missing positions between two readings is interpolated.
    ``cache`` is applied to the intermediate arrays the lambdas read (pass ``persist`` on real data).
    """
    prev = edges.select("meter_id", F.date_add("date", 1).alias("date"), F.col("edge").alias("_prev"))
    nxt = edges.select("meter_id", F.date_sub("date", 1).alias("date"), F.col("edge").alias("_next"))
    df = flagged.join(prev, ["meter_id", "date"], "left").join(nxt, ["meter_id", "date"], "left")
    v, n = F.col("v"), F.col("expected_intervals")

    def outlier(x: Column, i: Column) -> Column:
        lv = F.when(i > 0, v[i - 1]).otherwise(F.col("_prev.last_v"))
        lc = F.when(i > 0, _is_candidate(v[i - 1])).otherwise(F.coalesce(F.col("_prev.last_c"), F.lit(False)))
        rv = F.when(i < n - 1, v[i + 1]).otherwise(F.col("_next.first_v"))
        rc = F.when(i < n - 1, _is_candidate(v[i + 1])).otherwise(F.coalesce(F.col("_next.first_c"), F.lit(False)))
        isolated = ~lc & ~rc & (x > rule.neighbour_multiple * F.greatest(F.coalesce(lv, F.lit(0.0)),
                                                                         F.coalesce(rv, F.lit(0.0))))
        over = F.coalesce(x > F.col("_cap_at"), F.lit(False))
        high = F.coalesce(x > F.col("_high_at"), F.lit(False))
        return F.coalesce(over | (high & isolated), F.lit(False))

    # Each array computed below is cached before it is read inside a lambda: the optimizer would otherwise
    # inline its construction into every element access (an array rebuilt per element read).
    df = cache(df.withColumn("outlier", F.when(F.col("has_candidate"), F.transform(v, outlier))))
    out = F.col("outlier")

    def good(j: Column) -> Column:  # the reading at j unless it is an outlier
        return F.when(~F.coalesce(out[j], F.lit(False)), v[j])

    n_out = F.when(out.isNull(), F.lit(0)).otherwise(F.size(F.filter(out, lambda o: o)))
    df = df.withColumn("outlier_count", n_out).withColumn("needs_repair", F.col("present") - n_out < n)
    # The nearest kept position before and after each position, in one pass each way (index -1: none): the
    # repair of a position then reads them instead of searching the day again.
    none = F.lit(-1)

    def nearest(order: Column) -> Column:
        start = F.struct(none.alias("last"), F.array().cast("array<int>").alias("out"))
        return F.aggregate(order, start, lambda acc, j: F.struct(
            F.when(good(j).isNotNull(), j).otherwise(acc["last"]).alias("last"),
            F.concat(acc["out"], F.array(acc["last"])).alias("out")))["out"]

    df = cache(df.withColumn("_before", F.when(F.col("needs_repair"), nearest(F.sequence(F.lit(0), n - 1))))
               .withColumn("_after", F.when(F.col("needs_repair"),
                                            F.reverse(nearest(F.sequence(n - 1, F.lit(0), F.lit(-1)))))))

    def fix(i: Column) -> Column:
        x = good(i)
        before, after = F.col("_before")[i], F.col("_after")[i]
        prev_in = F.when(before >= 0, before)
        next_in = F.when(after >= 0, after)
        # Positions on one line through midnight: the previous day's are negative, the next day's >= n.
        prev_pos = F.coalesce(prev_in, F.col("_prev.last_good_i") - F.col("_prev.n"))
        prev_val = F.coalesce(good(prev_in), F.col("_prev.last_good_v"))
        next_pos = F.coalesce(next_in, n + F.col("_next.first_good_i"))
        next_val = F.coalesce(good(next_in), F.col("_next.first_good_v"))
        line = prev_val + (next_val - prev_val) * (i - prev_pos) / (next_pos - prev_pos)
        is_outlier = F.coalesce(out[i], F.lit(False))
        return (F.when(x.isNotNull(), x)
                .when(is_outlier, F.coalesce(line, prev_val, next_val, F.col("fill_level_kwh"), F.col("day_mean_kwh")))
                .when(next_pos - prev_pos - 1 <= max_gap, line))

    return df.withColumn("kwh", F.when(F.col("needs_repair"), F.transform(v, lambda x, i: fix(i))).otherwise(v))


def day_rows(repaired: DataFrame, *, interval_minutes: int, time_zone: str) -> DataFrame:
    """Repaired days -> silver.ami_clean rows: ``measured``, ``outlier_replaced`` (raw value in ``kwh_raw``)
    and ``interpolated`` (``kwh_raw`` null), one per position with a value."""
    zipped = F.arrays_zip(F.col("v").alias("v"), F.col("kwh").alias("kwh"),
                          F.coalesce(F.col("outlier"), F.array().cast("array<boolean>")).alias("o"))
    df = (repaired.select("meter_id", "date", "day_start_epoch", F.posexplode(zipped).alias("pos", "r"))
          .filter(F.col("r.kwh").isNotNull()))
    quality = (F.when(F.col("r.v").isNull(), "interpolated")
               .when(F.coalesce(F.col("r.o"), F.lit(False)), "outlier_replaced").otherwise("measured"))
    df = df.select("meter_id", "date", "day_start_epoch", "pos", F.col("r.kwh").alias("kwh"),
                   F.col("r.v").alias("kwh_raw"), quality.alias("quality"))
    return _rows_select(df, interval_minutes=interval_minutes, time_zone=time_zone)


def _rows_select(df: DataFrame, *, interval_minutes: int, time_zone: str) -> DataFrame:
    step = interval_minutes * 60
    df = df.withColumn("ts", F.timestamp_seconds(F.col("day_start_epoch") + F.col("pos") * step))
    if fixed_utc_offset_seconds(time_zone) is None:
        # DST zones: position and wall-clock slot differ on the two change days.
        df = with_local_time(df.drop("slot"), time_zone, interval_minutes).drop("local_date", "aligned")
    else:
        df = df.withColumn("slot", F.col("pos"))
    return df.select("meter_id", "ts", "date", "slot", "kwh", "kwh_raw", "quality")


def plain_rows(plain: DataFrame, *, interval_minutes: int, time_zone: str) -> DataFrame:
    """Days complete, read once per instant and without a candidate -> their readings as ``measured`` rows."""
    df = plain.select("meter_id", "date", "day_start_epoch", F.posexplode("v").alias("pos", "kwh"))
    return _rows_select(df.select("*", F.col("kwh").alias("kwh_raw"), F.lit("measured").alias("quality")),
                        interval_minutes=interval_minutes, time_zone=time_zone)


def resolve_duplicates(accepted: DataFrame, days: DataFrame, scales: DataFrame, capacity: DataFrame, *,
                       interval_minutes: int, rule: "OutlierRule",
                       cache: Callable[[DataFrame], DataFrame] = lambda df: df) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(kept, duplicates) on the meter-days read more often than they have distinct positions: one reading
    per instant is kept (non-candidate first, then the largest kWh), the rest are duplicates. Only those
    few meter-days are ranked (``cache`` is applied to them: both outputs read them). ``kept``: (meter_id,
    date, _fix) with _fix a map position -> kept kWh; ``duplicates``: the duplicate rows with the columns
    of ``accepted``; third, the cached ranked rows (to release)."""
    keys = F.broadcast(days.filter(F.col("readings") > F.col("present")).select("meter_id", F.col("date").alias("local_date")))
    suspects = (accepted.join(keys, ["meter_id", "local_date"], "left_semi")
                .join(F.broadcast(scales.select("meter_id", F.col("date").alias("local_date"), "outlier_scale_kwh")),
                      ["meter_id", "local_date"], "left")
                .join(F.broadcast(capacity), "meter_id", "left"))
    suspects = _thresholds(suspects, interval_minutes=interval_minutes, rule=rule)
    w = Window.partitionBy("meter_id", "ts").orderBy(_is_candidate(F.col("kwh")).asc(), F.col("kwh").desc())
    ranked = cache(suspects.withColumn("_n", F.row_number().over(w)))
    kept = (ranked.filter(F.col("_n") == 1).groupBy("meter_id", F.col("local_date").alias("date"))
            .agg(F.map_from_entries(F.collect_list(F.struct("pos", "kwh"))).alias("_fix")))
    duplicates = ranked.filter(F.col("_n") > 1).select(*accepted.columns)
    return kept, duplicates, ranked


@dataclass(frozen=True)
class OutlierRule:
    """When an accepted reading is an outlier (``clean.*`` keys of the same names).

    ``scale_multiple`` x max(the meter's scale for the day, ``scale_floor_kw`` x interval hours) is
    the level a reading must exceed to be ``high``; the scale is the median of the meter's daily
    largest readings over the look-back (:func:`lookback_scales`). ``neighbour_multiple``: how far
    above both time neighbours an isolated spike stands; ``capacity_margin``: multiple of the
    contracted capacity x interval hours above which a reading is physically implausible.
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
    counts: DataFrame       # per meter-day counts and statistics (day_counts): what quality_from reads
    known_meters: DataFrame
    calendar: DataFrame     # the output dates' calendar
    cached: list[DataFrame]

    @property
    def quality(self) -> DataFrame:
        """silver.meter_day_quality rows, counting ``quarantine``."""
        return self.quality_from(self.quarantine)

    def quality_from(self, quarantine: DataFrame) -> DataFrame:
        """silver.meter_day_quality rows counting the given quarantine rows (e.g. the written ones: no
        second pass over the readings)."""
        return meter_day_quality(self.counts, quarantine, self.known_meters, self.calendar)

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()


def meter_capacity(known_meters: DataFrame) -> DataFrame:
    """(meter_id, contracted_capacity_kva): the largest capacity the archive gives the meter;
    null when the archive has no such column or no value for it."""
    capacity = (F.col("contracted_capacity_kva") if "contracted_capacity_kva" in known_meters.columns
                else F.lit(None).cast("double"))
    return known_meters.groupBy("meter_id").agg(F.max(capacity).cast("double").alias("contracted_capacity_kva"))


def day_counts(repaired: DataFrame) -> DataFrame:
    """Per repaired meter-day: measured, replaced and interpolated positions and the day's statistics."""
    interpolated = F.when(F.col("needs_repair"), F.size(F.filter("kwh", lambda x: x.isNotNull())) - F.col("present"))
    return repaired.select(
        "meter_id", "date",
        (F.col("present") - F.col("outlier_count")).alias("measured_intervals"),
        F.col("outlier_count").alias("outlier_intervals"),
        F.coalesce(interpolated, F.lit(0)).alias("interpolated_intervals"),
        *_DAY_STATS)


_DAY_STATS = ("day_max_kwh", "day_mean_kwh", "outlier_scale_kwh", "fill_level_kwh")


def meter_day_quality(counts: DataFrame, quarantine: DataFrame, known_meters: DataFrame, calendar: DataFrame) -> DataFrame:
    """One row per known meter and local day of ``calendar``: expected, measured, replaced, interpolated,
    missing and quarantined counts, the day's reading statistics and the scale that judged it
    (``counts``: :func:`day_counts` rows). A day with no reading at all is all missing."""
    quarantined = quarantine.filter(F.col("local_date").isNotNull()).groupBy(
        "meter_id", F.col("local_date").alias("date")).agg(F.count(F.lit(1)).cast("int").alias("quarantined_readings"))
    grid = known_meters.select("meter_id").distinct().crossJoin(F.broadcast(calendar.select("date", "expected_intervals")))
    out = (grid.join(counts, ["meter_id", "date"], "left").join(quarantined, ["meter_id", "date"], "left")
           .fillna(0, ["measured_intervals", "outlier_intervals", "interpolated_intervals", "quarantined_readings"]))
    present = F.col("measured_intervals") + F.col("outlier_intervals") + F.col("interpolated_intervals")
    missing = F.greatest(F.col("expected_intervals") - present, F.lit(0)).cast("int")
    return out.select(
        "meter_id", "date", F.col("expected_intervals").cast("int"), F.col("measured_intervals").cast("int"),
        F.col("outlier_intervals").cast("int"), F.col("interpolated_intervals").cast("int"),
        missing.alias("missing_intervals"), "quarantined_readings", (missing == 0).alias("complete"), *_DAY_STATS)


PRIOR_STATS_SCHEMA = "meter_id string, date date, day_max_kwh double, day_mean_kwh double"


def clean_interval_readings(raw: DataFrame, known_meters: DataFrame, calendar: DataFrame, *, time_zone: str,
                            interval_minutes: int, first_date: dt.date, last_date: dt.date, max_interval_kwh: float,
                            max_gap: int, rule: OutlierRule = OutlierRule(), lookback_days: int = 14,
                            dates: Iterable[dt.date] | None = None, prior_stats: DataFrame | None = None,
                            cache: Callable[[DataFrame], DataFrame] = lambda df: df) -> CleanOutput:
    """Raw readings -> clean rows, quarantine rows and meter-day quality of ``dates`` (see the module
    docstring for the rules).

    ``raw``: the readings of ``dates`` (default: every day of ``first_date .. last_date``) and of the
    days a day's output reads: its two neighbours and the look-back days that ``prior_stats`` lacks.
    Readings of other days in ``raw`` are context only: nothing of them is returned.
    ``prior_stats``: (meter_id, date, day_max_kwh, day_mean_kwh) of look-back days not in ``raw`` (the
    stored silver.meter_day_quality). ``calendar``: :func:`local_calendar` of every day in ``raw`` and
    ``dates``. ``known_meters``: the archive's ``meter_id`` and, when it has it,
    ``contracted_capacity_kva``. ``cache`` is applied to the frames read more than once (the job passes
    ``persist``).
    """
    out_dates = sorted(dates) if dates is not None else [
        first_date + dt.timedelta(days=i) for i in range((last_date - first_date).days + 1)]
    positions = int(max(r["expected_intervals"] for r in calendar.select("expected_intervals").collect()))
    tagged = tag_reasons(raw, known_meters, calendar, time_zone=time_zone, interval_minutes=interval_minutes,
                         first_date=first_date, last_date=last_date, max_interval_kwh=max_interval_kwh)
    accepted = tagged.filter(F.col("reason").isNull()).select("meter_id", "ts", "kwh", "date", "local_date", "pos")
    days = cache(meter_day_arrays(accepted, positions))
    stats = days.select("meter_id", "date", "day_max_kwh", "day_mean_kwh")
    if prior_stats is not None:
        stats = stats.unionByName(prior_stats.filter(F.col("day_max_kwh").isNotNull())
                                  .select("meter_id", "date", "day_max_kwh", "day_mean_kwh"))
    scales = cache(lookback_scales(stats, lookback_days))
    capacity = cache(meter_capacity(known_meters))
    kept, duplicates, ranked = resolve_duplicates(accepted, days, scales, capacity, interval_minutes=interval_minutes,
                                                  rule=rule, cache=cache)
    cal = F.broadcast(calendar.select("date", "day_start_epoch", "expected_intervals"))
    n = F.col("expected_intervals")
    # The day-level decisions on narrow rows (no reading columns): only these are joined with the scales.
    narrow = (days.select("meter_id", "date", "readings", "present", "day_max_kwh", "day_mean_kwh")
              .join(scales, ["meter_id", "date"], "left")
              .join(F.broadcast(capacity), "meter_id", "left")
              .join(cal, "date"))
    narrow = _thresholds(narrow, interval_minutes=interval_minutes, rule=rule)
    # Candidacy rises with the value: a day has a candidate exactly when its largest reading is one.
    narrow = narrow.withColumn("has_candidate", _is_candidate(F.col("day_max_kwh")))
    # Most days are complete, read once per instant and without a candidate: their readings are the clean rows
    # as they are. Only the others (a candidate, a gap, an instant read twice) go through decisions and repair.
    plain_day = (F.col("present") == n) & ~F.col("has_candidate") & (F.col("readings") == F.col("present"))
    narrow = cache(narrow.withColumn("_plain", plain_day))
    busy_flags = narrow.filter(~F.col("_plain")).drop("_plain", "readings", "present", "day_max_kwh", "day_mean_kwh")
    positions_cols = [f"_p{p}" for p in range(positions)]
    v = F.slice(position_array(positions), 1, n)
    # The wide reading rows are never shuffled: the busy days' flags (a small share) are broadcast to them.
    plain = (days.join(F.broadcast(busy_flags.select("meter_id", "date")), ["meter_id", "date"], "left_anti")
             .join(cal, "date")
             .withColumn("v", v).drop(*positions_cols)
             # No reading of a plain day is a candidate: no level applies to it.
             .withColumn("has_candidate", F.lit(False))
             .withColumn("_high_at", F.lit(None).cast("double")).withColumn("_cap_at", F.lit(None).cast("double")))
    fixed = F.col("_fix")
    busy = (days.join(F.broadcast(busy_flags), ["meter_id", "date"])
            .withColumn("v", v).drop(*positions_cols)
            .join(F.broadcast(kept), ["meter_id", "date"], "left")
            .withColumn("v", F.when(fixed.isNull(), F.col("v")).otherwise(
                F.transform("v", lambda x, i: F.coalesce(F.try_element_at(fixed, i), x))))
            .withColumn("present", F.when(fixed.isNull(), F.col("present"))
                        .otherwise(F.size(F.filter("v", lambda x: x.isNotNull()))))
            .drop("_fix"))
    # Cached: read by the edges and the decisions, and it stops the optimizer from inlining the array's
    # construction into every element access of the lambdas below (an array built per element read).
    busy = cache(busy)
    # Small rows, read twice (as the previous and as the next day's neighbour).
    edges = cache(day_edges(plain).unionByName(day_edges(busy)))
    held: list[DataFrame] = []

    def hold(df: DataFrame) -> DataFrame:
        held.append(cache(df))
        return held[-1]

    repaired = decide_and_repair(busy.filter(F.col("date").isin(out_dates)), edges, rule=rule, max_gap=max_gap,
                                 cache=hold)
    # Read by the clean rows and by the quality rows: decided and repaired once (the few busy days).
    repaired = cache(repaired.select("meter_id", "date", "day_start_epoch", "v", "kwh", "outlier", "present",
                                     "outlier_count", "needs_repair", *_DAY_STATS))
    clean = plain_rows(plain.filter(F.col("date").isin(out_dates)), interval_minutes=interval_minutes,
                       time_zone=time_zone).unionByName(day_rows(repaired, interval_minutes=interval_minutes,
                                                                 time_zone=time_zone))
    counts = (narrow.filter(F.col("_plain") & F.col("date").isin(out_dates))
              .select("meter_id", "date", F.col("present").alias("measured_intervals"),
                      F.lit(0).alias("outlier_intervals"), F.lit(0).alias("interpolated_intervals"), *_DAY_STATS)
              .unionByName(day_counts(repaired)))
    quarantine_cols = ["meter_id", "ts", "kwh", "date", "local_date", "reason"]
    quarantine = (tagged.filter(F.col("reason").isNotNull()).select(*quarantine_cols)
                  .unionByName(duplicates.withColumn("reason", F.lit("duplicate")).select(*quarantine_cols))
                  .filter(F.col("date").isin(out_dates)))
    return CleanOutput(clean=clean, quarantine=quarantine, counts=counts, known_meters=known_meters,
                       calendar=calendar.filter(F.col("date").isin(out_dates)),
                       cached=[days, scales, capacity, ranked, narrow, busy, edges, *held, repaired])
