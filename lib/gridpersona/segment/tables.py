"""Row assembly of the segmentation gold tables from assigned meters: gold.customer_segments and
gold.segment_profile. Pure transformations (no I/O, no session, no global config)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from gridpersona.segment.features import squared_distance


def attach_segments(predicted: DataFrame, segments: DataFrame) -> DataFrame:
    """Meters with their segment and the distance to the segment's centroid.

    ``predicted``: typical_shapes rows with ``cluster_index`` (the KMeans
    prediction; null for meters the vacancy rule took). ``segments`` (small,
    broadcast): ``segment_id``, ``cluster_index`` (null for the vacancy rule's
    segment), ``centroid``, ``segment_label``, ``name_zh``, ``name_en``. A
    meter whose cluster has no segment is dropped. The distance is Euclidean,
    in the typical-shape space, to the segment's stored centroid.
    """
    key = F.coalesce(F.col("cluster_index"), F.lit(-1)).alias("_key")
    seg = F.broadcast(segments.select(key, "segment_id", "centroid", "segment_label", "name_zh", "name_en"))
    return (predicted.select("*", key).join(seg, "_key", "inner")
            .withColumn("distance", F.sqrt(squared_distance(F.col("features"), F.col("centroid"))))
            .drop("_key", "centroid"))


def customer_segments(assigned: DataFrame, archive: DataFrame, *, as_of, model_version: str) -> DataFrame:
    """gold.customer_segments rows: ``assigned`` (attach_segments) joined to the archive's customer id.

    Only ``meter_id`` and ``customer_id`` are taken from ``archive`` (no PII,
    whatever else it holds). A meter unknown to the archive keeps a null
    customer id; a meter listed under several customers takes the smallest id
    (deterministic, never a duplicate row). ``dl_segment_id`` / ``dl_probability``
    come from ``assigned`` when it has them (the DL model's second opinion), else null.
    """
    ids = archive.groupBy("meter_id").agg(F.min("customer_id").alias("customer_id"))
    dl = [F.col(c) if c in assigned.columns else F.lit(None) for c in ("dl_segment_id", "dl_probability")]
    return assigned.join(ids, "meter_id", "left").select(
        F.lit(as_of).cast("date").alias("as_of"),
        "customer_id", "meter_id",
        F.col("segment_id").cast("int").alias("segment_id"),
        "segment_label",
        F.col("name_zh").alias("segment_name_zh"),
        F.col("name_en").alias("segment_name_en"),
        F.col("distance").cast("double").alias("distance"),
        F.lit(model_version).alias("model_version"),
        dl[0].cast("int").alias("dl_segment_id"),
        dl[1].cast("double").alias("dl_probability"),
    )


def with_dl_segments(assigned: DataFrame, dl: DataFrame, segments: DataFrame, *, replace: bool) -> DataFrame:
    """``assigned`` (attach_segments rows) with the DL model's ``dl_segment_id`` and ``dl_probability``
    (``dl``: one row per meter it could read; the others get nulls).

    ``replace``: the DL segment becomes the meter's segment (``segment.method: dl``): ``segment_id``,
    label, names and distance (to that segment's centroid) follow it; a meter without a DL prediction keeps
    its KMeans segment. ``segments`` (small, broadcast): ``segment_id``, ``centroid``, ``segment_label``,
    ``name_zh``, ``name_en``.
    """
    out = assigned.join(dl.select("meter_id", "dl_segment_id", "dl_probability"), "meter_id", "left")
    if not replace:
        return out
    seg = F.broadcast(segments.select(F.col("segment_id").alias("_dl_id"), F.col("centroid").alias("_c"),
                                      F.col("segment_label").alias("_label"), F.col("name_zh").alias("_zh"),
                                      F.col("name_en").alias("_en")))
    joined = out.join(seg, F.col("dl_segment_id") == F.col("_dl_id"), "left")
    use = F.col("_dl_id").isNotNull()
    return joined.select(
        *[c for c in out.columns if c not in ("segment_id", "segment_label", "name_zh", "name_en", "distance")],
        F.when(use, F.col("_dl_id")).otherwise(F.col("segment_id")).alias("segment_id"),
        F.when(use, F.col("_label")).otherwise(F.col("segment_label")).alias("segment_label"),
        F.when(use, F.col("_zh")).otherwise(F.col("name_zh")).alias("name_zh"),
        F.when(use, F.col("_en")).otherwise(F.col("name_en")).alias("name_en"),
        F.when(use, F.sqrt(squared_distance(F.col("features"), F.col("_c")))).otherwise(F.col("distance"))
        .alias("distance"),
    )


def meter_load_summary(daily: DataFrame, *, min_completeness: float) -> DataFrame:
    """Per meter over the window's complete days: mean daily kWh, peak/flat/valley shares, load factor, weekend ratio."""
    weekend = F.col("is_weekend")
    wd = F.avg(F.when(~weekend, F.col("daily_kwh")))
    we = F.avg(F.when(weekend, F.col("daily_kwh")))
    return (daily.filter(F.col("completeness") >= F.lit(float(min_completeness)))
            .groupBy("meter_id").agg(
                F.avg("daily_kwh").alias("daily_kwh"),
                F.avg("peak_share").alias("peak_share"),
                F.avg("flat_share").alias("flat_share"),
                F.avg("valley_share").alias("valley_share"),
                F.avg("load_factor").alias("load_factor"),
                F.when(wd > 0, we / wd).alias("weekend_ratio"),
            ))


def segment_profile(segments: DataFrame, meter_summary: DataFrame, model: DataFrame, *, as_of) -> DataFrame:
    """gold.segment_profile rows: one per (model version, segment) present in ``segments``.

    ``segments``: gold.customer_segments rows of one as-of; ``meter_summary``:
    :func:`meter_load_summary`; ``model`` (small): ``model_version``,
    ``segment_id``, ``centroid``. Means are over meters (each meter counts
    once; a meter without a complete day adds to the size only). ``share`` is
    the segment's share of the as-of's segmented meters.
    """
    joined = segments.join(meter_summary, "meter_id", "left")
    per_seg = joined.groupBy("model_version", "segment_id", "segment_label", "segment_name_zh", "segment_name_en").agg(
        F.count(F.lit(1)).alias("meters"),
        F.avg("daily_kwh").alias("mean_daily_kwh"),
        F.avg("peak_share").alias("peak_share"),
        F.avg("flat_share").alias("flat_share"),
        F.avg("valley_share").alias("valley_share"),
        F.avg("load_factor").alias("load_factor"),
        F.avg("weekend_ratio").alias("weekend_ratio"),
        F.avg("distance").alias("mean_distance"),
    )
    total = F.sum("meters").over(Window.partitionBy())
    centroids = F.broadcast(model.select("model_version", "segment_id", F.col("centroid").alias("centroid_shape")))
    return (per_seg.join(centroids, ["model_version", "segment_id"], "left")
            .select(
                F.lit(as_of).cast("date").alias("as_of"), "model_version",
                F.col("segment_id").cast("int").alias("segment_id"), "segment_label",
                "segment_name_zh", "segment_name_en",
                F.col("meters").cast("long").alias("meters"),
                (F.col("meters") / total).alias("share"),
                "mean_daily_kwh", "peak_share", "flat_share", "valley_share", "load_factor", "weekend_ratio",
                "mean_distance", "centroid_shape",
            ))
