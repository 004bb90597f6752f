"""Shapes: clean readings -> one row per meter and local day with the day's slot array and load features.

Two ways to the same rows, bit for bit (``tests/test_clean_shapes.py``, DST days included):

- :func:`daily_load_shapes` aggregates reading rows (silver.ami_clean) with column expressions only: a
  two-level aggregation of conditional sums gives one row per meter-day with a column per slot (no
  ``pivot``, no ``collect_list``, no Python UDF) and every day figure is a code-generated expression over
  those columns. It is the reference the other is checked against.
- :func:`daily_load_shapes_from_positions` (the shapes stage) reads clean's meter-day arrays
  (silver.meter_day_readings) and computes each Arrow batch in numpy (:mod:`shapes_kernel`), adding in the
  same order; the stage's tasks also write the rows on the embedded lake (``lake/arrow_rows.py``).
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Callable, Iterable

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gridpersona.config import TariffConfig, range_minutes
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.transform import shapes_kernel as K
from gridpersona.transform.clean import arrow_frame, day_slots

_EPOCH = dt.date(1970, 1, 1)
# The silver.meter_day_readings columns the shapes kernel reads.
SHAPES_INPUT = ("meter_id", "date", "kwh_by_position", "readings", "imputed")

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
            for minute in range_minutes(text):
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


def daily_load_shapes(clean: DataFrame, calendar: DataFrame, *, interval_minutes: int, tariff: TariffConfig,
                      normalization: str = "total") -> DataFrame:
    """silver.ami_clean rows -> silver.daily_load_shape rows (see :func:`shapes_from_slot_columns`)."""
    n = slots_per_day(interval_minutes)
    return shapes_from_slot_columns(slot_columns(clean, n), calendar, interval_minutes=interval_minutes, tariff=tariff,
                                    normalization=normalization)


def shape_params(calendar_rows: Iterable[tuple[dt.date, int, int]], *, interval_minutes: int, time_zone: str,
                 tariff: TariffConfig, normalization: str = "total") -> K.ShapeParams:
    """What :func:`shapes_kernel.daily_shapes` needs for the days of ``calendar_rows`` (date,
    day_start_epoch, expected intervals: :func:`gridpersona.transform.clean.local_calendar`)."""
    if normalization not in ("total", "minmax"):
        raise ValueError(f"shapes.normalization {normalization!r}: expected 'total' or 'minmax'")
    rows = list(calendar_rows)
    masks = tariff_slot_masks(tariff, interval_minutes)
    epoch_day = {start: (day - _EPOCH).days for day, start, _ in rows}
    return K.ShapeParams(
        slots=slots_per_day(interval_minutes), normalization=normalization,
        masks=tuple(tuple(m > 0 for m in masks[period]) for period in PERIODS),
        expected=tuple(((day - _EPOCH).days, int(expected)) for day, _, expected in rows),
        day_slots=tuple((epoch_day[start], slots) for start, slots in day_slots(rows, time_zone, interval_minutes)))


def daily_shapes_fn(params: K.ShapeParams) -> Callable[[pa.RecordBatch], pa.Table]:
    """silver.meter_day_readings batch -> silver.daily_load_shape rows (picklable: runs in the tasks)."""
    return functools.partial(K.daily_shapes, p=params)


def daily_load_shapes_from_positions(days: DataFrame, calendar_rows: Iterable[tuple[dt.date, int, int]], *,
                                     interval_minutes: int, time_zone: str, tariff: TariffConfig,
                                     normalization: str = "total") -> DataFrame:
    """silver.meter_day_readings rows -> silver.daily_load_shape rows: the rows :func:`daily_load_shapes` gives
    from the same readings in silver.ami_clean, without aggregating them again. Computed in numpy per Arrow
    batch (:mod:`gridpersona.transform.shapes_kernel`); the stage hands the same function to the lake, whose
    tasks also write the rows."""
    fn = daily_shapes_fn(shape_params(calendar_rows, interval_minutes=interval_minutes, time_zone=time_zone,
                                      tariff=tariff, normalization=normalization))
    return arrow_frame(days.select(*SHAPES_INPUT), fn, DAILY_LOAD_SHAPE.schema)


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
