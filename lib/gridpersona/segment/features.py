"""Typical shapes: silver.daily_load_shape rows -> one feature vector per meter, and the vacancy rule.

Pure transformations (``DataFrame -> DataFrame``, no I/O, no session, no
global config).

Typical shape (the feature vector)
    Per meter, over the days of the window whose ``completeness`` is at least
    ``min_completeness``: a weekday and a weekend typical shape of ``n`` slots
    each, concatenated (``2n`` features; weekday first). A meter without a
    complete weekend day in the window reuses its weekday shape (and the other
    way round), so every vector has both halves. Two methods:

    - ``mean_shape``: the mean of the daily normalized shapes (every day counts
      the same, whatever its energy);
    - ``energy_weighted``: the sum of kWh per slot over the window divided by
      the window's total kWh (high-energy days weigh more).

    Both are one aggregation per meter: the meter's complete days are
    collected into one list sorted by date, and the slot arrays of each day
    type are summed in date order by :func:`day_type_sums`, an Arrow UDF over
    numpy (all meters of a batch at once), so the features are bit-identical
    from run to run (a shuffled double sum may differ in its last bits, which
    would leak into distances and centroids). It replaced ``aggregate`` /
    ``zip_with`` lambdas, which Spark interpreted element by element: 10.2 s of
    segment-train's 18.4 s on the default lake.

Vacancy
    Vacant premises draw a near-zero, noise-dominated load whose normalized
    shape says little. A rule ahead of KMeans (mean daily kWh over the complete
    days below a threshold) puts them in a reserved segment; KMeans then
    clusters the others. See :func:`flag_vacant`.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

TYPICAL_SHAPE_METHODS = ("mean_shape", "energy_weighted")


DAY_TYPE_SUMS_TYPE = ("struct<weekday_days:int,weekend_days:int,_wd_sum:array<double>,_we_sum:array<double>,"
                      "_wd_kwh:double,_we_kwh:double>")


_DAY_TYPE_SUMS_ARROW = pa.struct([("weekday_days", pa.int32()), ("weekend_days", pa.int32()),
                                  ("_wd_sum", pa.list_(pa.float64())), ("_we_sum", pa.list_(pa.float64())),
                                  ("_wd_kwh", pa.float64()), ("_we_kwh", pa.float64())])


def day_type_sums(days: pa.Array) -> pa.Array:
    """Each meter's complete days (a list of struct<date, is_weekend, daily_kwh, v: the day's slot array>, in
    date order) -> per day type (weekday, weekend): the number of days, the slot-wise sum of ``v`` and the sum
    of ``daily_kwh``, each summed from 0.0 in list order (the order the former ``aggregate`` lambdas summed
    in, so the same bits). A day type without days has the sums of no days: zeros. A null (or NaN) ``v``
    element or ``daily_kwh`` makes the sums it enters null. The inputs the stages pass have neither:
    ``slot_kwh`` and ``shape`` are filled, and ``is_weekend`` comes from the date.
    """
    meters = len(days)
    if meters == 0:
        return pa.array([], type=_DAY_TYPE_SUMS_ARROW)
    if days.null_count:
        raise ValueError("day_type_sums: a meter without its list of days")
    offsets = pc.subtract(days.offsets, days.offsets[0]).to_numpy()
    flat = pc.list_flatten(days)
    weekend = pc.struct_field(flat, "is_weekend").to_numpy(zero_copy_only=False).astype(bool)
    kwh = pc.struct_field(flat, "daily_kwh").to_numpy(zero_copy_only=False).astype(float)  # null -> nan
    v = pc.struct_field(flat, "v")
    width = pc.list_value_length(v).to_numpy(zero_copy_only=False)
    if len(width) and (v.null_count or (width != width[0]).any()):
        raise ValueError("day_type_sums: every day needs a slot array of the same length")
    slots = int(width[0]) if len(width) else 0
    values = pc.list_flatten(v).to_numpy(zero_copy_only=False).astype(float).reshape(len(width), slots)
    meter = np.repeat(np.arange(meters), np.diff(offsets))
    out: dict[str, object] = {}
    for name, pick in (("wd", ~weekend), ("we", weekend)):
        idx = np.flatnonzero(pick)
        counts = np.bincount(meter[idx], minlength=meters)
        # The k-th day of this type of each meter, k = 0, 1, ...: one vectorized add per rank keeps date order.
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(idx)) - np.repeat(first, counts)
        acc = np.zeros((meters, slots))
        total = np.zeros(meters)
        for k in range(int(counts.max()) if meters else 0):
            at = idx[rank == k]
            who = meter[at]
            acc[who] = acc[who] + values[at]
            total[who] = total[who] + kwh[at]
        out[f"{name}_days"] = counts.astype(np.int32)
        sums = pa.FixedSizeListArray.from_arrays(pa.array(acc.reshape(-1), mask=np.isnan(acc.reshape(-1))), slots)
        out[f"_{name}_sum"] = sums.cast(pa.list_(pa.float64()))
        out[f"_{name}_kwh"] = pa.array(total, mask=np.isnan(total))
    return pa.StructArray.from_arrays(
        [pa.array(out["wd_days"]), pa.array(out["we_days"]), out["_wd_sum"], out["_we_sum"], out["_wd_kwh"],
         out["_we_kwh"]],
        names=["weekday_days", "weekend_days", "_wd_sum", "_we_sum", "_wd_kwh", "_we_kwh"])


def typical_shapes(daily: DataFrame, *, slots: int, method: str = "mean_shape",
                   min_completeness: float = 0.9) -> DataFrame:
    """silver.daily_load_shape rows (already cut to the window) -> one row per meter.

    ``daily`` needs ``meter_id``, ``date``, ``completeness``, ``is_weekend``,
    ``daily_kwh`` and ``shape`` (mean_shape) or ``slot_kwh`` (energy_weighted).
    Returns ``meter_id``, ``days_used`` (complete days), ``weekday_days``,
    ``weekend_days``, ``mean_daily_kwh`` (over complete days),
    ``weekday_daily_kwh``, ``weekend_daily_kwh``, ``weekend_ratio`` (weekend
    over weekday mean daily kWh; null when either is missing or the weekday mean
    is 0) and ``features``: array<double> of ``2 * slots`` values, the weekday
    then the weekend typical shape, each summing to 1 (a meter without energy
    gets a uniform shape). Meters without a complete day are absent.
    """
    if method not in TYPICAL_SHAPE_METHODS:
        raise ValueError(f"segment.typical_shape {method!r}: expected one of {TYPICAL_SHAPE_METHODS}")
    n = int(slots)
    value = "shape" if method == "mean_shape" else "slot_kwh"
    # One list of the meter's complete days, sorted by date: every sum below runs in date order.
    per_meter = (
        daily.filter(F.col("completeness") >= F.lit(float(min_completeness)))
        .groupBy("meter_id")
        .agg(F.array_sort(F.collect_list(F.struct("date", "is_weekend", "daily_kwh", F.col(value).alias("v"))))
             .alias("_days"))
    )
    sums = per_meter.select("meter_id", F.arrow_udf(day_type_sums, DAY_TYPE_SUMS_TYPE)("_days").alias("_s")).select(
        "meter_id",
        # Never null (a count); coalesce says so to Spark, as size() did.
        *[F.coalesce(F.col(f"_s.{c}"), F.lit(0)).alias(c) for c in ("weekday_days", "weekend_days")],
        *[F.col(f"_s.{c}").alias(c) for c in ("_wd_sum", "_we_sum", "_wd_kwh", "_we_kwh")])

    if method == "energy_weighted":
        # The halves' own slot totals, as columns: inside the transform lambda below an
        # aggregate would be evaluated once per slot.
        sums = sums.select("*", *[F.aggregate(f"_{h}_sum", F.lit(0.0), lambda acc, x: acc + x).alias(f"_{h}_total")
                                  for h in ("wd", "we")])

    def normalized(half: str) -> Column:
        denom = F.col("weekday_days" if half == "wd" else "weekend_days").cast("double") \
            if method == "mean_shape" else F.col(f"_{half}_total")
        return (F.when(denom > 0, F.transform(f"_{half}_sum", lambda x: x / denom))
                .otherwise(F.array_repeat(F.lit(1.0 / n), n)))

    has_wd, has_we = F.col("weekday_days") > 0, F.col("weekend_days") > 0
    shaped = sums.select("*", normalized("wd").alias("_wd_shape"), normalized("we").alias("_we_shape"))
    wd_mean = F.when(has_wd, F.col("_wd_kwh") / F.col("weekday_days"))
    we_mean = F.when(has_we, F.col("_we_kwh") / F.col("weekend_days"))
    days = F.col("weekday_days") + F.col("weekend_days")
    return shaped.select(
        "meter_id",
        days.cast("int").alias("days_used"),
        "weekday_days",
        "weekend_days",
        ((F.col("_wd_kwh") + F.col("_we_kwh")) / days).alias("mean_daily_kwh"),
        wd_mean.alias("weekday_daily_kwh"),
        we_mean.alias("weekend_daily_kwh"),
        F.when(wd_mean > 0, we_mean / wd_mean).alias("weekend_ratio"),
        # A missing half reuses the other one.
        F.concat(F.when(has_wd, F.col("_wd_shape")).otherwise(F.col("_we_shape")),
                 F.when(has_we, F.col("_we_shape")).otherwise(F.col("_wd_shape"))).alias("features"),
    )


def flag_vacant(features: DataFrame, max_daily_kwh: float | None) -> DataFrame:
    """Add ``is_vacant``: mean daily kWh below ``max_daily_kwh`` (None: the rule is off, all False)."""
    if max_daily_kwh is None:
        return features.withColumn("is_vacant", F.lit(False))
    return features.withColumn("is_vacant", F.col("mean_daily_kwh") < F.lit(float(max_daily_kwh)))


def deterministic_sample(df: DataFrame, max_rows: int, total_rows: int, seed: int, key: str = "meter_id") -> DataFrame:
    """About ``max_rows`` rows of ``df`` chosen by a hash of ``key`` and ``seed``.

    The same rows whatever the partitioning or row order (a hash, not a random
    draw). ``df`` itself when ``max_rows`` is 0 or ``total_rows <= max_rows``.
    """
    if max_rows <= 0 or total_rows <= max_rows:
        return df
    buckets = 1_000_000
    keep = int(math.ceil(buckets * max_rows / total_rows))
    return df.filter(F.pmod(F.xxhash64(F.col(key), F.lit(int(seed))), F.lit(buckets)) < F.lit(keep))


def squared_distance(a: Column, b: Column) -> Column:
    """Squared Euclidean distance of two equal-length array<double> columns."""
    return F.aggregate(F.zip_with(a, b, lambda x, y: (x - y) * (x - y)), F.lit(0.0), lambda acc, x: acc + x)


def cluster_summary(assigned: DataFrame, *, group: str, vector: str = "vec") -> DataFrame:
    """Per ``group`` value: size, mean daily kWh, weekend ratio and the member-mean typical shape.

    ``assigned``: typical_shapes rows with a ``group`` column and the features
    as an ML vector column ``vector``. ``weekend_ratio`` here is the ratio of
    the members' mean weekend and weekday daily kWh. Returns ``group``,
    ``size``, ``mean_daily_kwh``, ``weekend_ratio``, ``centroid`` (array<double>).
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.stat import Summarizer

    agg = assigned.groupBy(group).agg(
        F.count(F.lit(1)).alias("size"),
        F.avg("mean_daily_kwh").alias("mean_daily_kwh"),
        F.avg("weekday_daily_kwh").alias("_wd"),
        F.avg("weekend_daily_kwh").alias("_we"),
        Summarizer.mean(F.col(vector)).alias("_centroid"),
    )
    return agg.select(
        group, "size", "mean_daily_kwh",
        F.when(F.col("_wd") > 0, F.col("_we") / F.col("_wd")).alias("weekend_ratio"),
        vector_to_array("_centroid").alias("centroid"),
    )


def vacancy_counts(features: DataFrame) -> tuple[int, int]:
    """(active, vacant) meter counts of a :func:`flag_vacant` frame; also materializes a cached frame."""
    counts = {bool(r[0]): int(r[1]) for r in features.groupBy("is_vacant").count().collect()}
    return counts.get(False, 0), counts.get(True, 0)
