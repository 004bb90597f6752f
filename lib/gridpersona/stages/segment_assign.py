"""segment-assign: silver.daily_load_shape (window) + a trained model -> gold.customer_segments (no retraining).

The model is the version ``segment.model_version`` names, else the latest
trained on or before the as-of (:mod:`.segment_common`), loaded as a
:class:`gridpersona.segment.SegmentModel` from its saved MLlib model(s) and its
gold.segment_model rows.
"""

from __future__ import annotations

import os
import time

from pyspark.sql import functions as F

from gridpersona.contracts.segments import CUSTOMER_SEGMENTS, SEGMENT_MODEL
from gridpersona.contracts.bronze import CUSTOMER_ARCHIVE
from gridpersona.lake import check_schema
from gridpersona.segment.estimator import SegmentModel
from gridpersona.segment.tables import customer_segments, with_dl_segments
from gridpersona.stages.inputs import read_bronze
from gridpersona.stages.runner import StageContext, StageResult
from gridpersona.stages.segment_common import (latest_model_version, model_segments, run_typical_shapes,
                                               slots_per_day)
from gridpersona.stages.segment_dl import assign_dl, dl_enabled, require_torch


def load_model(lake, segments: list[dict]) -> SegmentModel:
    """The saved model these gold.segment_model rows (one version) describe; FileNotFoundError saying how
    to retrain when its MLlib model is missing."""
    head = segments[0]
    path = os.path.join(lake.root, head["model_path"])
    kmeans_path = os.path.join(path, "kmeans")
    if not os.path.isdir(kmeans_path):
        raise FileNotFoundError(f"{SEGMENT_MODEL.name} version {head['model_version']}: saved model missing at "
                                f"{kmeans_path}; retrain with `gridpersona run segment-train --as-of {head['as_of']}`")
    return SegmentModel.load(path, segments)


def run_segment_assign(ctx: StageContext) -> StageResult:
    """silver.daily_load_shape (window) + a trained model -> gold.customer_segments for the as-of (no retraining)."""
    s, seg, lake = ctx.settings, ctx.settings.segment, ctx.lake
    require_torch(s)
    timings: dict[str, float] = {}
    version = seg.model_version or latest_model_version(lake, ctx.as_of)
    if version is None:
        raise LookupError(f"segment-assign: no model in {SEGMENT_MODEL.name} trained on or before {ctx.as_of}; run "
                          f"`gridpersona run segment-train --as-of {ctx.as_of}` or set segment.model_version")
    segments = model_segments(lake, version)
    head = segments[0]
    if head["slots"] != slots_per_day(s):
        raise ValueError(f"model {version} was trained on {head['slots']} slots per day; ami.interval_minutes "
                         f"{s.ami.interval_minutes} gives {slots_per_day(s)}: retrain the model")
    t = time.perf_counter()
    model = load_model(lake, segments)
    timings["load_model"] = time.perf_counter() - t

    t = time.perf_counter()
    # The model's own feature method, so the vectors mean what they meant at training.
    assigned = model.transform(run_typical_shapes(ctx, method=head["typical_shape"]))
    dl_meta = None
    if dl_enabled(s):
        dl, dl_meta = assign_dl(ctx, os.path.join(lake.root, head["model_path"]), version)
        table = ctx.spark.createDataFrame([(r["segment_id"], r["centroid"], r["segment_label"], r["name_zh"],
                                            r["name_en"]) for r in segments],
                                          "segment_id int, centroid array<double>, segment_label string, "
                                          "name_zh string, name_en string")
        assigned = with_dl_segments(assigned, dl, table, replace=seg.method == "dl")
    archive = read_bronze(lake, CUSTOMER_ARCHIVE.name).select("customer_id", "meter_id")
    out = customer_segments(assigned, archive, as_of=ctx.as_of, model_version=version)
    check_schema(CUSTOMER_SEGMENTS.name, CUSTOMER_SEGMENTS.schema, out.schema)
    lake.check_stored_schema(CUSTOMER_SEGMENTS.name, CUSTOMER_SEGMENTS.schema,
                             f"{CUSTOMER_SEGMENTS.name} was written by an older segment-assign (this one adds "
                             f"dl_segment_id, dl_probability); move the table aside and rerun segment-assign for "
                             f"the as-of dates you need")
    written = lake.replace(out, CUSTOMER_SEGMENTS, where={"as_of": ctx.as_of}).rows
    timings["assign_write"] = time.perf_counter() - t

    t = time.perf_counter()
    written_rows = lake.read(CUSTOMER_SEGMENTS.name).filter(F.col("as_of") == F.lit(ctx.as_of))
    counts = {(r["segment_id"], r["segment_label"]): r["count"] for r in
              written_rows.groupBy("segment_id", "segment_label").count().collect()}
    dl_counts = None
    if dl_meta is not None:
        # One pass: meters with a DL segment, their mean probability, and (second opinion) disagreements.
        dl_counts = written_rows.select(
            F.count("dl_segment_id").alias("with_dl"), F.avg("dl_probability").alias("mean_p"),
            F.count(F.when(F.col("dl_segment_id") != F.col("segment_id"), 1)).alias("differ")).first()
    timings["count"] = time.perf_counter() - t
    result = StageResult(rows_in=written, outputs={CUSTOMER_SEGMENTS.name: written})
    result.notes.append(f"{written:,} meters assigned with model {version} (k={head['k']}, {head['typical_shape']})")
    result.notes.append("segments: " + ", ".join(f"{i} {lbl} {n:,}" for (i, lbl), n in sorted(counts.items())))
    if dl_counts is not None:
        with_dl = int(dl_counts["with_dl"])
        mean_p = "-" if dl_counts["mean_p"] is None else f"{dl_counts['mean_p']:.3f}"
        role = "segment_id (segment.method dl)" if seg.method == "dl" else "dl_segment_id (second opinion)"
        result.notes.append(f"dl model ({dl_meta['days']} days, {dl_meta['labels']} labels) wrote {role} for "
                            f"{with_dl:,} of {written:,} meters (mean probability {mean_p}); "
                            f"{written - with_dl:,} without a complete day in its days"
                            + (" keep their KMeans segment" if seg.method == "dl" else
                               f" have nulls; it differs from KMeans on {int(dl_counts['differ']):,}"))
    result.notes.append("timings " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return result
