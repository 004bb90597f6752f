"""segment-train: silver.daily_load_shape (window) -> gold.segment_model + the saved MLlib model(s).

The model is :class:`gridpersona.segment.SegmentEstimator` (how k is chosen,
how segments are named: :mod:`gridpersona.segment.kmeans`,
:mod:`gridpersona.segment.labels`); model versions: :mod:`.segment_common`.

Stable ids
    Training matches its centroids to the latest model trained on or before the
    as-of date, including the version a rerun replaces (whose ids already
    follow the model before it). Matched clusters keep that model's ids; the
    vacancy rule's segment always has ``segment.vacant_segment_id``. So a
    retrain of the same as-of with another seed keeps the ids, and a rerun with
    the same inputs and config reproduces the same rows.
"""

from __future__ import annotations

import os
import shutil
import time

from gridpersona.contracts.segments import SEGMENT_MODEL
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.segment.estimator import SegmentEstimator
from gridpersona.segment.features import vacancy_counts
from gridpersona.stages.runner import StageContext, StageResult, code_version
from gridpersona.stages.segment_common import (fmt, latest_model_version, model_dir, model_segments,
                                               model_version_of, run_typical_shapes, segment_params)
from gridpersona.stages.segment_dl import dl_dir, dl_enabled, require_torch, train_dl_model


def run_segment_train(ctx: StageContext) -> StageResult:
    """silver.daily_load_shape (window) -> gold.segment_model (one row per segment) + MLlib model(s) on disk."""
    s, seg, lake = ctx.settings, ctx.settings.segment, ctx.lake
    version = model_version_of(ctx.as_of)
    require_torch(s)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    feats = run_typical_shapes(ctx)
    n_active, n_vacant = vacancy_counts(feats)
    timings["features"] = time.perf_counter() - t0
    if n_active + n_vacant == 0:
        first, last = ctx.window
        raise RuntimeError(f"segment-train: no meter in {DAILY_LOAD_SHAPE.name} has a day between {first} and {last} with "
                           f"completeness >= {seg.min_completeness}; run shapes for this window first")

    # Ids follow the latest model on or before the as-of (a rerun: the version it replaces, whose ids
    # already follow the earlier model); reference_version names the earlier model they descend from.
    matched_to = latest_model_version(lake, ctx.as_of)
    previous, reference = {}, None
    if matched_to:
        prev_rows = model_segments(lake, matched_to)
        previous = {p["segment_id"]: p["centroid"] for p in prev_rows if p["cluster_index"] is not None}
        reference = prev_rows[0]["reference_version"] if matched_to == version else matched_to
    model = SegmentEstimator(segment_params(s)).fit(feats, previous=previous, counts=(n_active, n_vacant))
    fitted = model.training
    timings.update(fitted.timings)

    # Save the MLlib model(s) before the table row that points at them.
    t = time.perf_counter()
    rel_path = model_dir(version)
    model.save(os.path.join(lake.root, rel_path))
    timings["save"] = time.perf_counter() - t
    dl_notes: list[str] = []
    if dl_enabled(s):
        t = time.perf_counter()
        dl_notes = train_dl_model(ctx, os.path.join(lake.root, rel_path), [g.segment_id for g in model.segments],
                                  model.transform(feats))
        timings["dl"] = time.perf_counter() - t
    else:
        # A rerun of the version without the DL model must not leave an earlier DL model beside new ids.
        shutil.rmtree(dl_dir(os.path.join(lake.root, rel_path)), ignore_errors=True)

    rows = model.segment_rows(model_version=version, as_of=ctx.as_of, window_days=ctx.window_days,
                              reference_version=reference, model_path=rel_path, config_hash=s.config_hash(),
                              code_version=code_version())
    t = time.perf_counter()
    table = ctx.spark.createDataFrame([tuple(r[f.name] for f in SEGMENT_MODEL.schema.fields) for r in rows],
                                      SEGMENT_MODEL.schema)
    lake.check_stored_schema(SEGMENT_MODEL.name, SEGMENT_MODEL.schema,
                             f"{SEGMENT_MODEL.name} was written by an older segment-train (this one adds stability, "
                             f"stability_by_k, weak_structure); move the table aside (and models/segment/) and "
                             f"retrain the as-of dates you need")
    lake.replace(table, SEGMENT_MODEL, where={"model_version": version})
    timings["write"] = time.perf_counter() - t

    total = n_active + n_vacant
    result = StageResult(rows_in=total, outputs={SEGMENT_MODEL.name: len(rows)})
    scores, stability = fitted.silhouette_by_k, fitted.stability_by_k
    sil = ", ".join(f"k={k}: {scores[k]:.3f}/{stability[k]:.2f}" for k in sorted(scores))
    result.notes.append(f"model {version}: k={fitted.k} ({fitted.k_selection}; silhouette/stability on "
                        f"{fitted.train_meters:,} meters: {sil}); {seg.typical_shape} typical shapes of {total:,} "
                        f"meters, {n_vacant:,} by the vacancy rule")
    shown = "not measured" if fitted.stability is None else f"{fitted.stability:.1%}"
    result.notes.append(f"fitted model: silhouette {fitted.silhouette:.3f}, stability {shown} "
                        f"(meters keeping their segment when it is started from half of the meters)")
    if fitted.weak_structure:
        result.notes.append(f"WEAK STRUCTURE: silhouette {fitted.silhouette:.3f} < {seg.weak_silhouette}: the "
                            f"segments are a partition of a continuum, not natural groups; read them as bands of "
                            f"similar curves")
    result.notes.append(f"ids matched to model {matched_to}" if matched_to else "no earlier model: ids in canonical order")
    for r in rows:
        result.notes.append(f"segment {r['segment_id']}: {r['segment_label']} {r['name_zh']} / {r['name_en']}, "
                            f"{r['size']:,} meters ({r['share']:.1%}), {fmt(r['mean_daily_kwh'])} kWh/day")
    result.notes.extend(dl_notes)
    result.notes.append("timings " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return result
