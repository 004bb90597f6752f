"""Single-node reference for the shapes + segment stages: DuckDB + numpy + scikit-learn.

    .venv/bin/python bench/reference.py --lake-root /tmp/benchlake/m20000_d30 \
        --first 2026-06-01 --last 2026-06-30 [--typical mean|energy] [--out result.json]

Reads the Delta snapshot of ``silver.ami_clean`` (its live Parquet files, listed by
delta-rs) and does what the Spark pipeline does from that table to the segments:

1. DuckDB: one row per meter and local day with the 96 wall-clock slot kWh
   (a conditional sum per slot, the same rule as ``transform.shapes``: a missing
   slot is 0 kWh, two readings in one slot add up), readings present, day of week.
2. numpy: daily kWh, the daily normalized shape (slot kWh / daily kWh; uniform on
   a day without energy), completeness = present / expected intervals of the day.
3. Per meter, on days with completeness >= ``min_completeness``: the typical
   weekday and weekend shapes, either ``mean`` (mean of the daily normalized
   shapes) or ``energy`` (energy-weighted: summed slot kWh / summed daily kWh),
   and the mean daily kWh; a meter under ``vacant_kwh`` is vacant and left out
   of the clustering. Feature vector = weekday shape ++ weekend shape (a meter
   without one kind of day uses the other twice).
4. scikit-learn KMeans (k-means++, one run, seeded) for each k of the range;
   k chosen by the silhouette (squared Euclidean, the default of Spark's
   ClusteringEvaluator), on all meters or on a seeded sample when the
   segmentation config samples.
5. The assignments (meter_id, segment_id, vacant, k) written to one Parquet file.

Steps 1-5 are the timed span (``seconds``); interpreter start and imports are
reported apart (``import_seconds``), like the Spark session on the other side.
Accuracy against the lake's planted ``truth.meters`` is computed after the
timed span and is not part of it.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute  # noqa: E402,F401 (pa.compute)
import pyarrow.parquet as pq  # noqa: E402
from deltalake import DeltaTable  # noqa: E402
from scipy import sparse  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

_IMPORT_SECONDS = time.perf_counter() - _T_START

# Defaults when the config has no `segment` section (or lacks a key): the rules.
DEFAULTS: dict[str, Any] = {
    "k_values": [7],
    "seed": 42,
    "max_iter": 20,             # Spark MLlib KMeans default
    "tol": 1e-4,                # Spark MLlib KMeans default
    "silhouette_sample": None,  # None: silhouette over every clustered meter
    "min_completeness": 0.9,
    "vacant_kwh": 1.5,
    "typical": "mean",
    "pca_components": None,
}

# Names a `segment` config section might give each parameter (first found wins).
_ALIASES = {
    "seed": ("seed", "kmeans_seed", "random_seed"),
    "max_iter": ("max_iter", "max_iterations", "maxiter"),
    "tol": ("tol", "tolerance"),
    "silhouette_sample": ("silhouette_sample_meters", "silhouette_sample", "silhouette_sample_size", "sample_size"),
    "min_completeness": ("min_completeness", "completeness_min", "min_day_completeness"),
    "vacant_kwh": ("vacant_max_daily_kwh", "vacant_kwh", "vacant_max_kwh", "vacant_daily_kwh", "vacancy_kwh", "vacant_mean_daily_kwh",
                   "vacant_below_kwh"),
    "typical": ("typical_shape", "typical", "shape_average", "typical_method"),
    "pca_components": ("pca_components", "pca_k", "pca"),
}


def _get(section: Any, name: str) -> Any:
    if section is None:
        return None
    if isinstance(section, dict):
        return section.get(name)
    return getattr(section, name, None)


def segment_params(settings) -> tuple[dict[str, Any], dict[str, str]]:
    """The segmentation parameters to mirror, and where each came from ('config: segment.x' or 'default')."""
    section = getattr(settings, "segment", None)
    params, source = dict(DEFAULTS), {k: "default" for k in DEFAULTS}
    for key, names in _ALIASES.items():
        for name in names:
            value = _get(section, name)
            if value is not None:
                params[key], source[key] = value, f"config: segment.{name}"
                break
    # k: a list, a fixed k, or a [k_min, k_max] range.
    for name in ("k_values", "ks", "k_range", "k"):
        value = _get(section, name)
        if value is None:
            continue
        if isinstance(value, int):
            ks = [value]
        elif isinstance(value, dict):
            ks = list(range(int(value.get("min", value.get("k_min"))), int(value.get("max", value.get("k_max"))) + 1))
        else:
            ks = [int(v) for v in value]
            if name == "k_range" and len(ks) == 2:
                ks = list(range(ks[0], ks[1] + 1))
        params["k_values"], source["k_values"] = ks, f"config: segment.{name}"
        break
    else:
        k_min, k_max = _get(section, "k_min"), _get(section, "k_max")
        if k_min is not None and k_max is not None:
            params["k_values"], source["k_values"] = list(range(int(k_min), int(k_max) + 1)), "config: segment.k_min/k_max"
    typical = str(params["typical"]).lower()
    params["typical"] = "energy" if typical.startswith(("energy", "weighted")) else "mean"
    if isinstance(params["pca_components"], bool) or params["pca_components"] in (0, "none", "off"):
        params["pca_components"] = None
    return params, source


def silhouette_sqeuclidean(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette with squared Euclidean distance, exact, in O(n * k * d).

    For squared Euclidean the mean distance from x to a cluster C is
    |x|^2 - 2 x.mean_C + mean_C(|y|^2), so no pairwise matrix is needed (Spark's
    ClusteringEvaluator uses the same identity). Equals scikit-learn's
    ``silhouette_score(x, labels, metric="sqeuclidean")`` (own cluster without the point itself).
    """
    ids, labels = np.unique(labels, return_inverse=True)
    k = len(ids)
    if k < 2:
        return float("nan")
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    centroids = np.zeros((k, x.shape[1]))
    np.add.at(centroids, labels, x)
    centroids /= counts[:, None]
    mean_sq = np.bincount(labels, weights=sq, minlength=k) / counts
    dist = sq[:, None] - 2.0 * (x @ centroids.T) + mean_sq[None, :]  # (n, k) mean sq. distance to each cluster
    dist = np.maximum(dist, 0.0)
    rows = np.arange(len(x))
    own_n = counts[labels]
    a = np.where(own_n > 1, dist[rows, labels] * own_n / np.maximum(own_n - 1, 1), 0.0)
    dist[rows, labels] = np.inf
    b = dist.min(axis=1)
    s = np.where(own_n > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


def expected_intervals(first: dt.date, last: dt.date, time_zone: str, interval_minutes: int) -> np.ndarray:
    """Intervals in each local day from ``first`` to ``last`` (92/100 on DST change days for 15 minutes)."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(time_zone)
    out = []
    day = first
    while day <= last:
        start = dt.datetime.combine(day, dt.time(), zone)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
        out.append((end.timestamp() - start.timestamp()) // (interval_minutes * 60))
        day += dt.timedelta(days=1)
    return np.array(out, dtype=np.float64)


def _slot_sql(n_slots: int) -> str:
    return ",\n".join(f"  coalesce(sum(kwh) FILTER (WHERE slot = {i}), 0.0) AS s{i}" for i in range(n_slots))


def run(lake_root: str, first: dt.date, last: dt.date, *, interval_minutes: int, time_zone: str,
        params: dict[str, Any], out_parquet: str, clean_path: str | None = None) -> dict[str, Any]:
    """The reference pipeline; returns timings and counts (see module docstring)."""
    steps: dict[str, float] = {}
    cpu0 = os.times()
    t0 = time.perf_counter()
    tick = t0

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        steps[name] = round(now - tick, 3)
        tick = now

    n_slots = 1440 // interval_minutes
    table_path = clean_path or os.path.join(lake_root, "silver", "ami_clean")
    files = DeltaTable(table_path).file_uris()
    con = duckdb.connect()
    # One row per meter-day; its readings' slots and kWh as two lists, scattered into the
    # 96-slot row below by one bincount per batch. (96 `sum(kwh) FILTER (WHERE slot = i)`
    # aggregates give the same numbers but evaluate 96 filters per reading: ~20x slower.)
    query = f"""
        SELECT meter_id, date, isodow(date) >= 6 AS is_weekend, count(*)::INTEGER AS present,
               list(slot::SMALLINT) FILTER (WHERE slot BETWEEN 0 AND {n_slots - 1}) AS slots,
               list(coalesce(kwh, 0.0)) FILTER (WHERE slot BETWEEN 0 AND {n_slots - 1}) AS kwhs
        FROM read_parquet($files, hive_partitioning = true, hive_types = {{'date': DATE}})
        WHERE date BETWEEN $first AND $last
        GROUP BY meter_id, date
    """
    reader = con.sql(query, params={"files": files, "first": first, "last": last}).to_arrow_reader(batch_size=200_000)
    ids, date_parts, present_parts, weekend_parts, slot_parts = [], [], [], [], []
    for batch in reader:
        slots, kwhs = batch.column("slots"), batch.column("kwhs")
        lengths = pa.compute.list_value_length(slots).fill_null(0).to_numpy()
        row = np.repeat(np.arange(batch.num_rows, dtype=np.int64), lengths)
        flat_slot = slots.flatten().to_numpy().astype(np.int64)
        flat_kwh = kwhs.flatten().to_numpy()
        # Same rule as the Spark shapes: a missing slot is 0 kWh, two readings in one slot add up.
        slot_parts.append(np.bincount(row * n_slots + flat_slot, weights=flat_kwh,
                                      minlength=batch.num_rows * n_slots).reshape(batch.num_rows, n_slots))
        ids.append(batch.column("meter_id"))
        date_parts.append(batch.column("date").to_numpy(zero_copy_only=False))
        present_parts.append(batch.column("present").to_numpy(zero_copy_only=False))
        weekend_parts.append(batch.column("is_weekend").to_numpy(zero_copy_only=False))
    n_meter_days = sum(len(p) for p in present_parts)
    lap("duckdb_meter_day")

    slot_kwh = np.concatenate(slot_parts) if slot_parts else np.zeros((0, n_slots))
    del slot_parts
    enc = (pa.chunked_array([a.cast(pa.string()) for a in ids], pa.string()) if ids
           else pa.chunked_array([], pa.string())).combine_chunks().dictionary_encode()
    meter_ids, meter_codes = enc.dictionary, enc.indices.to_numpy()
    dates = np.concatenate(date_parts).astype("datetime64[D]") if date_parts else np.zeros(0, "datetime64[D]")
    present = np.concatenate(present_parts) if present_parts else np.zeros(0)
    is_weekend = np.concatenate(weekend_parts) if weekend_parts else np.zeros(0, bool)
    # DuckDB's group order varies with its threads: put meters in meter_id order and each
    # meter's days in date order, so the silhouette sample and every sum are the same on a rerun.
    by_id = pa.compute.sort_indices(meter_ids).to_numpy()
    rank = np.empty_like(by_id)
    rank[by_id] = np.arange(len(by_id))
    meter_ids, meter_codes = meter_ids.take(pa.array(by_id)), rank[meter_codes]
    order = np.lexsort((dates, meter_codes))
    slot_kwh, meter_codes, dates = slot_kwh[order], meter_codes[order], dates[order]
    present, is_weekend = present[order], is_weekend[order]
    calendar = expected_intervals(first, last, time_zone, interval_minutes)
    day_index = (dates - np.datetime64(first, "D")).astype(np.int64)
    expected = calendar[np.clip(day_index, 0, len(calendar) - 1)]

    daily_kwh = slot_kwh.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.where(daily_kwh[:, None] > 0, slot_kwh / daily_kwh[:, None], 1.0 / n_slots)
    completeness = np.minimum(1.0, present / expected)
    lap("daily_shape")

    keep = completeness >= params["min_completeness"]
    n_meters = len(meter_ids)
    # Groups: (meter, weekend) over kept days; sums by a sparse indicator product.
    group = meter_codes[keep] * 2 + is_weekend[keep].astype(np.int64)
    n_kept = int(keep.sum())
    ind = sparse.csr_matrix((np.ones(n_kept), (group, np.arange(n_kept))), shape=(2 * n_meters, n_kept))
    day_count = np.asarray(ind.sum(axis=1)).ravel()
    energy = ind @ daily_kwh[keep]
    if params["typical"] == "energy":
        sums = ind @ slot_kwh[keep]
        with np.errstate(divide="ignore", invalid="ignore"):
            typical = np.where(energy[:, None] > 0, sums / energy[:, None], 1.0 / n_slots)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            typical = (ind @ shape[keep]) / day_count[:, None]
    typical = typical.reshape(n_meters, 2, n_slots)
    has = day_count.reshape(n_meters, 2) > 0
    # A meter without weekend (or weekday) days uses its other shape for both halves.
    typical[~has[:, 1], 1] = typical[~has[:, 1], 0]
    typical[~has[:, 0], 0] = typical[~has[:, 0], 1]
    meter_days = has.any(axis=1)
    total_days = day_count.reshape(n_meters, 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_daily = energy.reshape(n_meters, 2).sum(axis=1) / total_days
    vacant = meter_days & (mean_daily < params["vacant_kwh"])
    clustered = meter_days & ~vacant
    features = typical[clustered].reshape(int(clustered.sum()), 2 * n_slots)
    lap("typical_shapes")

    if params["pca_components"]:
        from sklearn.decomposition import PCA

        features = PCA(n_components=int(params["pca_components"]), random_state=params["seed"]).fit_transform(features)
        lap("pca")

    def kmeans(k: int, x: np.ndarray) -> KMeans:
        return KMeans(n_clusters=int(k), init="k-means++", n_init=1, max_iter=int(params["max_iter"]),
                      tol=float(params["tol"]), random_state=int(params["seed"])).fit(x)

    # Like the Spark stage: with a sample size below the meter count, each k is fitted and
    # scored on a seeded sample and the chosen k is then fitted once on every meter.
    n_active = len(features)
    ks = [k for k in params["k_values"] if k < n_active] or [min(params["k_values"])]
    sample_size = int(params["silhouette_sample"] or 0)
    sampled = 0 < sample_size < n_active
    fit_on = (features[np.sort(np.random.default_rng(int(params["seed"])).choice(n_active, sample_size, replace=False))]
              if sampled else features)
    per_k = []
    best = None
    for k in ks:
        t_k = time.perf_counter()
        model = kmeans(k, fit_on)
        t_fit = time.perf_counter() - t_k
        sil = silhouette_sqeuclidean(fit_on, model.labels_)
        per_k.append({"k": int(k), "silhouette": round(sil, 5), "iterations": int(model.n_iter_),
                      "fit_seconds": round(t_fit, 3), "seconds": round(time.perf_counter() - t_k, 3)})
        if best is None or sil > best[0]:
            best = (sil, int(k), model)
    lap("kmeans_select")
    if sampled:
        best = (best[0], best[1], kmeans(best[1], features))
        lap("kmeans_refit_all")
    best = (best[0], best[1], best[2].labels_)

    segment = np.full(n_meters, -1, dtype=np.int32)
    segment[clustered] = best[2]
    out = pa.table({"meter_id": meter_ids, "segment_id": pa.array(segment),
                    "vacant": pa.array(vacant), "k": pa.array(np.full(n_meters, best[1], dtype=np.int32))})
    out = out.filter(pa.array(meter_days))
    os.makedirs(os.path.dirname(os.path.abspath(out_parquet)), exist_ok=True)
    pq.write_table(out, out_parquet)
    lap("write_parquet")

    cpu1 = os.times()
    return {
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 3),
        "steps": steps,
        "typical": params["typical"],
        "input_files": len(files),
        "meter_days": int(n_meter_days),
        "input_rows": int(present.sum()),
        "complete_days": n_kept,
        "meters": int(meter_days.sum()),
        "vacant_meters": int(vacant.sum()),
        "clustered_meters": int(clustered.sum()),
        "k": best[1],
        "k_selection_sample": len(fit_on),
        "silhouette": round(best[0], 5),
        "per_k": per_k,
        "assignments": out_parquet,
        "_labels": (meter_ids, segment, vacant, meter_days, features, clustered),
    }


def accuracy_vs_truth(lake_root: str, meter_ids: pa.Array, segment: np.ndarray, vacant: np.ndarray,
                      has_days: np.ndarray, features: np.ndarray, clustered: np.ndarray,
                      params: dict[str, Any]) -> dict[str, Any] | None:
    """ARI of the segments against the planted archetypes (non-vacant meters) and vacancy precision/recall.

    Also ``ari_at_true_k``: KMeans with k = the number of planted non-vacant archetypes
    on every clustered meter, which tells the typical-shape rule's own quality apart
    from the luck of the silhouette's choice of k.
    """
    path = os.path.join(lake_root, "truth", "meters")
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        return None
    truth = DeltaTable(path).to_pyarrow_table(columns=["meter_id", "archetype"])
    arche = dict(zip(truth.column("meter_id").to_pylist(), truth.column("archetype").to_pylist()))
    ids = meter_ids.to_pylist()
    planted = np.array([arche.get(m) for m in ids], dtype=object)
    known = has_days & (planted != None)  # noqa: E711 (element-wise)
    truly_vacant = planted == "vacant"
    tp = int((vacant & truly_vacant & known).sum())
    pred_v = int((vacant & known).sum())
    true_v = int((truly_vacant & known).sum())
    mask = known & ~vacant & ~truly_vacant
    true_k = len(set(planted[mask]))
    at_k = None
    if clustered.sum() > true_k >= 2:
        fit = KMeans(n_clusters=true_k, init="k-means++", n_init=1, max_iter=int(params["max_iter"]),
                     tol=float(params["tol"]), random_state=int(params["seed"])).fit(features)
        seg_k = np.full(len(segment), -1)
        seg_k[clustered] = fit.labels_
        at_k = round(float(adjusted_rand_score(planted[mask].astype(str), seg_k[mask])), 4)
    return {
        "true_k": true_k,
        "ari_at_true_k": at_k,
        "ari_vs_archetype": round(float(adjusted_rand_score(planted[mask].astype(str), segment[mask])), 4),
        "ari_meters": int(mask.sum()),
        "purity": round(_purity(planted[mask].astype(str), segment[mask]), 4),
        "vacant_precision": round(tp / pred_v, 4) if pred_v else None,
        "vacant_recall": round(tp / true_v, 4) if true_v else None,
    }


def _purity(truth: np.ndarray, labels: np.ndarray) -> float:
    """Share of meters whose segment's majority archetype is their own."""
    if len(labels) == 0:
        return float("nan")
    hits = 0
    for seg in np.unique(labels):
        _, counts = np.unique(truth[labels == seg], return_counts=True)
        hits += counts.max()
    return hits / len(labels)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lake-root", required=True)
    p.add_argument("--first", type=dt.date.fromisoformat, required=True, help="first local day of the window")
    p.add_argument("--last", type=dt.date.fromisoformat, required=True, help="last local day of the window")
    p.add_argument("--typical", choices=("mean", "energy"), help="typical-shape rule (default: from config, else mean)")
    p.add_argument("--env", default="local")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--assignments", help="Parquet file for the assignments (default: <lake-root>/_bench/reference_<typical>.parquet)")
    p.add_argument("--out", help="write the result JSON here (default: stdout)")
    args = p.parse_args(argv)

    from gridpersona.config import load_settings

    settings = load_settings(args.env, [*args.overrides, f"lake.root={args.lake_root}"])
    params, source = segment_params(settings)
    if args.typical:
        params["typical"], source["typical"] = args.typical, "command line"
    clean_path = settings.lake.locations.get("silver.ami_clean")
    out_parquet = args.assignments or os.path.join(args.lake_root, "_bench", f"reference_{params['typical']}.parquet")
    result = run(args.lake_root, args.first, args.last, interval_minutes=settings.ami.interval_minutes,
                 time_zone=settings.ami.time_zone, params=params, out_parquet=out_parquet, clean_path=clean_path)
    # Peak of the whole process up to the written assignments (Linux reports KB).
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["import_seconds"] = round(_IMPORT_SECONDS, 3)
    result["params"] = params
    result["param_source"] = source
    meter_ids, segment, vacant, has_days, features, clustered = result.pop("_labels")
    result["accuracy"] = accuracy_vs_truth(args.lake_root, meter_ids, segment, vacant, has_days, features, clustered,
                                           params)
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
