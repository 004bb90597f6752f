"""KMeans with a deterministic start, the choice of k, and partition scores (numpy + MLlib).

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

The parameters (``k``, ``k_min`` ... ``silhouette_tolerance``) come in as an
object with those attributes (:class:`gridpersona.segment.estimator.SegmentParams`).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from pyspark.sql import DataFrame

from gridpersona.segment.ids import hungarian

# Salt of the hashes that pick the training sample, the Ward sample and the stability splits: fixed, so
# no seed changes which meters the segments (or the choice of k) are built from.
SAMPLE_SALT = 42


def ward_centers(points: Sequence[Sequence[float]], weights: Sequence[float], ks: Iterable[int]
                 ) -> dict[int, np.ndarray]:
    """Agglomerate weighted points bottom-up by Ward's criterion; for each k in ``ks`` the k group means.

    Returns {k: array (k x d) of the weighted means of the groups left when k
    remain}, rows in the order of each group's lowest input index. A merge of
    groups i, j costs ``w_i w_j / (w_i + w_j) * |c_i - c_j|^2`` (the rise in
    within-group sum of squares); the cheapest merge goes first, ties to the
    lowest indexes. Deterministic: no seed, no random draw. O(n^2) memory and
    O(n^2) work per merge, so keep ``points`` to about a thousand rows.
    """
    cents = np.array(points, dtype=float)
    w = np.array(weights, dtype=float)
    n = len(cents)
    alive = np.ones(n, dtype=bool)
    cost = np.full((n, n), np.inf)  # upper triangle: merge cost of (i, j), i < j

    norms = (cents * cents).sum(axis=1)

    def merge_costs(i: int) -> np.ndarray:
        total = w[i] + w
        dist = np.maximum(norms - 2.0 * (cents @ cents[i]) + norms[i], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.where(total > 0, w[i] * w / total, 0.0) * dist
        c[~alive] = np.inf
        c[i] = np.inf
        return c

    for i in range(n - 1):
        cost[i, i + 1:] = merge_costs(i)[i + 1:]
    out: dict[int, np.ndarray] = {}
    left = n
    for k in sorted({int(k) for k in ks}, reverse=True):
        while left > k:
            i, j = divmod(int(np.argmin(cost)), n)
            total = w[i] + w[j]
            if total > 0:
                cents[i] = (w[i] * cents[i] + w[j] * cents[j]) / total
                norms[i] = float(cents[i] @ cents[i])
            w[i] = total
            alive[j] = False
            cost[j, :] = np.inf
            cost[:, j] = np.inf
            c = merge_costs(i)
            cost[i, i + 1:] = c[i + 1:]
            cost[:i, i] = c[:i]
            left -= 1
        if left == k:
            out[k] = cents[alive].copy()
    return out


def squared_distances(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n x k) squared Euclidean distances, |x|^2 - 2 x.c + |c|^2 (clipped at 0)."""
    x = np.asarray(points, dtype=float)
    c = np.asarray(centers, dtype=float)
    d = (x * x).sum(axis=1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)


def _cluster_means(points: np.ndarray, clusters: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Mean of each cluster's points (rows summed in index order); an empty cluster keeps ``previous``."""
    k = len(previous)
    order = np.argsort(clusters, kind="stable")
    counts = np.bincount(clusters, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.array(previous, dtype=float)
    present = counts > 0
    if present.any():
        sums = np.add.reduceat(points[order], starts[present], axis=0)
        out[present] = sums / counts[present][:, None]
    return out


def lloyd(points: np.ndarray, centers: np.ndarray, *, max_iter: int, tol: float
          ) -> tuple[np.ndarray, np.ndarray, float]:
    """KMeans (Lloyd's iterations) from the given initial centers: (centers, cluster of each point, cost).

    Stops when no center moves more than ``tol`` or after ``max_iter`` rounds;
    an emptied cluster keeps its center. The cost is the within-cluster sum of
    squared distances. Deterministic for given inputs (no random draw).
    """
    x = np.asarray(points, dtype=float)
    c = np.array(centers, dtype=float)
    for _ in range(max_iter):
        moved = _cluster_means(x, squared_distances(x, c).argmin(axis=1), c)
        shift = float(np.sqrt(((moved - c) ** 2).sum(axis=1)).max())
        c = moved
        if shift <= tol:
            break
    d = squared_distances(x, c)
    nearest = d.argmin(axis=1)
    return c, nearest, float(d[np.arange(len(x)), nearest].sum())


def silhouette(points: np.ndarray, clusters: np.ndarray) -> float:
    """Mean silhouette with squared Euclidean distances, as MLlib's ClusteringEvaluator computes it.

    A point's dissimilarity to a cluster is its mean squared distance to the
    cluster's points (its own cluster without itself); a point alone in its
    cluster scores 0. Exact, in O(n k d) from per-cluster means.
    """
    x = np.asarray(points, dtype=float)
    lab = np.asarray(clusters, dtype=int)
    k = int(lab.max()) + 1 if len(lab) else 0
    if k < 2:
        return 0.0
    sq = (x ** 2).sum(axis=1)
    counts = np.bincount(lab, minlength=k)
    mean_sq = np.full((len(x), k), np.inf)
    for j in range(k):
        if counts[j]:
            members = x[lab == j]
            mean_sq[:, j] = (members ** 2).sum(axis=1).mean() - 2.0 * (x @ members.mean(axis=0)) + sq
    rows = np.arange(len(x))
    own = mean_sq[rows, lab] * counts[lab] / np.maximum(counts[lab] - 1, 1)
    mean_sq[rows, lab] = np.inf
    other = mean_sq.min(axis=1)
    denom = np.maximum(np.maximum(own, other), 1e-300)
    return float(np.where(counts[lab] > 1, (other - own) / denom, 0.0).mean())


def partition_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of items in the same cluster of two partitions once their clusters are matched one-to-one
    (Hungarian, most items in common): 1.0 for the same partition whatever the cluster numbers."""
    a, b = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    if len(a) == 0:
        return 1.0
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    return float(sum(table[r, c] for r, c in hungarian(-table)) / len(a))


def choose_k(silhouettes: Mapping[int, float], stability: Mapping[int, float], tolerance: float) -> int:
    """The most stable k among those whose silhouette is within ``tolerance`` of the best.

    Stability compares at 0.01 (closer is noise), then the higher silhouette,
    then the smaller k decides.
    """
    best = max(silhouettes.values())
    near = [k for k, s in silhouettes.items() if s >= best - tolerance]
    def stable(k: int) -> float:
        value = stability.get(k, float("nan"))
        return 0.0 if value != value else round(value, 2)  # unmeasured (NaN) counts as unstable

    return max(near, key=lambda k: (stable(k), round(silhouettes[k], 9), -k))


def adjusted_rand_index(labels_a: Sequence[Any], labels_b: Sequence[Any]) -> float:
    """Adjusted Rand index of two labelings of the same items (1.0 identical partitions, ~0 random)."""
    a = np.asarray(labels_a, dtype=object).astype(str)
    b = np.asarray(labels_b, dtype=object).astype(str)
    if len(a) != len(b):
        raise ValueError(f"labelings differ in length: {len(a)} vs {len(b)}")
    if len(a) < 2:
        return 1.0
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1)

    def pairs(x):
        return (x * (x - 1) / 2.0).sum()

    index = pairs(table)
    sum_a, sum_b = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = sum_a * sum_b / pairs(np.array([len(a)]))
    best = (sum_a + sum_b) / 2.0
    return 1.0 if best == expected else float((index - expected) / (best - expected))


def silhouette_json(scores: Mapping[int, float]) -> str:
    """{k: score} -> a stable JSON string (keys in order, 6 decimals; a score not measured, NaN, is null)."""
    return json.dumps({str(k): None if v != v else round(float(v), 6) for k, v in sorted(scores.items())})


def collect_training(train: DataFrame, features_col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def select_partition(vectors: np.ndarray, ward_rank: np.ndarray, split_bits: np.ndarray, ks: list[int], params,
                     refine=None) -> dict[str, Any]:
    """k selection and the final centers, deterministic (no seed decides them). See the module docstring.

    k is chosen on the Ward sample (at most ``ward_sample_meters`` rows); the
    chosen k's centers are then refined on all ``vectors``: by ``refine(initial
    centers) -> centers`` (the stage passes MLlib's distributed KMeans), else by
    Lloyd iterations here. Returns centers,
    clusters, cost, k, silhouette (of the final fit, on all vectors),
    stability (of the chosen k), silhouette_by_k, stability_by_k and lloyd_runs.
    """
    rows = _ward_rows(ward_rank, np.ones(len(vectors), dtype=bool), params.ward_sample_meters)
    sample = vectors[rows]
    usable = [k for k in ks if k <= len(rows)]
    inits = ward_centers(sample, np.ones(len(rows)), usable)
    halves = []
    for i in range(params.stability_splits):
        for h in (0, 1):
            part = np.flatnonzero(((split_bits[rows] >> i) & 1) == h)
            fit_ks = [k for k in usable if k <= len(part)]
            halves.append(ward_centers(sample[part], np.ones(len(part)), fit_ks) if fit_ks else {})
    fits, scores, stability, runs = {}, {}, {}, 0
    for k in usable:
        centers, clusters, _ = lloyd(sample, inits[k], max_iter=params.max_iter, tol=params.tol)
        runs += 1
        fits[k] = centers
        scores[k] = silhouette(sample, clusters)
        agree = []
        for init in halves:
            if k in init:
                agree.append(partition_agreement(
                    clusters, lloyd(sample, init[k], max_iter=params.max_iter, tol=params.tol)[1]))
                runs += 1
        stability[k] = float(np.mean(agree)) if agree else float("nan")
    chosen = usable[0] if len(usable) == 1 else choose_k(scores, stability, params.silhouette_tolerance)
    if refine is None:
        centers, clusters, cost = lloyd(vectors, fits[chosen], max_iter=params.max_iter, tol=params.tol)
    else:
        centers = np.asarray(refine(fits[chosen]), dtype=float)
        d = squared_distances(vectors, centers)
        clusters = d.argmin(axis=1)
        cost = float(d[np.arange(len(vectors)), clusters].sum())
    runs += 1
    final_silhouette = silhouette(vectors, clusters)
    return dict(centers=centers, clusters=clusters, cost=cost, k=chosen, silhouette=final_silhouette,
                stability=stability[chosen], silhouette_by_k=scores, stability_by_k=stability, lloyd_runs=runs)


def mllib_kmeans(frame: DataFrame, features_col: str, initial: np.ndarray, params) -> np.ndarray:
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
        model = RDDKMeans.train(rdd, len(initial), maxIterations=params.max_iter, epsilon=params.tol,
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
