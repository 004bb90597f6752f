"""The segmentation model as an estimator/model pair, after pyspark.ml's ``Estimator.fit -> Model.transform``.

``SegmentEstimator(params).fit(typical_shapes) -> SegmentModel`` picks k,
fits KMeans (:mod:`gridpersona.segment.kmeans`), names the clusters
(:mod:`gridpersona.segment.labels`) and gives them stable ids
(:mod:`gridpersona.segment.ids`); ``SegmentModel.transform(typical_shapes)``
puts each meter in a segment. ``save(path)`` writes the MLlib model(s)
(``kmeans/``, ``pca/`` when PCA is on); the segments themselves (ids, names,
centroids) are the model's gold.segment_model rows (:meth:`SegmentModel.segment_rows`),
which ``load(path, rows)`` takes back.

No lake, no config models: :class:`SegmentParams` carries plain values.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from gridpersona.segment.features import cluster_summary, deterministic_sample, vacancy_counts
from gridpersona.segment.ids import match_ids
from gridpersona.segment.kmeans import (SAMPLE_SALT, collect_training, kmeans_model_of, mllib_kmeans,
                                        select_partition, silhouette_json)
from gridpersona.segment.labels import (DayPart, LabelRule, centroid_features, features_json, name_centroids,
                                        vacant_rule_label)
from gridpersona.segment.tables import attach_segments

log = logging.getLogger("gridpersona")


@dataclass(frozen=True)
class SegmentParams:
    """What training needs, as plain values (the stage builds them from ``segment.*``)."""

    slots: int  # slots per day; the feature vectors hold 2 x slots values (weekday, weekend)
    typical_shape: str  # the feature method, recorded with the model
    k: int | None  # fixed k, or None to choose in [k_min, k_max]
    k_min: int
    k_max: int
    train_sample_meters: int
    ward_sample_meters: int
    stability_splits: int
    silhouette_tolerance: float
    weak_silhouette: float
    max_iter: int
    tol: float
    pca_components: int
    seed: int  # recorded with the model; no random draw uses it
    vacant_max_daily_kwh: float | None  # None: no vacancy rule
    vacant_segment_id: int
    label_rules: tuple[LabelRule, ...]
    day_parts: tuple[DayPart, ...]
    windows: Mapping[str, tuple[int, int]]  # name -> (start, end) minutes after local midnight
    broad_max_peak_to_mean: float
    sharp_min_peak_to_mean: float


@dataclass(frozen=True)
class Segment:
    """One segment of a model: its id, KMeans cluster (None: the vacancy rule's), names and member summary."""

    segment_id: int
    cluster_index: int | None
    label: LabelRule
    centroid: list[float]
    size: int = 0
    mean_daily_kwh: float | None = None
    weekend_ratio: float | None = None
    label_features: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Training:
    """How a model was fitted: the gold.segment_model columns every segment row shares, plus timings."""

    k: int
    k_selection: str  # fixed | silhouette_stability
    silhouette: float
    silhouette_by_k: dict[int, float]
    stability: float | None  # None: too few meters for the halves
    stability_by_k: dict[int, float]
    weak_structure: bool
    train_meters: int
    training_cost: float
    kmeans_runs: int
    typical_shape: str
    slots: int
    pca_components: int
    seed: int
    active_meters: int
    vacant_meters: int
    timings: dict[str, float]


class SegmentEstimator:
    """Fits a :class:`SegmentModel` on typical shapes (``features.typical_shapes`` + ``flag_vacant``)."""

    def __init__(self, params: SegmentParams):
        self.params = params

    def fit(self, features: DataFrame, *, previous: Mapping[int, Sequence[float]] | None = None,
            counts: tuple[int, int] | None = None) -> "SegmentModel":
        """A model of ``features`` (one row per meter: ``meter_id``, ``features``, ``is_vacant``, daily kWh).

        ``previous``: {segment id: centroid} of the model the ids follow (its
        KMeans segments; another width or the vacancy id is ignored).
        ``counts``: (active, vacant) meters when the caller counted them.
        """
        from pyspark.ml.functions import array_to_vector

        p = self.params
        slots, width = p.slots, 2 * p.slots
        timings: dict[str, float] = {}
        n_active, n_vacant = counts if counts is not None else vacancy_counts(features)
        active = features.filter(~F.col("is_vacant")).withColumn("vec", array_to_vector("features"))
        features_col = "vec"
        pca_model = None
        if p.pca_components:
            from pyspark.ml.feature import PCA

            if p.pca_components > width:
                raise ValueError(f"segment.pca_components {p.pca_components} exceeds the {width} typical-shape "
                                 f"features")
            t = time.perf_counter()
            pca_model = PCA(k=p.pca_components, inputCol="vec", outputCol="pca").fit(active)
            active = pca_model.transform(active)
            features_col = "pca"
            timings["pca"] = time.perf_counter() - t

        # k selection and the final centers work on a bounded, deterministic sample held on the driver.
        t = time.perf_counter()
        ks = [p.k] if p.k else list(range(p.k_min, p.k_max + 1))
        if n_active < max(2, max(ks)):
            raise RuntimeError(f"segment-train: {n_active} non-vacant meters cannot make {max(ks)} clusters "
                               f"(vacancy rule took {n_vacant}); lower segment.k / segment.k_max or widen the window")
        keyed = active.select(features_col,
                              F.pmod(F.xxhash64("meter_id", F.lit(SAMPLE_SALT)), F.lit(1_000_000)).alias("ward_rank"),
                              F.xxhash64("meter_id", F.lit(SAMPLE_SALT + 1)).alias("split_bits"),
                              "meter_id")
        sample = keyed if p.train_sample_meters == 0 or n_active <= p.train_sample_meters else \
            deterministic_sample(keyed, p.train_sample_meters, n_active, SAMPLE_SALT)
        vectors, ward_rank, split_bits = collect_training(sample.orderBy("meter_id"), features_col)
        train_rows = len(vectors)
        timings["collect"] = time.perf_counter() - t
        t = time.perf_counter()
        train = sample.select(features_col)
        picked = select_partition(vectors, ward_rank, split_bits, ks, p,
                                  refine=lambda initial: mllib_kmeans(train, features_col, initial, p))
        timings["select_k"] = time.perf_counter() - t
        t = time.perf_counter()
        kmeans = kmeans_model_of(features.sparkSession, picked["centers"], features_col)
        final_silhouette, final_stability = picked["silhouette"], picked["stability"]
        if final_stability != final_stability:  # too few meters for the halves: not measured
            final_stability = None
        weak = final_silhouette < p.weak_silhouette
        if weak:
            log.warning("segment-train: silhouette %.3f < segment.weak_silhouette %s: the segments are a partition "
                        "of a continuum, not natural groups", final_silhouette, p.weak_silhouette)
        k_found = len(kmeans.clusterCenters())
        timings["kmeans"] = time.perf_counter() - t

        # Per-cluster member means in the typical-shape space (+ the vacancy segment as cluster -1).
        t = time.perf_counter()
        cols = ["meter_id", "mean_daily_kwh", "weekday_daily_kwh", "weekend_daily_kwh", "vec"]
        predicted = kmeans.transform(active).select(*cols, "cluster_index")
        vacant_rows = features.filter(F.col("is_vacant")).withColumn("vec", array_to_vector("features"))
        predicted = predicted.unionByName(vacant_rows.select(*cols, F.lit(-1).alias("cluster_index")))
        summary = sorted((r.asDict() for r in cluster_summary(predicted, group="cluster_index").collect()),
                         key=lambda r: r["cluster_index"])
        # A cluster no meter falls in still gets a segment (a later window may fill it): its KMeans center.
        present = {r["cluster_index"] for r in summary}
        for i, center in enumerate(kmeans.clusterCenters()):
            if i not in present:
                shape = center if pca_model is None else pca_model.pc.toArray() @ center
                summary.append(dict(cluster_index=i, size=0, mean_daily_kwh=None, weekend_ratio=None,
                                    centroid=list(shape)))
        timings["summary"] = time.perf_counter() - t

        segments = self._name_and_number(summary, previous or {})
        training = Training(
            k=k_found, k_selection="fixed" if p.k else "silhouette_stability", silhouette=final_silhouette,
            silhouette_by_k=picked["silhouette_by_k"], stability=final_stability,
            stability_by_k=picked["stability_by_k"], weak_structure=bool(weak), train_meters=int(train_rows),
            training_cost=picked["cost"], kmeans_runs=int(picked["lloyd_runs"]), typical_shape=p.typical_shape,
            slots=slots, pca_components=p.pca_components, seed=int(p.seed), active_meters=n_active,
            vacant_meters=n_vacant, timings=timings)
        return SegmentModel(kmeans, pca_model, segments, training)

    def _name_and_number(self, summary: list[dict], previous: Mapping[int, Sequence[float]]) -> list[Segment]:
        """Segments of the cluster summary (cluster -1: the vacancy rule's meters): labels, then stable ids."""
        p = self.params
        slots, width = p.slots, 2 * p.slots
        use_vacancy = p.vacant_max_daily_kwh is not None
        clusters = [r for r in summary if r["cluster_index"] >= 0]
        vacant = next((r for r in summary if r["cluster_index"] < 0), None)
        width_default = [1.0 / slots] * width
        feats_v = centroid_features(vacant["centroid"] if vacant else width_default, slots=slots, windows=p.windows,
                                    mean_daily_kwh=vacant["mean_daily_kwh"] if vacant else None,
                                    weekend_ratio=vacant["weekend_ratio"] if vacant else None)
        feats_all = [centroid_features(r["centroid"], slots=slots, windows=p.windows,
                                       mean_daily_kwh=r["mean_daily_kwh"], weekend_ratio=r["weekend_ratio"])
                     for r in clusters]
        vacant_label = vacant_rule_label(p.label_rules)
        labelled = name_centroids(feats_all, p.label_rules, p.day_parts,
                                  broad_max_peak_to_mean=p.broad_max_peak_to_mean,
                                  sharp_min_peak_to_mean=p.sharp_min_peak_to_mean,
                                  pinned=[(feats_v, vacant_label)] if use_vacancy else [])
        reserved = [p.vacant_segment_id] if use_vacancy else []
        prior = {i: c for i, c in previous.items() if len(c) == width and i not in reserved}
        ids = match_ids([r["centroid"] for r in clusters], [rank for _, rank in labelled], prior,
                        slots=slots, reserved=reserved)
        segments = [Segment(segment_id=seg_id, cluster_index=int(r["cluster_index"]), label=rule,
                            centroid=[float(x) for x in r["centroid"]], size=int(r["size"]),
                            mean_daily_kwh=r["mean_daily_kwh"], weekend_ratio=r["weekend_ratio"], label_features=f)
                    for r, f, (rule, _), seg_id in zip(clusters, feats_all, labelled, ids)]
        if use_vacancy:
            segments.append(Segment(
                segment_id=p.vacant_segment_id, cluster_index=None, label=vacant_label,
                centroid=[float(x) for x in vacant["centroid"]] if vacant else width_default,
                size=int(vacant["size"]) if vacant else 0,
                mean_daily_kwh=vacant["mean_daily_kwh"] if vacant else None,
                weekend_ratio=vacant["weekend_ratio"] if vacant else None, label_features=feats_v))
        return segments


class SegmentModel:
    """A fitted segmentation: the MLlib KMeans (and PCA) model and its segments; see the module docstring."""

    def __init__(self, kmeans, pca, segments: Sequence[Segment], training: Training | None = None):
        self.kmeans = kmeans
        self.pca = pca
        self.segments = list(segments)
        self.training = training  # None for a loaded model: its rows in gold.segment_model say how it was fitted

    def transform(self, features: DataFrame) -> DataFrame:
        """Typical shapes -> the same rows with ``cluster_index``, ``segment_id``, ``segment_label``,
        ``name_zh``, ``name_en`` and ``distance`` (to the segment's centroid; :func:`tables.attach_segments`)."""
        from pyspark.ml.functions import array_to_vector

        has_vacant = any(s.cluster_index is None for s in self.segments)
        active = features.filter(~F.col("is_vacant")).withColumn("vec", array_to_vector("features")) if has_vacant \
            else features.withColumn("vec", array_to_vector("features"))
        if self.pca is not None:
            active = self.pca.transform(active)
        kmeans = self.kmeans.setPredictionCol("cluster_index")
        cols = list(features.columns)
        predicted = kmeans.transform(active).select(*cols, "cluster_index")
        if has_vacant:
            predicted = predicted.unionByName(features.filter(F.col("is_vacant"))
                                              .select(*cols, F.lit(None).cast("int").alias("cluster_index")))
        rows = [(s.segment_id, s.cluster_index, s.centroid, s.label.code, s.label.zh, s.label.en)
                for s in self.segments]
        table = features.sparkSession.createDataFrame(
            rows, "segment_id int, cluster_index int, centroid array<double>, segment_label string, name_zh string, "
                  "name_en string")
        return attach_segments(predicted, table)

    def segment_rows(self, **run: Any) -> list[dict]:
        """gold.segment_model rows of a fitted model, sorted by segment id. ``run``: the columns the run
        decides (model_version, as_of, window_days, reference_version, model_path, config_hash, code_version)."""
        t = self.training
        if t is None:
            raise ValueError("segment_rows: a loaded model already has its rows (gold.segment_model)")
        total = t.active_meters + t.vacant_meters
        common = dict(run, k=t.k, k_selection=t.k_selection, silhouette=t.silhouette,
                      silhouette_by_k=silhouette_json(t.silhouette_by_k), stability=t.stability,
                      stability_by_k=silhouette_json(t.stability_by_k), weak_structure=t.weak_structure,
                      train_meters=t.train_meters, training_cost=t.training_cost, kmeans_runs=t.kmeans_runs,
                      typical_shape=t.typical_shape, slots=t.slots, pca_components=t.pca_components, seed=t.seed)
        rows = [dict(common, segment_id=s.segment_id, segment_label=s.label.code, name_zh=s.label.zh,
                     name_en=s.label.en, cluster_index=s.cluster_index, centroid=s.centroid, size=s.size,
                     share=s.size / total, mean_daily_kwh=s.mean_daily_kwh, weekend_ratio=s.weekend_ratio,
                     label_features=features_json(s.label_features))
                for s in self.segments]
        rows.sort(key=lambda r: r["segment_id"])
        return rows

    def save(self, path: str) -> None:
        """Write the MLlib model(s) under ``path`` (``kmeans/``, ``pca/``), replacing what is there."""
        self.kmeans.write().overwrite().save(os.path.join(path, "kmeans"))
        if self.pca is not None:
            self.pca.write().overwrite().save(os.path.join(path, "pca"))

    @classmethod
    def load(cls, path: str, rows: Sequence[Mapping[str, Any]]) -> "SegmentModel":
        """The model saved under ``path`` whose segments are ``rows`` (its gold.segment_model rows)."""
        from pyspark.ml.clustering import KMeansModel
        from pyspark.ml.feature import PCAModel

        pca = PCAModel.load(os.path.join(path, "pca")) if rows[0]["pca_components"] else None
        segments = [Segment(segment_id=r["segment_id"], cluster_index=r["cluster_index"],
                            label=LabelRule(r["segment_label"], r["name_zh"], r["name_en"], {}),
                            centroid=r["centroid"], size=r["size"], mean_daily_kwh=r["mean_daily_kwh"],
                            weekend_ratio=r["weekend_ratio"]) for r in rows]
        return cls(KMeansModel.load(os.path.join(path, "kmeans")), pca, segments)
