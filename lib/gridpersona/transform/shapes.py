"""Shapes: clean readings -> one row per meter and local day with the day's slot array and load features.

Built from column expressions only: a two-level aggregation of conditional sums
turns the readings into one row per meter-day with a column per slot (no ``pivot``,
no ``collect_list``, no Python UDF), and every day figure is a code-generated
expression over those columns.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gridpersona.config import TariffConfig, parse_hhmm_range
from gridpersona.transform.clean import with_instant_and_slot

PERIODS = ("peak", "flat", "valley")


def slots_per_day(interval_minutes: int) -> int:
    return 1440 // interval_minutes


def tariff_slot_masks(tariff: TariffConfig, interval_minutes: int) -> dict[str, list[float]]:
    """{'peak': [1.0, 0.0, ...], ...}: which wall-clock slots of the day fall in each period.

    A slot belongs to the period that holds its first minute.
    """
    n = slots_per_day(interval_minutes)
    masks = {}
    for period in PERIODS:
        mask = [0.0] * n
        for text in getattr(tariff, period):
            start, end = parse_hhmm_range(text)
            minutes = range(start, end) if start < end else [*range(start, 1440), *range(0, end)]
            for minute in minutes:
                if minute % interval_minutes == 0:
                    mask[minute // interval_minutes] = 1.0
        masks[period] = mask
    return masks


def chunk_width(slots: int) -> int:
    """Slots per first-level group of the two-level slot aggregation (8 for 96, 48 and 24 slots)."""
    return next(c for c in (8, 6, 4, 3, 2, 1) if slots % c == 0)


def _ordered_sum(cols: list[Column]) -> Column:
    """0.0 + c0 + c1 + ... in slot order: a fixed summation order, the same bits every run."""
    total = F.lit(0.0)
    for c in cols:
        total = total + c
    return total


def slot_columns(clean: DataFrame, slots: int) -> DataFrame:
    """Clean readings -> one row per meter and local day with ``_s0 .. _s{slots-1}`` (the slot kWh, null
    when the slot has no reading), ``_present`` (readings) and ``imputed_slots`` (readings not ``measured``).

    Two hash aggregations instead of one with a conditional sum per slot: first per
    meter, day and group of ``chunk_width`` slots (``chunk_width`` conditional sums
    per reading), then per meter and day (one conditional maximum per slot over the
    day's ``slots / chunk_width`` group rows). A conditional is evaluated about
    ``2 * sqrt(slots)`` times per reading instead of ``slots`` times. With the scalar
    per-slot expressions of :func:`daily_load_shapes`, the shapes stage on 20,000
    meters x 30 days went from 183.5 s to 100.9 s (bench/README.md, bench/agg_probe.py).
    A slot holds one reading, or two on the fall-back DST day (summed in the first
    level), so every value is exact whatever order the rows arrive in.
    """
    w = chunk_width(slots)
    group = (F.col("slot") / w).cast("int")
    first = (clean.select("meter_id", "date", "kwh", "quality", group.alias("_g"), (F.col("slot") - group * w).alias("_j"))
             .groupBy("meter_id", "date", "_g").agg(
                 F.count(F.lit(1)).alias("_n"),
                 F.sum(F.when(F.col("quality") != "measured", 1).otherwise(0)).alias("_imp"),
                 *[F.sum(F.when(F.col("_j") == j, F.col("kwh"))).alias(f"_v{j}") for j in range(w)]))
    # Hash-partition the group rows by meter-day before the second level: one exchange of
    # the narrow group rows instead of one of 96-column partial aggregates.
    return first.repartition("meter_id", "date").groupBy("meter_id", "date").agg(
        F.sum("_n").alias("_present"),
        F.sum("_imp").cast("int").alias("imputed_slots"),
        *[F.max(F.when(F.col("_g") == q, F.col(f"_v{j}"))).alias(f"_s{q * w + j}")
          for q in range(slots // w) for j in range(w)])


def slot_columns_from_positions(days: DataFrame, calendar: DataFrame, *, slots: int, interval_minutes: int,
                                time_zone: str) -> DataFrame:
    """silver.meter_day_readings rows -> the frame of :func:`slot_columns`, without touching the readings one
    by one: on a day of ``slots`` positions the position is the wall-clock slot, so ``_s{i}`` is element i
    (plus 0.0, as the sum of one reading is). Only the DST change days (92 or 100 positions) are exploded
    and aggregated by wall-clock slot, as :func:`slot_columns` does.

    ``calendar``: date, day_start_epoch, expected_intervals of the days.
    """
    changed_dates = sorted(r["date"] for r in calendar.filter(F.col("expected_intervals") != slots).select("date").collect())
    as_slots = [F.col("meter_id"), F.col("date"), F.col("readings").cast("long").alias("_present"),
                F.col("imputed").cast("int").alias("imputed_slots"),
                *[(F.col("kwh_by_position")[i] + F.lit(0.0)).alias(f"_s{i}") for i in range(slots)]]
    if not changed_dates:  # no DST change day among the dates (always so in a zone without DST)
        return days.select(*as_slots)
    cal = F.broadcast(calendar.select("date", "day_start_epoch", "expected_intervals"))
    df = days.join(cal, "date", "left")
    plain = df.filter(~F.col("date").isin(changed_dates)).select(*as_slots)
    changed = (df.filter(F.col("date").isin(changed_dates))
               .select("meter_id", "date", "day_start_epoch", "imputed", F.posexplode("kwh_by_position").alias("pos", "kwh"))
               .filter(F.col("kwh").isNotNull()))
    changed = with_instant_and_slot(changed, interval_minutes=interval_minutes, time_zone=time_zone)
    # Each reading as measured: the day's count of imputed readings comes with its row.
    summed = slot_columns(changed.withColumn("quality", F.lit("measured")), slots).drop("imputed_slots")
    imputed = df.filter(F.col("date").isin(changed_dates)).select("meter_id", "date",
                                                                  F.col("imputed").cast("int").alias("imputed_slots"))
    return plain.unionByName(summed.join(imputed, ["meter_id", "date"]).select(*plain.columns))


def daily_load_shapes(clean: DataFrame, calendar: DataFrame, *, interval_minutes: int, tariff: TariffConfig,
                      normalization: str = "total") -> DataFrame:
    """silver.ami_clean rows -> silver.daily_load_shape rows (see :func:`shapes_from_slot_columns`)."""
    n = slots_per_day(interval_minutes)
    return shapes_from_slot_columns(slot_columns(clean, n), calendar, interval_minutes=interval_minutes, tariff=tariff,
                                    normalization=normalization)


def daily_load_shapes_from_positions(days: DataFrame, calendar: DataFrame, *, interval_minutes: int, time_zone: str,
                                     tariff: TariffConfig, normalization: str = "total") -> DataFrame:
    """silver.meter_day_readings rows -> silver.daily_load_shape rows: the rows :func:`daily_load_shapes` gives
    from the same readings in silver.ami_clean, without aggregating them again."""
    n = slots_per_day(interval_minutes)
    slots = slot_columns_from_positions(days, calendar, slots=n, interval_minutes=interval_minutes, time_zone=time_zone)
    return shapes_from_slot_columns(slots, calendar, interval_minutes=interval_minutes, tariff=tariff,
                                    normalization=normalization)


def shapes_from_slot_columns(slot_frame: DataFrame, calendar: DataFrame, *, interval_minutes: int,
                             tariff: TariffConfig, normalization: str = "total") -> DataFrame:
    """One row per meter-day with ``_s0 ..``, ``_present`` and ``imputed_slots`` (:func:`slot_columns`) ->
    silver.daily_load_shape rows.

    ``calendar``: date, expected_intervals (92/96/100 on DST days for 15 minutes).
    ``normalization``: ``total`` (shape = slot kWh / daily kWh; sums to 1) or
    ``minmax`` ((x - min) / (max - min)). A day with no energy gets a uniform shape.
    """
    if normalization not in ("total", "minmax"):
        raise ValueError(f"shapes.normalization {normalization!r}: expected 'total' or 'minmax'")
    n = slots_per_day(interval_minutes)
    masks = tariff_slot_masks(tariff, interval_minutes)
    # A missing slot counts 0 kWh; the repeated DST hour's two readings add up (the
    # energy-conserving rule). Every per-slot figure below is a plain column
    # expression over scalar columns (code-generated; no array lambdas).
    slot = [F.col(f"_c{i}") for i in range(n)]
    df = (slot_frame
          .join(F.broadcast(calendar.select("date", "expected_intervals")), "date", "left")
          .select("*", *[F.coalesce(F.col(f"_s{i}"), F.lit(0.0)).alias(f"_c{i}") for i in range(n)])
          .select("*", F.array(*slot).alias("slot_kwh"), _ordered_sum(slot).alias("daily_kwh"),
                  F.greatest(*slot).alias("max_kwh"), F.least(*slot).alias("min_kwh")))
    daily, lo, hi = F.col("daily_kwh"), F.col("min_kwh"), F.col("max_kwh")
    uniform = F.array_repeat(F.lit(1.0 / n), n)
    if normalization == "total":
        shape = F.when(daily > 0, F.array(*[c / daily for c in slot])).otherwise(uniform)
    else:
        shape = F.when(hi - lo > 0, F.array(*[(c - lo) / (hi - lo) for c in slot])).otherwise(uniform)
    share = {p: F.when(daily > 0, _ordered_sum([c for c, m in zip(slot, masks[p]) if m]) / daily) for p in PERIODS}
    dow = F.dayofweek("date")  # 1 = Sunday ... 7 = Saturday
    return df.select(
        "meter_id", "date",
        "slot_kwh",
        "daily_kwh",
        shape.alias("shape"),
        share["peak"].alias("peak_share"), share["flat"].alias("flat_share"), share["valley"].alias("valley_share"),
        "max_kwh", "min_kwh",
        F.when(F.col("max_kwh") > 0, F.col("daily_kwh") / F.lit(n) / F.col("max_kwh")).alias("load_factor"),
        F.least(F.lit(1.0), F.col("_present") / F.coalesce(F.col("expected_intervals"), F.lit(n))).alias("completeness"),
        "imputed_slots",
        (((dow + 5) % 7) + 1).cast("int").alias("day_of_week"),  # 1 = Monday ... 7 = Sunday
        dow.isin(1, 7).alias("is_weekend"),
    )
