"""Similar-home comparison: each customer's recent kWh against a peer group of similar homes.

Peers share the archive attributes of ``neighbours.keys`` (region, customer type, housing type, household size
band). A group needs ``min_peers`` customers with a figure; a smaller group, or a customer with an unknown
attribute at that level, falls back to the next, broader key list of ``neighbours.fallback``. Percentiles
are Spark's exact ``percentile`` (linear interpolation, as ``numpy.percentile``), never an approximation.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Callable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from gridpersona.config import NeighboursConfig
from gridpersona.transform.pricing import open_accounts


def size_band(size: Column, bands: list[str]) -> Column:
    """The band ("1", "2", "3-4", "5+") holding a household size; null for an unknown or unbanded size."""
    out = None
    for band in bands:
        low, high = _band_range(band)
        cond = size >= low if high is None else size.between(low, high)
        out = F.when(cond, F.lit(band)) if out is None else out.when(cond, F.lit(band))
    return out if out is not None else F.lit(None).cast("string")


def _band_range(band: str) -> tuple[int, int | None]:
    m = re.fullmatch(r"(\d+)(?:-(\d+)|(\+))?", band)
    low = int(m.group(1))
    return (low, None) if m.group(3) else (low, int(m.group(2)) if m.group(2) else low)


def period_kwh(daily: DataFrame, *, first: dt.date, last: dt.date, params: NeighboursConfig) -> DataFrame:
    """meter_id, complete_days, kwh_period (mean daily kWh of the complete days x period days; null below
    ``params.min_days`` complete days) over ``first .. last``."""
    days = (last - first).days + 1
    complete = daily.filter(F.col("date").between(first, last) & (F.col("completeness") >= params.min_completeness))
    return (complete.groupBy("meter_id")
            .agg(F.count(F.lit(1)).cast("int").alias("complete_days"), F.avg("daily_kwh").alias("mean_kwh"))
            .select("meter_id", "complete_days",
                    F.when(F.col("complete_days") >= params.min_days, F.col("mean_kwh") * days).alias("kwh_period")))


def neighbour_comparison(daily: DataFrame, archive: DataFrame, *, params: NeighboursConfig, as_of: dt.date,
                         period_days: int | None = None,
                         checkpoint: Callable[[DataFrame], DataFrame] = lambda df: df) -> DataFrame:
    """gold.neighbour_comparison: one row per archive customer with a meter.

    ``daily``: silver.daily_load_shape rows (meter_id, date, daily_kwh, completeness); ``archive``:
    customer_id, meter_id, region, customer_type, housing_type, household_size, account_close_date (accounts
    closed by ``as_of`` are left out). ``period_days``: the days compared (default ``params.period_days``; the
    stage passes fewer when its window is shorter). ``checkpoint`` materializes
    the per-customer figures, which every level's statistics read (the stage passes a local checkpoint).
    """
    period_days = period_days or params.period_days
    first = as_of - dt.timedelta(days=period_days - 1)
    levels = [params.keys, *params.fallback]
    attrs = (open_accounts(archive, as_of).filter(F.col("meter_id").isNotNull())
             .select("customer_id", "meter_id", "region", "customer_type", "housing_type",
                     size_band(F.col("household_size"), params.household_size_bands).alias("household_size_band")))
    figures = checkpoint(attrs.join(period_kwh(daily, first=first, last=as_of, params=params), "meter_id",
                                    "left"))

    def key(cols: list[str]) -> Column:
        # concat_ws would skip a null: an unknown attribute leaves the customer out of this level instead.
        return F.when(F.greatest(*[F.col(c).isNull() for c in cols]) if len(cols) > 1 else F.col(cols[0]).isNull(),
                      F.lit(None)).otherwise(F.concat_ws("|", *[F.col(c) for c in cols]))

    stacked = None
    for level, cols in enumerate(levels):
        part = figures.select("customer_id", "kwh_period", F.lit(level).alias("group_level"),
                              F.lit(",".join(cols)).alias("group_keys"), key(cols).alias("group_key"))
        stacked = part if stacked is None else stacked.unionByName(part)
    stacked = checkpoint(stacked.filter(F.col("group_key").isNotNull()))
    p = params.efficient_percentile
    stats = (stacked.filter(F.col("kwh_period").isNotNull())
             .groupBy("group_level", "group_key")
             .agg(F.count(F.lit(1)).alias("peer_count"),
                  F.expr(f"percentile(kwh_period, array(0.5D, {p!r}D))").alias("pct")))
    stats = stats.filter(F.col("peer_count") >= params.min_peers)
    member = stacked.filter(F.col("kwh_period").isNotNull()).join(stats, ["group_level", "group_key"])
    pick = Window.partitionBy("customer_id").orderBy("group_level")
    chosen = (member.withColumn("_n", F.row_number().over(pick)).filter(F.col("_n") == 1)
              .select("customer_id", "group_level", "group_keys", "group_key", "peer_count",
                      F.col("pct")[0].alias("peer_median_kwh"), F.col("pct")[1].alias("efficient_kwh")))
    # Share of the group below the customer: rank among all the group's members at that level.
    below = (stacked.filter(F.col("kwh_period").isNotNull())
             .withColumn("_below", F.rank().over(Window.partitionBy("group_level", "group_key")
                                                 .orderBy("kwh_period")) - 1)
             .select("customer_id", "group_level", "_below"))
    chosen = chosen.join(below, ["customer_id", "group_level"], "left")
    kwh = F.col("kwh_period")
    state = (F.when(kwh <= F.col("efficient_kwh"), F.lit("great"))
             .when(kwh <= F.col("peer_median_kwh"), F.lit("good"))
             .when(kwh.isNotNull() & F.col("peer_median_kwh").isNotNull(), F.lit("above")))
    out = figures.join(chosen, "customer_id", "left")
    return out.select(
        F.lit(as_of).cast("date").alias("as_of"), "customer_id", "customer_type",
        F.lit(first).cast("date").alias("period_first"), F.lit(as_of).cast("date").alias("period_last"),
        F.coalesce("complete_days", F.lit(0)).cast("int").alias("complete_days"), "kwh_period",
        F.col("group_level").cast("int").alias("group_level"), "group_keys", "group_key",
        F.col("peer_count").cast("long").alias("peer_count"), "peer_median_kwh", "efficient_kwh",
        (F.col("_below") / F.col("peer_count")).alias("peer_pct"),
        F.when(F.col("peer_median_kwh") > 0, (kwh - F.col("peer_median_kwh")) / F.col("peer_median_kwh")
               ).alias("vs_median_pct"),
        state.alias("state"),
        F.when(kwh.isNull(), F.lit("insufficient_data"))
        .when(F.col("group_level").isNull(), F.lit("no_group")).alias("state_reason"))
