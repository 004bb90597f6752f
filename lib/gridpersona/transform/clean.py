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
import functools
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gridpersona.contracts.silver import AMI_CLEAN, QUALITY_CODES, QUARANTINE_REASONS
from gridpersona.transform import clean_kernel as K


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




# ------------------------------------------------------------------ per meter
# Everything after tagging is one grouped pass: every tagged row goes to its meter's task and the meters'
# days are decided and repaired in numpy (gridpersona.transform.clean_kernel). The result is one row per
# meter-day with the repaired readings as arrays; the clean rows are its exploded arrays.


def day_slots(calendar_rows: Iterable[tuple[dt.date, int, int]], time_zone: str, interval_minutes: int
              ) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """(day_start_epoch, the wall-clock slot of each position) of the calendar days whose slots are not
    their positions: the DST change days of zones that have them, none elsewhere."""
    if fixed_utc_offset_seconds(time_zone) is not None:
        return ()
    zone, step = ZoneInfo(time_zone), interval_minutes * 60
    out = []
    for _, start, expected in calendar_rows:
        slots = []
        for pos in range(expected):
            local = dt.datetime.fromtimestamp(start + pos * step, zone)
            slots.append((local.hour * 3600 + local.minute * 60 + local.second) // step)
        if slots != list(range(expected)):
            out.append((int(start), tuple(slots)))
    return tuple(out)


@dataclass(frozen=True)
class OutlierRule:
    """When an accepted reading is an outlier (``clean.*`` keys of the same names).

    ``scale_multiple`` x max(the meter's scale for the day, ``scale_floor_kw`` x interval hours) is
    the level a reading must exceed to be ``high``; the scale is the median of the meter's daily
    largest readings over the look-back (:mod:`gridpersona.transform.clean_kernel`). ``neighbour_multiple``: how far
    above both time neighbours an isolated spike stands; ``capacity_margin``: multiple of the
    contracted capacity x interval hours above which a reading is physically implausible.
    """

    scale_multiple: float = 3.0
    scale_floor_kw: float = 5.0
    neighbour_multiple: float = 3.0
    capacity_margin: float = 2.0


def arrow_frame(source: DataFrame, fn: Callable[[pa.RecordBatch], pa.Table], schema) -> DataFrame:
    """``fn`` (Arrow batch -> Arrow table of ``schema``'s columns) over every batch of ``source``, as a frame."""
    def rows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield from fn(batch).to_batches()

    return source.mapInArrow(rows, schema)


@dataclass
class CleanOutput:
    """The frames of one clean run; ``cached`` are reused by several outputs (release them after the writes)."""

    clean_days: DataFrame   # the written meter-days whose arrays silver.ami_clean's rows are ...
    clean_rows_fn: Callable[[pa.RecordBatch], pa.Table]  # ... exploded by this Arrow function, batch by batch
    readings: DataFrame     # silver.meter_day_readings rows: the same readings, one array per meter-day
    quarantine: DataFrame   # silver.ami_quarantine rows
    counts: DataFrame       # per meter-day counts and statistics: what quality_from reads
    known_meters: DataFrame
    calendar: DataFrame     # the output dates' calendar
    cached: list[DataFrame]

    @property
    def clean(self) -> DataFrame:
        """silver.ami_clean rows as a Spark frame (the stage instead hands ``clean_days`` and
        ``clean_rows_fn`` to the lake, whose tasks make and write the rows: lake/arrow_rows.py)."""
        return arrow_frame(self.clean_days, self.clean_rows_fn, AMI_CLEAN.schema)

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


_DAY_STATS = ("day_max_kwh", "day_mean_kwh", "outlier_scale_kwh", "fill_level_kwh")


def meter_day_quality(counts: DataFrame, quarantine: DataFrame, known_meters: DataFrame, calendar: DataFrame) -> DataFrame:
    """One row per known meter and local day of ``calendar``: expected, measured, replaced, interpolated,
    missing and quarantined counts, the day's reading statistics and the scale that judged it
    (``counts``: :attr:`CleanOutput.counts` rows). A day with no reading at all is all missing."""
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
                            partitions: int | None = None,
                            cache: Callable[[DataFrame], DataFrame] = lambda df: df) -> CleanOutput:
    """Raw readings -> clean rows, quarantine rows and meter-day quality of ``dates`` (see the module
    docstring for the rules).

    ``raw``: the readings of ``dates`` (default: every day of ``first_date .. last_date``) and of the
    days a day's output reads: its two neighbours and the look-back days that ``prior_stats`` lacks.
    Readings of other days in ``raw`` are context only: nothing of them is returned.
    ``prior_stats``: (meter_id, date, day_max_kwh, day_mean_kwh) of look-back days not in ``raw`` (the
    stored silver.meter_day_quality). ``calendar``: :func:`local_calendar` of every day in ``raw`` and
    ``dates``. ``known_meters``: the archive's ``meter_id`` and, when it has it,
    ``contracted_capacity_kva``. ``cache`` is applied to the per meter-day result, read by the clean, the
    quarantine and the quality rows (the job passes ``persist``).

    One shuffle of the tagged rows by meter into ``partitions`` tasks (default
    ``spark.sql.shuffle.partitions``; a task holds its share of the readings in memory); a task's meters,
    with their stored look-back statistics and capacities as marked extra rows, go to
    :func:`clean_kernel.clean_partition`.
    """
    out_dates = sorted(dates) if dates is not None else [
        first_date + dt.timedelta(days=i) for i in range((last_date - first_date).days + 1)]
    cal_rows = sorted((r["date"], r["day_start_epoch"], r["expected_intervals"])
                      for r in calendar.select("date", "day_start_epoch", "expected_intervals").collect())
    cal_first = cal_rows[0][0]
    if [d for d, _, _ in cal_rows] != [cal_first + dt.timedelta(days=i) for i in range(len(cal_rows))]:
        raise ValueError("clean: the calendar must hold consecutive days")
    wanted = set(out_dates)
    hours = interval_minutes / 60.0
    params = K.KernelParams(
        first_day=(cal_first - dt.date(1970, 1, 1)).days, day_start=tuple(int(r[1]) for r in cal_rows),
        expected=tuple(int(r[2]) for r in cal_rows), out=tuple(r[0] in wanted for r in cal_rows),
        lookback_days=lookback_days, scale_multiple=rule.scale_multiple, floor_kwh=rule.scale_floor_kw * hours,
        neighbour_multiple=rule.neighbour_multiple, capacity_factor=hours * rule.capacity_margin, max_gap=max_gap,
        step_seconds=interval_minutes * 60)
    tagged = tag_reasons(raw, known_meters, calendar, time_zone=time_zone, interval_minutes=interval_minutes,
                         first_date=first_date, last_date=last_date, max_interval_kwh=max_interval_kwh)
    # Every row goes to its meter's task: the accepted readings for the decisions, the quarantined ones to
    # pass through (one scan of bronze feeds both outputs).
    reason = F.col("reason")
    names = F.array(*[F.lit(r) for r in QUARANTINE_REASONS])  # a row's reason code indexes these
    code = (F.array_position(names, reason) - 1).cast("tinyint")
    none_int, none_long = F.lit(None).cast("int"), F.lit(None).cast("long")
    rows = tagged.select(
        "meter_id", F.unix_date("local_date").alias("d"),
        F.when(reason.isNull(), F.col("pos")).otherwise(F.lit(K.QUARANTINED)).alias("pos"), "kwh",
        F.unix_date("date").alias("bd"), F.when(reason.isNotNull(), code).alias("r"),
        F.when(reason.isNotNull(), F.unix_micros("ts")).alias("us"))
    extra = (meter_capacity(known_meters).filter(F.col("contracted_capacity_kva").isNotNull())
             .select("meter_id", none_int.alias("d"), F.lit(K.CAPACITY).alias("pos"),
                     F.col("contracted_capacity_kva").alias("kwh")))
    if prior_stats is not None:
        stats = prior_stats.filter(F.col("day_max_kwh").isNotNull())
        for stat, column in ((K.STAT_MAX, "day_max_kwh"), (K.STAT_MEAN, "day_mean_kwh")):
            extra = extra.unionByName(stats.select("meter_id", F.unix_date("date").alias("d"), F.lit(stat).alias("pos"),
                                                   F.col(column).alias("kwh")))
    extra = extra.select("*", none_int.alias("bd"), F.lit(None).cast("tinyint").alias("r"), none_long.alias("us"))

    def kernel(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from K.clean_partition(batches, params)

    by_meter = rows.unionByName(extra)
    by_meter = by_meter.repartition(partitions, "meter_id") if partitions else by_meter.repartition("meter_id")
    days = cache(by_meter.mapInArrow(kernel, K.OUTPUT_SCHEMA))
    written = days.filter(F.col("out"))
    # silver.ami_clean: the written days' arrays exploded by an Arrow function (clean_kernel.clean_rows).
    clean_days = written.select("meter_id", "date", "day_start_epoch", "kwh", "raw", "q")
    clean_rows_fn = functools.partial(K.clean_rows, p=K.DayRowsParams(
        step_seconds=interval_minutes * 60, slots=day_slots(cal_rows, time_zone, interval_minutes)))
    counts = written.select("meter_id", "date", "measured_intervals", "outlier_intervals", "interpolated_intervals",
                            *_DAY_STATS)
    quarantine = (days.filter(F.col("reason").isNotNull() & F.col("date").isin(out_dates))
                  .select("meter_id", F.timestamp_micros("ts_us").alias("ts"), F.col("reading_kwh").alias("kwh"), "date",
                          "local_date", names[F.col("reason").cast("int")].alias("reason")))
    readings = written.select(
        "meter_id", "date", F.col("kwh").alias("kwh_by_position"),
        (F.col("measured_intervals") + F.col("outlier_intervals") + F.col("interpolated_intervals")).alias("readings"),
        (F.col("outlier_intervals") + F.col("interpolated_intervals")).alias("imputed"))
    return CleanOutput(clean_days=clean_days, clean_rows_fn=clean_rows_fn, readings=readings, quarantine=quarantine, counts=counts, known_meters=known_meters,
                       calendar=calendar.filter(F.col("date").isin(out_dates)), cached=[days])
