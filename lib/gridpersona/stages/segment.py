"""Segment and profile stages: config + lake I/O around :mod:`gridpersona.segment.model`.

``segment-train``  silver.daily_load_shape (window) -> gold.segment_model + the saved MLlib model(s)
``segment-assign`` silver.daily_load_shape (window), a trained model -> gold.customer_segments
``profile``        gold.customer_segments, silver.daily_load_shape -> gold.segment_profile
                   (+ gold.customer_tags -> gold.segment_tag_profile, gold.consumption_price_quadrant)

Model versions
    A model is named by the as-of date it was trained for: ``model_version``
    ``YYYYMMDD``. Its rows in gold.segment_model (one per segment, partition
    ``model_version``) and its MLlib model(s) under
    ``<lake root>/models/segment/v<version>/`` (``kmeans/``, ``pca/`` when PCA is
    on) are replaced by a rerun for the same as-of, so a rerun never adds a
    version. segment-assign uses ``segment.model_version`` when set, else the
    latest version trained on or before its as-of date (never a model that saw
    later data).

Stable ids
    Training matches its centroids to the latest model trained on or before the
    as-of date, including the version a rerun replaces (whose ids already
    follow the model before it). Matched clusters keep that model's ids; the
    vacancy rule's segment always has ``segment.vacant_segment_id``. So a
    retrain of the same as-of with another seed keeps the ids, and a rerun with
    the same inputs and config reproduces the same rows.

KMeans and the choice of k
    k-means|| from a random seed lands in a different local optimum per seed
    when the typical shapes form a continuum (real household curves: a retrain
    with another seed kept ~70% of meters in their segment), so the seed would
    pick the segments. Training therefore starts KMeans from a deterministic
    initialization, on a bounded sample held on the driver (at most
    ``segment.train_sample_meters`` non-vacant meters, a fixed hash sample):

    1. Ward agglomeration of the Ward sample (at most ``ward_sample_meters``
       of the training sample, a fixed hash sample) gives initial centers for
       every k in ``[k_min, k_max]`` (or the fixed ``k``); Lloyd iterations
       refine them on the Ward sample. No random draw: ``segment.seed`` is not used (a
       retrain with another seed writes the same segments).
    2. Per k: the silhouette (squared Euclidean, the formula of MLlib's
       ClusteringEvaluator) -> ``silhouette_by_k``, and a stability: the same
       procedure started from the Ward tree of one half of the sample, for
       each half of ``stability_splits`` fixed hash splits; the share of
       meters that keep their segment (clusters matched one-to-one), averaged
       -> ``stability_by_k``. A stricter test than another seed: the start
       sees other meters. Both are measured on the Ward sample.
    3. k is the most stable among the k whose silhouette is within
       ``silhouette_tolerance`` of the best (stability compared at 0.01).
    4. MLlib's distributed KMeans refines the chosen k's centers on the whole
       training sample, started from them (``pyspark.mllib`` KMeans with an
       ``initialModel``: the DataFrame API only starts from a random draw). The
       centers become an MLlib KMeansModel (saved, used by segment-assign); the
       fitted model's silhouette on the training sample and its stability are
       stored and printed, and a silhouette below ``weak_silhouette`` flags
       ``weak_structure`` (a partition of a continuum, not natural groups).

    The driver work is Ward, O(m^2) on m <= ward_sample_meters meters, and
    Lloyd rounds on that sample, O(m k d) each; the Spark cost is one collect
    of the training sample (at most ``train_sample_meters`` rows) and one
    KMeans fit over it.

Names
    The first rule of ``segment.labels`` that holds on a centroid's features,
    else a label generated from its curve (``peak_<part>[_broad|_sharp]``);
    then qualifiers until no two segments (the vacancy segment included, which
    keeps its name) share a code, a zh or an en name. See
    :mod:`gridpersona.segment.model`.

Determinism
    The per-meter feature frame (meters x 2n doubles) is computed once,
    hash-partitioned by meter into ``segment.partitions`` (default 1)
    partitions, sorted by meter id, cached, and reused by segment-assign in the
    same Spark session while silver.daily_load_shape is unchanged (keyed on its
    Delta version). The training sample is collected sorted by meter id and the
    driver-side sums run elementwise in a fixed order, so a rerun gives
    bit-identical centroids.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from typing import Any

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from gridpersona.stages.inputs import read_bronze
from gridpersona.config import Settings, parse_hhmm_range
from gridpersona.lake import check_schema
from gridpersona.stages.runner import StageContext, StageResult, code_version
from gridpersona.segment import model as G
from gridpersona.contracts.segments import (CUSTOMER_SEGMENTS, CUSTOMER_SEGMENTS_SCHEMA, DAILY_LOAD_SHAPE,
                                            SEGMENT_MODEL, SEGMENT_MODEL_SCHEMA, SEGMENT_PROFILE,
                                            SEGMENT_PROFILE_SCHEMA)

log = logging.getLogger("gridpersona")

# Salt of the hashes that pick the training sample, the Ward sample and the stability splits: fixed, so
# no seed changes which meters the segments (or the choice of k) are built from.
SAMPLE_SALT = 42

VACANT_LABEL = G.LabelRule("vacant", "空置型", "Vacant", {})


# ------------------------------------------------------------------ config -> plain parameters


def _slots(settings: Settings) -> int:
    return 1440 // settings.ami.interval_minutes


def label_rules(settings: Settings) -> list[G.LabelRule]:
    """The ordered label rules of ``segment.labels``."""
    return [G.LabelRule(lbl.code, lbl.zh, lbl.en, {k: (b.min, b.max) for k, b in lbl.when.items()})
            for lbl in settings.segment.labels]


def day_parts(settings: Settings) -> list[G.DayPart]:
    """``segment.peak_parts`` as :class:`G.DayPart` (minutes after local midnight)."""
    return [G.DayPart(p.code, p.zh, p.en, *parse_hhmm_range(p.hours)) for p in settings.segment.peak_parts]


def name_centroids(features: list[dict[str, float]], settings: Settings, pinned: list[tuple[dict, G.LabelRule]] = ()
                   ) -> list[tuple[G.LabelRule, int]]:
    """(label, rule position) of each centroid: the first label rule that holds, else a label generated
    from the curve (rank len(rules)); then qualified until no two share a code or name, ``pinned``
    (features, label) entries (the vacancy segment) taking part in the comparison but keeping their label."""
    seg = settings.segment
    rules, parts = label_rules(settings), day_parts(settings)
    named = []
    for f in features:
        generated = G.describe_centroid(f, parts, broad_max_peak_to_mean=seg.broad_max_peak_to_mean,
                                        sharp_min_peak_to_mean=seg.sharp_min_peak_to_mean)
        named.append(G.label_centroid(f, rules, generated))
    labels = G.distinct_labels([r for r, _ in named] + [lbl for _, lbl in pinned],
                               list(features) + [f for f, _ in pinned],
                               pinned=range(len(named), len(named) + len(pinned)))
    return [(labels[i], rank) for i, (_, rank) in enumerate(named)]


def label_windows(settings: Settings) -> dict[str, tuple[int, int]]:
    return {name: parse_hhmm_range(text) for name, text in settings.segment.windows.items()}


def vacant_rule_label(settings: Settings) -> G.LabelRule:
    """Display names of the vacancy rule's segment: the ``vacant`` label rule's when configured."""
    rules = label_rules(settings)
    return next((r for r in rules if r.code == "vacant"), VACANT_LABEL)


def model_version_of(as_of: dt.date) -> str:
    return as_of.strftime("%Y%m%d")


def model_dir(version: str) -> str:
    """Where a model version's MLlib models live, relative to the lake root."""
    return f"models/segment/v{version}"


# ------------------------------------------------------------------ features (cached per session)

_FEATURES: dict[str, Any] = {}


def segment_features(ctx: StageContext, method: str | None = None) -> DataFrame:
    """The window's typical shapes with ``is_vacant``: cached, sorted, on ``segment.partitions`` partitions.

    Reused by a later stage of the same session while the inputs (the silver
    table's Delta version, window, method, thresholds) are unchanged.
    """
    s = ctx.settings
    seg = s.segment
    method = method or seg.typical_shape
    first, last = ctx.window
    lake = ctx.lake
    if not lake.exists(DAILY_LOAD_SHAPE):
        raise RuntimeError(f"{DAILY_LOAD_SHAPE}: table not found under {lake.root}; run the shapes stage first "
                           f"(gridpersona run shapes --as-of {ctx.as_of})")
    # The version this stage reads (published, pinned): a crashed run's newer commits do not count.
    version = lake.version(DAILY_LOAD_SHAPE)
    committed = lake.history_entry(DAILY_LOAD_SHAPE, version)["timestamp"]
    key = (id(ctx.spark), lake.path(DAILY_LOAD_SHAPE), version, committed, first, last, method,
           seg.min_completeness, seg.vacant_max_daily_kwh, seg.partitions, _slots(s))
    if _FEATURES.get("key") == key:
        return _FEATURES["frame"]
    if _FEATURES.get("frame") is not None:
        _FEATURES["frame"].unpersist()
        _FEATURES.clear()
    source = "shape" if method == "mean_shape" else "slot_kwh"
    daily = (lake.read(DAILY_LOAD_SHAPE).filter(F.col("date").between(first, last))
             .select("meter_id", "date", "completeness", "is_weekend", "daily_kwh", source))
    feats = G.typical_shapes(daily, slots=_slots(s), method=method, min_completeness=seg.min_completeness)
    feats = (G.flag_vacant(feats, seg.vacant_max_daily_kwh)
             .repartition(seg.partitions, "meter_id").sortWithinPartitions("meter_id")
             .persist(StorageLevel.MEMORY_AND_DISK))
    _FEATURES.update(key=key, frame=feats)
    return feats


def release_features() -> None:
    """Drop the cached feature frame (tests, long-lived sessions)."""
    if _FEATURES.get("frame") is not None:
        _FEATURES["frame"].unpersist()
    _FEATURES.clear()


def _vacancy_counts(feats: DataFrame) -> tuple[int, int]:
    """(active, vacant) meter counts; also materializes the cached frame."""
    counts = {bool(r[0]): int(r[1]) for r in feats.groupBy("is_vacant").count().collect()}
    return counts.get(False, 0), counts.get(True, 0)


# ------------------------------------------------------------------ model table access


def _model_table(lake) -> list[dict]:
    if not lake.exists(SEGMENT_MODEL):
        return []
    return lake.read_arrow(SEGMENT_MODEL).to_pylist()


def latest_model_version(lake, as_of: dt.date) -> str | None:
    """The newest model version trained on or before ``as_of`` (None when there is none)."""
    rows = [r for r in _model_table(lake) if r["as_of"] <= as_of]
    return max((r["as_of"], r["model_version"]) for r in rows)[1] if rows else None


def model_segments(lake, version: str) -> list[dict]:
    """gold.segment_model rows of ``version`` sorted by segment id; LookupError naming the versions otherwise."""
    table = _model_table(lake)
    rows = sorted((r for r in table if r["model_version"] == version), key=lambda r: r["segment_id"])
    if not rows:
        known = sorted({r["model_version"] for r in table})
        raise LookupError(f"{SEGMENT_MODEL}: no model version {version!r} (known versions: {known or 'none'}); "
                          f"run segment-train first or fix segment.model_version")
    return rows


# ------------------------------------------------------------------ train


def _collect_training(train: DataFrame, features_col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors n x d, ward_rank, split_bits) of the training sample, on the driver, sorted by meter id.

    Bounded by ``segment.train_sample_meters``. ``ward_rank``: a fixed hash of
    the meter id (which meters the Ward initialization sees when there are
    more than ``segment.ward_sample_meters``); ``split_bits``: another fixed
    hash whose bit i puts the meter in half 0 or 1 of stability split i.
    """
    from pyspark.ml.functions import vector_to_array

    rows = train.select(vector_to_array(features_col).alias("v"), "ward_rank", "split_bits").toArrow()
    values = rows.column("v").combine_chunks()
    width = len(values[0]) if len(values) else 0
    vectors = values.flatten().to_numpy(zero_copy_only=False).astype(float).reshape(len(values), width)
    return (vectors, np.asarray(rows.column("ward_rank").to_pylist()),
            np.asarray(rows.column("split_bits").to_pylist(), dtype=np.int64))


def _ward_rows(ward_rank: np.ndarray, keep: np.ndarray, cap: int) -> np.ndarray:
    """Indexes of the ``keep`` rows the Ward agglomeration sees: at most ``cap``, lowest ward_rank, in row order."""
    idx = np.flatnonzero(keep)
    if cap and len(idx) > cap:
        idx = np.sort(idx[np.lexsort((idx, ward_rank[idx]))[:cap]])
    return idx


def select_partition(vectors: np.ndarray, ward_rank: np.ndarray, split_bits: np.ndarray, ks: list[int], seg,
                     refine=None) -> dict[str, Any]:
    """k selection and the final centers, deterministic (no seed decides them). See the module docstring.

    k is chosen on the Ward sample (at most ``ward_sample_meters`` rows); the
    chosen k's centers are then refined on all ``vectors``: by ``refine(initial
    centers) -> centers`` (the stage passes MLlib's distributed KMeans), else by
    Lloyd iterations here. Returns centers,
    clusters, cost, k, silhouette (of the final fit, on all vectors),
    stability (of the chosen k), silhouette_by_k, stability_by_k and lloyd_runs.
    """
    rows = _ward_rows(ward_rank, np.ones(len(vectors), dtype=bool), seg.ward_sample_meters)
    sample = vectors[rows]
    usable = [k for k in ks if k <= len(rows)]
    inits = G.ward_centers(sample, np.ones(len(rows)), usable)
    halves = []
    for i in range(seg.stability_splits):
        for h in (0, 1):
            part = np.flatnonzero(((split_bits[rows] >> i) & 1) == h)
            fit_ks = [k for k in usable if k <= len(part)]
            halves.append(G.ward_centers(sample[part], np.ones(len(part)), fit_ks) if fit_ks else {})
    fits, scores, stability, runs = {}, {}, {}, 0
    for k in usable:
        centers, clusters, _ = G.lloyd(sample, inits[k], max_iter=seg.max_iter, tol=seg.tol)
        runs += 1
        fits[k] = centers
        scores[k] = G.silhouette(sample, clusters)
        agree = []
        for init in halves:
            if k in init:
                agree.append(G.partition_agreement(
                    clusters, G.lloyd(sample, init[k], max_iter=seg.max_iter, tol=seg.tol)[1]))
                runs += 1
        stability[k] = float(np.mean(agree)) if agree else float("nan")
    chosen = usable[0] if len(usable) == 1 else G.choose_k(scores, stability, seg.silhouette_tolerance)
    if refine is None:
        centers, clusters, cost = G.lloyd(vectors, fits[chosen], max_iter=seg.max_iter, tol=seg.tol)
    else:
        centers = np.asarray(refine(fits[chosen]), dtype=float)
        d = G.squared_distances(vectors, centers)
        clusters = d.argmin(axis=1)
        cost = float(d[np.arange(len(vectors)), clusters].sum())
    runs += 1
    final_silhouette = G.silhouette(vectors, clusters)
    return dict(centers=centers, clusters=clusters, cost=cost, k=chosen, silhouette=final_silhouette,
                stability=stability[chosen], silhouette_by_k=scores, stability_by_k=stability, lloyd_runs=runs)


def mllib_kmeans(frame: DataFrame, features_col: str, initial: np.ndarray, seg) -> np.ndarray:
    """Centers of MLlib's distributed KMeans (Lloyd's iterations) over ``frame``, started from ``initial``.

    The DataFrame API's KMeans only starts from a random draw; the RDD API
    (``pyspark.mllib``) takes an ``initialModel``, so the deterministic Ward
    start is refined by Spark over the whole training sample. Stops like
    ``segment.tol`` / ``segment.max_iter`` say; center order is kept.
    """
    from pyspark.mllib.clustering import KMeans as RDDKMeans
    from pyspark.mllib.clustering import KMeansModel as RDDKMeansModel
    from pyspark.mllib.linalg import Vectors as RDDVectors

    rdd = frame.select(features_col).rdd.map(lambda row: RDDVectors.fromML(row[0])).cache()
    try:
        model = RDDKMeans.train(rdd, len(initial), maxIterations=seg.max_iter, epsilon=seg.tol,
                                initialModel=RDDKMeansModel([RDDVectors.dense(c) for c in initial]))
    finally:
        rdd.unpersist()
    return np.asarray([np.asarray(c, dtype=float) for c in model.clusterCenters])


def kmeans_model_of(spark, centers: np.ndarray, features_col: str):
    """An MLlib KMeansModel whose centers are exactly ``centers`` (it predicts the nearest of them).

    The DataFrame API's KMeans takes no initial centers, so it is fitted on the centers
    themselves: with k rows and random init it picks every row, and each row is
    its own cluster's mean.
    """
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.linalg import Vectors

    frame = spark.createDataFrame([(Vectors.dense([float(x) for x in c]),) for c in centers], [features_col])
    model = KMeans(k=len(centers), seed=0, maxIter=1, initMode="random", featuresCol=features_col,
                   predictionCol="cluster_index").fit(frame)
    got = np.asarray(model.clusterCenters(), dtype=float)
    if got.shape != centers.shape or not all(np.isclose(got, c, rtol=0, atol=1e-12).all(axis=1).any() for c in centers):
        raise RuntimeError(f"segment-train: MLlib returned {len(got)} centers for {len(centers)} given ones "
                           f"(two centers coincide?); retrain with another segment.k / k_max")
    return model


def run_segment_train(ctx: StageContext) -> StageResult:
    """silver.daily_load_shape (window) -> gold.segment_model (one row per segment) + MLlib model(s) on disk."""
    from pyspark.ml.functions import array_to_vector

    s, seg, lake = ctx.settings, ctx.settings.segment, ctx.lake
    slots, width = _slots(s), 2 * _slots(s)
    version = model_version_of(ctx.as_of)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    feats = segment_features(ctx)
    n_active, n_vacant = _vacancy_counts(feats)
    timings["features"] = time.perf_counter() - t0
    if n_active + n_vacant == 0:
        first, last = ctx.window
        raise RuntimeError(f"segment-train: no meter in {DAILY_LOAD_SHAPE} has a day between {first} and {last} with "
                           f"completeness >= {seg.min_completeness}; run shapes for this window first")
    active = feats.filter(~F.col("is_vacant")).withColumn("vec", array_to_vector("features"))
    features_col = "vec"
    pca_model = None
    if seg.pca_components:
        from pyspark.ml.feature import PCA

        if seg.pca_components > width:
            raise ValueError(f"segment.pca_components {seg.pca_components} exceeds the {width} typical-shape features")
        t = time.perf_counter()
        pca_model = PCA(k=seg.pca_components, inputCol="vec", outputCol="pca").fit(active)
        active = pca_model.transform(active)
        features_col = "pca"
        timings["pca"] = time.perf_counter() - t

    # k selection and the final centers work on a bounded, deterministic sample held on the driver.
    t = time.perf_counter()
    ks = [seg.k] if seg.k else list(range(seg.k_min, seg.k_max + 1))
    if n_active < max(2, max(ks)):
        raise RuntimeError(f"segment-train: {n_active} non-vacant meters cannot make {max(ks)} clusters "
                           f"(vacancy rule took {n_vacant}); lower segment.k / segment.k_max or widen the window")
    keyed = active.select(features_col,
                          F.pmod(F.xxhash64("meter_id", F.lit(SAMPLE_SALT)), F.lit(1_000_000)).alias("ward_rank"),
                          F.xxhash64("meter_id", F.lit(SAMPLE_SALT + 1)).alias("split_bits"),
                          "meter_id")
    sample = keyed if seg.train_sample_meters == 0 or n_active <= seg.train_sample_meters else \
        G.deterministic_sample(keyed, seg.train_sample_meters, n_active, SAMPLE_SALT)
    vectors, ward_rank, split_bits = _collect_training(sample.orderBy("meter_id"), features_col)
    train_rows = len(vectors)
    timings["collect"] = time.perf_counter() - t
    t = time.perf_counter()
    train = sample.select(features_col)
    picked = select_partition(vectors, ward_rank, split_bits, ks, seg,
                              refine=lambda initial: mllib_kmeans(train, features_col, initial, seg))
    timings["select_k"] = time.perf_counter() - t
    t = time.perf_counter()
    model = kmeans_model_of(ctx.spark, picked["centers"], features_col)
    scores, stability = picked["silhouette_by_k"], picked["stability_by_k"]
    final_silhouette, final_stability, cost = picked["silhouette"], picked["stability"], picked["cost"]
    if final_stability != final_stability:  # too few meters for the halves: not measured
        final_stability = None
    runs, seed = picked["lloyd_runs"], int(seg.seed)
    weak = final_silhouette < seg.weak_silhouette
    if weak:
        log.warning("segment-train: silhouette %.3f < segment.weak_silhouette %s: the segments are a partition of a "
                    "continuum, not natural groups", final_silhouette, seg.weak_silhouette)
    k_found = len(model.clusterCenters())
    timings["kmeans"] = time.perf_counter() - t

    # Per-cluster member means in the typical-shape space (+ the vacancy segment as cluster -1).
    t = time.perf_counter()
    cols = ["meter_id", "mean_daily_kwh", "weekday_daily_kwh", "weekend_daily_kwh", "vec"]
    predicted = model.transform(active).select(*cols, "cluster_index")
    vacant_rows = feats.filter(F.col("is_vacant")).withColumn("vec", array_to_vector("features"))
    predicted = predicted.unionByName(vacant_rows.select(*cols, F.lit(-1).alias("cluster_index")))
    summary = sorted((r.asDict() for r in G.cluster_summary(predicted, group="cluster_index").collect()),
                     key=lambda r: r["cluster_index"])
    # A cluster no meter falls in still gets a segment (a later window may fill it): its KMeans center.
    present = {r["cluster_index"] for r in summary}
    for i, center in enumerate(model.clusterCenters()):
        if i not in present:
            shape = center if pca_model is None else pca_model.pc.toArray() @ center
            summary.append(dict(cluster_index=i, size=0, mean_daily_kwh=None, weekend_ratio=None, centroid=list(shape)))
    timings["summary"] = time.perf_counter() - t

    # Names and stable ids.
    windows = label_windows(s)
    use_vacancy = seg.vacant_max_daily_kwh is not None
    clusters = [r for r in summary if r["cluster_index"] >= 0]
    vacant = next((r for r in summary if r["cluster_index"] < 0), None)
    width_default = [1.0 / slots] * width
    feats_v = G.centroid_features(vacant["centroid"] if vacant else width_default, slots=slots, windows=windows,
                                  mean_daily_kwh=vacant["mean_daily_kwh"] if vacant else None,
                                  weekend_ratio=vacant["weekend_ratio"] if vacant else None)
    feats_all = [G.centroid_features(r["centroid"], slots=slots, windows=windows,
                                     mean_daily_kwh=r["mean_daily_kwh"], weekend_ratio=r["weekend_ratio"])
                 for r in clusters]
    labelled = name_centroids(feats_all, s, [(feats_v, vacant_rule_label(s))] if use_vacancy else [])
    named = [(r, f, rule, rank) for r, f, (rule, rank) in zip(clusters, feats_all, labelled)]
    # Ids follow the latest model on or before the as-of (a rerun: the version it replaces, whose ids
    # already follow the earlier model); reference_version names the earlier model they descend from.
    matched_to = latest_model_version(lake, ctx.as_of)
    previous, reference = {}, None
    if matched_to:
        prev_rows = model_segments(lake, matched_to)
        previous = {p["segment_id"]: p["centroid"] for p in prev_rows
                    if p["cluster_index"] is not None and len(p["centroid"]) == width}
        reference = prev_rows[0]["reference_version"] if matched_to == version else matched_to
    reserved = [seg.vacant_segment_id] if use_vacancy else []
    previous = {i: c for i, c in previous.items() if i not in reserved}
    ids = G.match_ids([r["centroid"] for r, *_ in named], [rank for *_, rank in named], previous,
                      slots=slots, reserved=reserved)

    # Save the MLlib model(s) before the table row that points at them.
    t = time.perf_counter()
    rel_path = model_dir(version)
    path = os.path.join(lake.root, rel_path)
    model.write().overwrite().save(os.path.join(path, "kmeans"))
    if pca_model is not None:
        pca_model.write().overwrite().save(os.path.join(path, "pca"))
    timings["save"] = time.perf_counter() - t

    total = n_active + n_vacant
    common = dict(model_version=version, as_of=ctx.as_of, k=k_found,
                  k_selection="fixed" if seg.k else "silhouette_stability", silhouette=final_silhouette,
                  silhouette_by_k=G.silhouette_json(scores), stability=final_stability,
                  stability_by_k=G.silhouette_json(stability), weak_structure=bool(weak), train_meters=int(train_rows), training_cost=cost,
                  kmeans_runs=int(runs),
                  typical_shape=seg.typical_shape, slots=slots, pca_components=seg.pca_components,
                  window_days=ctx.window_days, seed=seed, reference_version=reference, model_path=rel_path,
                  config_hash=s.config_hash(), code_version=code_version())
    rows = []
    for (r, feats_c, rule, _), seg_id in zip(named, ids):
        rows.append(dict(common, segment_id=seg_id, segment_label=rule.code, name_zh=rule.zh, name_en=rule.en,
                         cluster_index=int(r["cluster_index"]), centroid=[float(x) for x in r["centroid"]],
                         size=int(r["size"]), share=r["size"] / total, mean_daily_kwh=r["mean_daily_kwh"],
                         weekend_ratio=r["weekend_ratio"], label_features=_features_json(feats_c)))
    if use_vacancy:
        vl = vacant_rule_label(s)
        centroid = [float(x) for x in vacant["centroid"]] if vacant else width_default
        rows.append(dict(common, segment_id=seg.vacant_segment_id, segment_label=vl.code, name_zh=vl.zh,
                         name_en=vl.en, cluster_index=None, centroid=centroid, size=int(vacant["size"]) if vacant else 0,
                         share=(vacant["size"] if vacant else 0) / total,
                         mean_daily_kwh=vacant["mean_daily_kwh"] if vacant else None,
                         weekend_ratio=vacant["weekend_ratio"] if vacant else None,
                         label_features=_features_json(feats_v)))
    rows.sort(key=lambda r: r["segment_id"])
    t = time.perf_counter()
    table = ctx.spark.createDataFrame([tuple(r[f.name] for f in SEGMENT_MODEL_SCHEMA.fields) for r in rows],
                                      SEGMENT_MODEL_SCHEMA)
    lake.check_stored_schema(SEGMENT_MODEL, SEGMENT_MODEL_SCHEMA,
                             f"{SEGMENT_MODEL} was written by an older segment-train (this one adds stability, "
                             f"stability_by_k, weak_structure); move the table aside (and models/segment/) and "
                             f"retrain the as-of dates you need")
    lake.replace(table, SEGMENT_MODEL, where={"model_version": version}, partition_by=["model_version"])
    timings["write"] = time.perf_counter() - t

    result = StageResult(rows_in=total, outputs={SEGMENT_MODEL: len(rows)})
    sil = ", ".join(f"k={k}: {scores[k]:.3f}/{stability[k]:.2f}" for k in sorted(scores))
    result.notes.append(f"model {version}: k={k_found} ({common['k_selection']}; silhouette/stability on "
                        f"{train_rows:,} meters: {sil}); {seg.typical_shape} typical shapes of {total:,} meters, "
                        f"{n_vacant:,} by the vacancy rule")
    shown = "not measured" if final_stability is None else f"{final_stability:.1%}"
    result.notes.append(f"fitted model: silhouette {final_silhouette:.3f}, stability {shown} "
                        f"(meters keeping their segment when it is started from half of the meters)")
    if weak:
        result.notes.append(f"WEAK STRUCTURE: silhouette {final_silhouette:.3f} < {seg.weak_silhouette}: the segments "
                            f"are a partition of a continuum, not natural groups; read them as bands of similar "
                            f"curves")
    result.notes.append(f"ids matched to model {matched_to}" if matched_to else "no earlier model: ids in canonical order")
    for r in rows:
        result.notes.append(f"segment {r['segment_id']}: {r['segment_label']} {r['name_zh']} / {r['name_en']}, "
                            f"{r['size']:,} meters ({r['share']:.1%}), {_fmt(r['mean_daily_kwh'])} kWh/day")
    result.notes.append("timings " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return result


def _features_json(features: dict[str, float]) -> str:
    return json.dumps({k: (None if v != v else round(v, 6)) for k, v in sorted(features.items())})


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"


# ------------------------------------------------------------------ assign


def load_models(lake, segments: list[dict]):
    """(KMeansModel, PCAModel or None) saved for the model these gold.segment_model rows describe."""
    from pyspark.ml.clustering import KMeansModel
    from pyspark.ml.feature import PCAModel

    head = segments[0]
    path = os.path.join(lake.root, head["model_path"])
    kmeans_path = os.path.join(path, "kmeans")
    if not os.path.isdir(kmeans_path):
        raise FileNotFoundError(f"{SEGMENT_MODEL} version {head['model_version']}: saved model missing at "
                                f"{kmeans_path}; retrain with `gridpersona run segment-train --as-of {head['as_of']}`")
    pca = PCAModel.load(os.path.join(path, "pca")) if head["pca_components"] else None
    return KMeansModel.load(kmeans_path), pca


def run_segment_assign(ctx: StageContext) -> StageResult:
    """silver.daily_load_shape (window) + a trained model -> gold.customer_segments for the as-of (no retraining)."""
    from pyspark.ml.functions import array_to_vector

    s, seg, lake = ctx.settings, ctx.settings.segment, ctx.lake
    timings: dict[str, float] = {}
    version = seg.model_version or latest_model_version(lake, ctx.as_of)
    if version is None:
        raise LookupError(f"segment-assign: no model in {SEGMENT_MODEL} trained on or before {ctx.as_of}; run "
                          f"`gridpersona run segment-train --as-of {ctx.as_of}` or set segment.model_version")
    segments = model_segments(lake, version)
    head = segments[0]
    if head["slots"] != _slots(s):
        raise ValueError(f"model {version} was trained on {head['slots']} slots per day; ami.interval_minutes "
                         f"{s.ami.interval_minutes} gives {_slots(s)}: retrain the model")
    t = time.perf_counter()
    kmeans, pca = load_models(lake, segments)
    timings["load_model"] = time.perf_counter() - t

    t = time.perf_counter()
    # The model's own feature method, so the vectors mean what they meant at training.
    feats = segment_features(ctx, method=head["typical_shape"])
    has_vacant = any(r["cluster_index"] is None for r in segments)
    active = feats.filter(~F.col("is_vacant")).withColumn("vec", array_to_vector("features")) if has_vacant else \
        feats.withColumn("vec", array_to_vector("features"))
    if pca is not None:
        active = pca.transform(active)
    kmeans = kmeans.setPredictionCol("cluster_index")
    cols = [c for c in feats.columns]
    predicted = kmeans.transform(active).select(*cols, "cluster_index")
    if has_vacant:
        predicted = predicted.unionByName(feats.filter(F.col("is_vacant")).select(*cols, F.lit(None).cast("int")
                                                                                   .alias("cluster_index")))
    seg_rows = [(r["segment_id"], r["cluster_index"], r["centroid"], r["segment_label"], r["name_zh"], r["name_en"])
                for r in segments]
    seg_df = ctx.spark.createDataFrame(seg_rows, "segment_id int, cluster_index int, centroid array<double>, "
                                                 "segment_label string, name_zh string, name_en string")
    assigned = G.attach_segments(predicted, seg_df)
    archive = read_bronze(lake, "bronze.customer_archive").select("customer_id", "meter_id")
    out = G.customer_segments(assigned, archive, as_of=ctx.as_of, model_version=version)
    check_schema(CUSTOMER_SEGMENTS, CUSTOMER_SEGMENTS_SCHEMA, out.schema)
    written = lake.replace(out, CUSTOMER_SEGMENTS, where={"as_of": ctx.as_of}, partition_by=["as_of"]).rows
    timings["assign_write"] = time.perf_counter() - t

    t = time.perf_counter()
    counts = {(r["segment_id"], r["segment_label"]): r["count"] for r in
              lake.read(CUSTOMER_SEGMENTS).filter(F.col("as_of") == F.lit(ctx.as_of))
              .groupBy("segment_id", "segment_label").count().collect()}
    timings["count"] = time.perf_counter() - t
    result = StageResult(rows_in=written, outputs={CUSTOMER_SEGMENTS: written})
    result.notes.append(f"{written:,} meters assigned with model {version} (k={head['k']}, {head['typical_shape']})")
    result.notes.append("segments: " + ", ".join(f"{i} {lbl} {n:,}" for (i, lbl), n in sorted(counts.items())))
    result.notes.append("timings " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return result


# ------------------------------------------------------------------ profile


def run_profile(ctx: StageContext) -> StageResult:
    """gold.customer_segments (as-of) + silver.daily_load_shape (window) -> gold.segment_profile (as-of)."""
    s, lake = ctx.settings, ctx.lake
    first, last = ctx.window
    if not lake.exists(CUSTOMER_SEGMENTS):
        raise RuntimeError(f"profile: {CUSTOMER_SEGMENTS} not found; run segment-assign --as-of {ctx.as_of} first")
    segments = lake.read(CUSTOMER_SEGMENTS).filter(F.col("as_of") == F.lit(ctx.as_of))
    if not segments.limit(1).count():
        raise RuntimeError(f"profile: {CUSTOMER_SEGMENTS} has no rows for as-of {ctx.as_of}; run segment-assign "
                           f"--as-of {ctx.as_of} first")
    model = ctx.spark.createDataFrame(
        [(r["model_version"], r["segment_id"], r["centroid"]) for r in _model_table(lake)],
        "model_version string, segment_id int, centroid array<double>")
    daily = (lake.read(DAILY_LOAD_SHAPE).filter(F.col("date").between(first, last))
             .select("meter_id", "completeness", "is_weekend", "daily_kwh", "peak_share", "flat_share",
                     "valley_share", "load_factor"))
    summary = G.meter_load_summary(daily, min_completeness=s.segment.min_completeness)
    profile = G.segment_profile(segments, summary, model, as_of=ctx.as_of)
    check_schema(SEGMENT_PROFILE, SEGMENT_PROFILE_SCHEMA, profile.schema)
    written = lake.replace(profile, SEGMENT_PROFILE, where={"as_of": ctx.as_of}, partition_by=["as_of"]).rows
    rows = [r for r in lake.read_arrow(SEGMENT_PROFILE).to_pylist() if r["as_of"] == ctx.as_of]
    rows.sort(key=lambda r: (r["model_version"], r["segment_id"]))
    meters = sum(r["meters"] for r in rows)
    result = StageResult(rows_in=meters, outputs={SEGMENT_PROFILE: written})
    for r in rows:
        result.notes.append(
            f"segment {r['segment_id']} {r['segment_label']} {r['segment_name_zh']}: {r['meters']:,} meters "
            f"({r['share']:.1%}), {_fmt(r['mean_daily_kwh'])} kWh/day, peak {_pct(r['peak_share'])}, "
            f"valley {_pct(r['valley_share'])}, load factor {_fmt2(r['load_factor'])}")
    write_tag_portraits(ctx, summary, result)
    return result


SEGMENT_TAG_PROFILE = "gold.segment_tag_profile"
CONSUMPTION_PRICE_QUADRANT = "gold.consumption_price_quadrant"
QUADRANT_TAGS = ("consumption_level", "price_sensitivity", "ev_owner", "tariff_type")


def write_tag_portraits(ctx: StageContext, meter_summary: DataFrame, result: StageResult) -> None:
    """Group portraits from gold.customer_tags of the as-of (seed 000 §2.2): gold.segment_tag_profile and
    gold.consumption_price_quadrant, replaced for the as-of. Skipped, with a note, when the tags stage has
    not run for it."""
    from gridpersona.stages.tags import CUSTOMER_TAGS, TAG_CATALOG_TABLE
    from gridpersona.contracts.tagspec import CONSUMPTION_PRICE_QUADRANT as QUADRANT_SPEC
    from gridpersona.contracts.tagspec import SEGMENT_TAG_PROFILE as PROFILE_SPEC
    from gridpersona.transform import tags as TG

    lake, as_of = ctx.lake, ctx.as_of
    if not (lake.exists(CUSTOMER_TAGS) and lake.exists(TAG_CATALOG_TABLE)):
        result.notes.append(f"no {CUSTOMER_TAGS}: tag portraits skipped (run tags --as-of {as_of} first)")
        return
    catalog = [r for r in lake.read_arrow(TAG_CATALOG_TABLE).to_pylist() if r["as_of"] == as_of]
    if not catalog:
        result.notes.append(f"{CUSTOMER_TAGS} has no tags for {as_of}: tag portraits skipped (run tags first)")
        return
    tags = lake.read(CUSTOMER_TAGS).filter(F.col("as_of") == F.lit(as_of))
    # Categorical tags only (a continuous double tag has no distribution to tabulate), in catalog order.
    profiled = [(r["code"], r["value_type"]) for r in sorted(catalog, key=lambda r: r["position"])
                if r["value_type"] != "double"]
    portraits = TG.segment_tag_profile(tags, profiled, as_of=as_of)
    check_schema(SEGMENT_TAG_PROFILE, PROFILE_SPEC.schema, portraits.schema)
    result.outputs[SEGMENT_TAG_PROFILE] = lake.replace(portraits, SEGMENT_TAG_PROFILE, where={"as_of": as_of},
                                                      partition_by=["as_of"]).rows
    if all(c in tags.columns for c in QUADRANT_TAGS):
        quadrant = TG.consumption_price_quadrant(tags, meter_summary.select("meter_id", "daily_kwh"), as_of=as_of)
        check_schema(CONSUMPTION_PRICE_QUADRANT, QUADRANT_SPEC.schema, quadrant.schema)
        result.outputs[CONSUMPTION_PRICE_QUADRANT] = lake.replace(quadrant, CONSUMPTION_PRICE_QUADRANT,
                                                                  where={"as_of": as_of}, partition_by=["as_of"]).rows
        for r in sorted((r for r in lake.read_arrow(CONSUMPTION_PRICE_QUADRANT).to_pylist()
                         if r["as_of"] == as_of and r["quadrant"]), key=lambda r: (r["customer_type"], r["quadrant"])):
            result.notes.append(f"quadrant {r['customer_type']} {r['quadrant']} {r['quadrant_zh']}: "
                                f"{r['customers']:,} customers ({r['share']:.1%})")
    else:
        result.notes.append(f"consumption x price quadrant skipped: {CUSTOMER_TAGS} lacks one of {QUADRANT_TAGS}")


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def _fmt2(x) -> str:
    return "-" if x is None else f"{x:.2f}"
