"""Shapes: clean readings -> one row per meter and local day with the day's slot array and load features.

Built from column expressions and array functions: one aggregation per meter-day
with a conditional sum per slot (no ``pivot``, no ``collect_list``, no Python UDF).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gridpersona.config import TariffConfig, parse_hhmm_range

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


def _array_sum(arr: Column) -> Column:
    return F.aggregate(arr, F.lit(0.0), lambda acc, x: acc + x)


def _dot(arr: Column, weights: list[float]) -> Column:
    return _array_sum(F.zip_with(arr, F.array(*[F.lit(w) for w in weights]), lambda a, b: a * b))


def daily_load_shapes(clean: DataFrame, calendar: DataFrame, *, interval_minutes: int, tariff: TariffConfig,
                      normalization: str = "total") -> DataFrame:
    """silver.ami_clean rows -> silver.daily_load_shape rows.

    ``calendar``: date, expected_intervals (92/96/100 on DST days for 15 minutes).
    ``normalization``: ``total`` (shape = slot kWh / daily kWh; sums to 1) or
    ``minmax`` ((x - min) / (max - min)). A day with no energy gets a uniform shape.
    """
    if normalization not in ("total", "minmax"):
        raise ValueError(f"shapes.normalization {normalization!r}: expected 'total' or 'minmax'")
    n = slots_per_day(interval_minutes)
    masks = tariff_slot_masks(tariff, interval_minutes)
    # One conditional sum per wall-clock slot: Spark's code-generated hash aggregate
    # collapses each meter-day before the shuffle. A missing slot sums to 0 kWh, the
    # repeated DST hour's two readings add up (the energy-conserving rule).
    per_slot = [F.sum(F.when(F.col("slot") == i, F.col("kwh"))).alias(f"_s{i}") for i in range(n)]
    per_day = clean.groupBy("meter_id", "date").agg(
        F.sum(F.when(F.col("quality") != "measured", 1).otherwise(0)).cast("int").alias("imputed_slots"),
        F.count(F.lit(1)).alias("_present"),
        *per_slot,
    )
    df = (per_day.join(F.broadcast(calendar.select("date", "expected_intervals")), "date", "left")
          .withColumn("slot_kwh", F.array(*[F.coalesce(F.col(f"_s{i}"), F.lit(0.0)) for i in range(n)]))
          .withColumn("daily_kwh", _array_sum(F.col("slot_kwh")))
          .withColumn("max_kwh", F.array_max("slot_kwh"))
          .withColumn("min_kwh", F.array_min("slot_kwh")))
    uniform = F.array_repeat(F.lit(1.0 / n), n)
    if normalization == "total":
        shape = F.when(F.col("daily_kwh") > 0, F.transform("slot_kwh", lambda x: x / F.col("daily_kwh"))).otherwise(uniform)
    else:
        spread = F.col("max_kwh") - F.col("min_kwh")
        shape = F.when(spread > 0, F.transform("slot_kwh", lambda x: (x - F.col("min_kwh")) / spread)).otherwise(uniform)
    share = {p: F.when(F.col("daily_kwh") > 0, _dot(F.col("slot_kwh"), masks[p]) / F.col("daily_kwh")) for p in PERIODS}
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
