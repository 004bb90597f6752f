"""Contracts of the segmentation tables: gold.segment_model, gold.customer_segments, gold.segment_profile."""

from __future__ import annotations

from pyspark.sql import types as T

DAILY_LOAD_SHAPE = "silver.daily_load_shape"
SEGMENT_MODEL = "gold.segment_model"
CUSTOMER_SEGMENTS = "gold.customer_segments"
SEGMENT_PROFILE = "gold.segment_profile"

S, D, DT, L, I = T.StringType(), T.DoubleType(), T.DateType(), T.LongType(), T.IntegerType()

SEGMENT_MODEL_SCHEMA = T.StructType([
    T.StructField("model_version", S, False),  # partition; YYYYMMDD of the training as-of
    T.StructField("as_of", DT, False),
    T.StructField("segment_id", I, False),
    T.StructField("segment_label", S, False),  # archetype code (evening_peak, flat, ..., mixed)
    T.StructField("name_zh", S, False),
    T.StructField("name_en", S, False),
    T.StructField("cluster_index", I, True),  # KMeans cluster; null for the vacancy rule's segment
    T.StructField("centroid", T.ArrayType(D, False), False),  # member-mean typical shape: weekday then weekend
    T.StructField("size", L, False),  # meters in the segment at training
    T.StructField("share", D, False),
    T.StructField("mean_daily_kwh", D, True),
    T.StructField("weekend_ratio", D, True),
    T.StructField("label_features", S, False),  # JSON: the centroid features the label rules saw
    T.StructField("k", I, False),  # KMeans clusters (the vacancy segment not counted)
    T.StructField("k_selection", S, False),  # fixed | silhouette_stability
    T.StructField("silhouette", D, True),  # of the saved KMeans model, on the training meters
    T.StructField("silhouette_by_k", S, False),  # JSON {k: silhouette} the choice of k was made on
    T.StructField("stability", D, True),  # share of training meters keeping their segment from a half-sample start
    T.StructField("stability_by_k", S, False),  # JSON {k: stability} the choice of k was made on
    T.StructField("weak_structure", T.BooleanType(), False),  # silhouette < segment.weak_silhouette
    T.StructField("train_meters", L, False),  # non-vacant meters KMeans trained on (a deterministic sample)
    T.StructField("training_cost", D, False),  # KMeans within-cluster sum of squares on them
    T.StructField("kmeans_runs", I, False),  # KMeans (Lloyd) runs made: per k, one from all meters + one per half
    T.StructField("typical_shape", S, False),  # mean_shape | energy_weighted
    T.StructField("slots", I, False),  # slots per day (n); centroid has 2n values
    T.StructField("pca_components", I, False),  # 0: KMeans on the typical shapes themselves
    T.StructField("window_days", I, False),
    T.StructField("seed", L, False),  # segment.seed as configured (training is deterministic and does not use it)
    T.StructField("reference_version", S, True),  # earlier model whose ids were kept (null: first model)
    T.StructField("model_path", S, False),  # MLlib model folder, relative to the lake root
    T.StructField("config_hash", S, False),
    T.StructField("code_version", S, False),
])

CUSTOMER_SEGMENTS_SCHEMA = T.StructType([
    T.StructField("as_of", DT, False),
    T.StructField("customer_id", S, True),
    T.StructField("meter_id", S, False),
    T.StructField("segment_id", I, False),
    T.StructField("segment_label", S, False),
    T.StructField("segment_name_zh", S, False),
    T.StructField("segment_name_en", S, False),
    T.StructField("distance", D, False),
    T.StructField("model_version", S, False),
])

SEGMENT_PROFILE_SCHEMA = T.StructType([
    T.StructField("as_of", DT, False),
    T.StructField("model_version", S, False),
    T.StructField("segment_id", I, False),
    T.StructField("segment_label", S, False),
    T.StructField("segment_name_zh", S, False),
    T.StructField("segment_name_en", S, False),
    T.StructField("meters", L, False),
    T.StructField("share", D, False),  # of the as-of's segmented meters
    T.StructField("mean_daily_kwh", D, True),  # means over the segment's meters (complete days)
    T.StructField("peak_share", D, True),
    T.StructField("flat_share", D, True),
    T.StructField("valley_share", D, True),
    T.StructField("load_factor", D, True),
    T.StructField("weekend_ratio", D, True),
    T.StructField("mean_distance", D, True),  # to the segment's centroid
    T.StructField("centroid_shape", T.ArrayType(D, True), True),  # weekday then weekend typical shape
])
