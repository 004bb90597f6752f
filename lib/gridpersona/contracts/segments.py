"""Gold contracts of load segmentation: gold.segment_model, gold.customer_segments, gold.segment_profile.

Written by the segment stages (``segment-train``, ``segment-assign``, ``profile``);
the model and its labels are :mod:`gridpersona.segment.model`.
"""

from __future__ import annotations

from pyspark.sql import types as T

from gridpersona.contracts.base import B, D, DT, I, L, S, Column, TableSpec

SEGMENT_MODEL = TableSpec(
    "gold.segment_model",
    "One row per segment of each trained model version: its label, centroid and size, and how the model was "
    "chosen (k, silhouette, stability) and built. A rerun of segment-train for the same as-of replaces its version.",
    (
        Column("model_version", S, "`YYYYMMDD` of the training as-of; partition column.", nullable=False),
        Column("as_of", DT, "As-of date the model was trained for.", nullable=False),
        Column("segment_id", I, "Stable segment id (matched to the previous model's segments).", nullable=False),
        Column("segment_label", S, "Archetype code (`evening_peak`, `flat`, ..., or a generated `peak_*` label).",
               nullable=False),
        Column("name_zh", S, "Chinese name of the segment.", nullable=False),
        Column("name_en", S, "English name of the segment.", nullable=False),
        Column("cluster_index", I, "KMeans cluster; null for the vacancy rule's segment."),
        Column("centroid", T.ArrayType(D, False), "Member-mean typical shape: weekday then weekend slots.",
               nullable=False),
        Column("size", L, "Meters in the segment at training.", "meters", nullable=False),
        Column("share", D, "`size` / all meters of the training window.", nullable=False),
        Column("mean_daily_kwh", D, "Mean daily energy of the segment's meters.", "kWh/day"),
        Column("weekend_ratio", D, "Mean weekend daily kWh / mean weekday daily kWh of the segment's meters."),
        Column("label_features", S, "JSON: the centroid features the label rules saw.", nullable=False),
        Column("k", I, "KMeans clusters (the vacancy segment not counted).", nullable=False),
        Column("k_selection", S, "`fixed` or `silhouette_stability`.", nullable=False),
        Column("silhouette", D, "Of the saved KMeans model, on the training meters."),
        Column("silhouette_by_k", S, "JSON {k: silhouette} the choice of k was made on.", nullable=False),
        Column("stability", D, "Share of training meters keeping their segment from a half-sample start."),
        Column("stability_by_k", S, "JSON {k: stability} the choice of k was made on.", nullable=False),
        Column("weak_structure", B, "`silhouette` below `segment.weak_silhouette`: a partition of a continuum, not "
               "natural groups.", nullable=False),
        Column("train_meters", L, "Non-vacant meters KMeans trained on (a deterministic sample).", "meters",
               nullable=False),
        Column("training_cost", D, "KMeans within-cluster sum of squares on them.", nullable=False),
        Column("kmeans_runs", I, "KMeans (Lloyd) runs made: per k, one from all meters + one per half.",
               nullable=False),
        Column("typical_shape", S, "`mean_shape` or `energy_weighted` (`segment.typical_shape`).", nullable=False),
        Column("slots", I, "Slots per day (n); `centroid` has 2n values.", nullable=False),
        Column("pca_components", I, "0: KMeans on the typical shapes themselves.", nullable=False),
        Column("window_days", I, "Days of the training window.", "days", nullable=False),
        Column("seed", L, "`segment.seed` as configured (training is deterministic and does not use it).",
               nullable=False),
        Column("reference_version", S, "Earlier model whose ids were kept (null: first model)."),
        Column("model_path", S, "MLlib model folder, relative to the lake root.", nullable=False),
        Column("config_hash", S, "Hash of the effective configuration of the training run.", nullable=False),
        Column("code_version", S, "Code version of the training run.", nullable=False),
    ),
    keys=("model_version", "segment_id"),
    partition_by=("model_version",),
)

CUSTOMER_SEGMENTS = TableSpec(
    "gold.customer_segments",
    "Each meter's load segment for an as-of date (segment-assign, with the model trained on or before it).",
    (
        Column("as_of", DT, "As-of date; partition column.", nullable=False),
        Column("customer_id", S, "The meter's customer (bronze.customer_archive); null when the archive has none."),
        Column("meter_id", S, "Meter id.", nullable=False),
        Column("segment_id", I, "Segment of gold.segment_model.", nullable=False),
        Column("segment_label", S, "The segment's archetype code.", nullable=False),
        Column("segment_name_zh", S, "The segment's Chinese name.", nullable=False),
        Column("segment_name_en", S, "The segment's English name.", nullable=False),
        Column("distance", D, "Euclidean distance of the meter's typical shape to its segment's stored centroid.",
               nullable=False),
        Column("model_version", S, "Model version that assigned the segment.", nullable=False),
        Column("dl_segment_id", I, "Segment the CNN + GRU model of the same version gives the meter's days "
               "(`segment.method: dl` or `segment.dl.second_opinion`); null when the DL model is off or the meter "
               "has no complete day in the days it reads."),
        Column("dl_probability", D, "The DL model's softmax probability of `dl_segment_id` (null with it)."),
    ),
    keys=("as_of", "meter_id"),
    partition_by=("as_of",),
)

SEGMENT_PROFILE = TableSpec(
    "gold.segment_profile",
    "Per as-of and segment: its meters, share and mean load figures over the window (complete days).",
    (
        Column("as_of", DT, "As-of date; partition column.", nullable=False),
        Column("model_version", S, "Model version of the segments.", nullable=False),
        Column("segment_id", I, "Segment id.", nullable=False),
        Column("segment_label", S, "The segment's archetype code.", nullable=False),
        Column("segment_name_zh", S, "The segment's Chinese name.", nullable=False),
        Column("segment_name_en", S, "The segment's English name.", nullable=False),
        Column("meters", L, "Meters in the segment.", "meters", nullable=False),
        Column("share", D, "Of the as-of's segmented meters.", nullable=False),
        Column("mean_daily_kwh", D, "Mean over the segment's meters of their mean daily energy (complete days).",
               "kWh/day"),
        Column("peak_share", D, "Mean share of daily energy in the tariff's peak periods."),
        Column("flat_share", D, "Mean share of daily energy in the tariff's flat periods."),
        Column("valley_share", D, "Mean share of daily energy in the tariff's valley periods."),
        Column("load_factor", D, "Mean daily load factor."),
        Column("weekend_ratio", D, "Mean weekend daily kWh / mean weekday daily kWh."),
        Column("mean_distance", D, "Mean distance of the segment's meters to its centroid."),
        Column("centroid_shape", T.ArrayType(D, True), "Weekday then weekend typical shape of the segment."),
    ),
    keys=("as_of", "segment_id"),
    partition_by=("as_of",),
)

SPECS = (SEGMENT_MODEL, CUSTOMER_SEGMENTS, SEGMENT_PROFILE)
