"""What segment-train, segment-assign and profile share: settings -> model parameters, the run's typical
shapes, and gold.segment_model access.

Model versions
    A model is named by the as-of date it was trained for: ``model_version``
    ``YYYYMMDD``. Its rows in gold.segment_model (one per segment, partition
    ``model_version``) and its MLlib model(s) under
    ``<lake root>/models/segment/v<version>/`` (``kmeans/``, ``pca/`` when PCA is
    on) are replaced by a rerun for the same as-of, so a rerun never adds a
    version. segment-assign uses ``segment.model_version`` when set, else the
    latest version trained on or before its as-of date (never a model that saw
    later data).

Determinism
    The per-meter feature frame (meters x 2n doubles) is computed once per
    run, hash-partitioned by meter into ``segment.partitions`` (default 1)
    partitions, sorted by meter id, cached on the run (``ctx.cache``), and
    reused by segment-assign of the same run while silver.daily_load_shape is
    unchanged (keyed on its Delta version). The training sample is collected
    sorted by meter id and the driver-side sums run elementwise in a fixed
    order, so a rerun gives bit-identical centroids.
"""

from __future__ import annotations

import datetime as dt

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from gridpersona.contracts.segments import SEGMENT_MODEL
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.config import Settings, parse_hhmm_range
from gridpersona.segment.estimator import SegmentParams
from gridpersona.segment.features import flag_vacant, typical_shapes
from gridpersona.segment.labels import DayPart, LabelRule
from gridpersona.stages.runner import StageContext

# ------------------------------------------------------------------ config -> plain parameters


def slots_per_day(settings: Settings) -> int:
    return 1440 // settings.ami.interval_minutes


def label_rules(settings: Settings) -> list[LabelRule]:
    """The ordered label rules of ``segment.labels``."""
    return [LabelRule(lbl.code, lbl.zh, lbl.en, {k: (b.min, b.max) for k, b in lbl.when.items()})
            for lbl in settings.segment.labels]


def day_parts(settings: Settings) -> list[DayPart]:
    """``segment.peak_parts`` as :class:`DayPart` (minutes after local midnight)."""
    return [DayPart(p.code, p.zh, p.en, *parse_hhmm_range(p.hours)) for p in settings.segment.peak_parts]


def label_windows(settings: Settings) -> dict[str, tuple[int, int]]:
    return {name: parse_hhmm_range(text) for name, text in settings.segment.windows.items()}


def segment_params(settings: Settings) -> SegmentParams:
    """``segment.*`` as the estimator's plain parameters."""
    seg = settings.segment
    return SegmentParams(
        slots=slots_per_day(settings), typical_shape=seg.typical_shape, k=seg.k, k_min=seg.k_min, k_max=seg.k_max,
        train_sample_meters=seg.train_sample_meters, ward_sample_meters=seg.ward_sample_meters,
        stability_splits=seg.stability_splits, silhouette_tolerance=seg.silhouette_tolerance,
        weak_silhouette=seg.weak_silhouette, max_iter=seg.max_iter, tol=seg.tol, pca_components=seg.pca_components,
        seed=int(seg.seed), vacant_max_daily_kwh=seg.vacant_max_daily_kwh, vacant_segment_id=seg.vacant_segment_id,
        label_rules=tuple(label_rules(settings)), day_parts=tuple(day_parts(settings)),
        windows=label_windows(settings), broad_max_peak_to_mean=seg.broad_max_peak_to_mean,
        sharp_min_peak_to_mean=seg.sharp_min_peak_to_mean)


def model_version_of(as_of: dt.date) -> str:
    return as_of.strftime("%Y%m%d")


def model_dir(version: str) -> str:
    """Where a model version's MLlib models live, relative to the lake root."""
    return f"models/segment/v{version}"


# ------------------------------------------------------------------ the run's typical shapes


def run_typical_shapes(ctx: StageContext, method: str | None = None) -> DataFrame:
    """The window's typical shapes with ``is_vacant``: cached on the run, sorted, on ``segment.partitions``
    partitions. A later stage of the same run reuses them while the inputs (the silver table's Delta
    version, window, method, thresholds) are unchanged."""
    s = ctx.settings
    seg = s.segment
    method = method or seg.typical_shape
    first, last = ctx.window
    lake = ctx.lake
    if not lake.exists(DAILY_LOAD_SHAPE.name):
        raise RuntimeError(f"{DAILY_LOAD_SHAPE.name}: table not found under {lake.root}; run the shapes stage first "
                           f"(gridpersona run shapes --as-of {ctx.as_of})")
    # The version this stage reads (published, pinned): a crashed run's newer commits do not count.
    version = lake.version(DAILY_LOAD_SHAPE.name)
    committed = lake.history_entry(DAILY_LOAD_SHAPE.name, version)["timestamp"]
    key = (id(ctx.spark), lake.path(DAILY_LOAD_SHAPE.name), version, committed, first, last, method,
           seg.min_completeness, seg.vacant_max_daily_kwh, seg.partitions, slots_per_day(s))

    def compute() -> DataFrame:
        source = "shape" if method == "mean_shape" else "slot_kwh"
        daily = (lake.read(DAILY_LOAD_SHAPE.name).filter(F.col("date").between(first, last))
                 .select("meter_id", "date", "completeness", "is_weekend", "daily_kwh", source))
        feats = typical_shapes(daily, slots=slots_per_day(s), method=method, min_completeness=seg.min_completeness)
        return (flag_vacant(feats, seg.vacant_max_daily_kwh)
                .repartition(seg.partitions, "meter_id").sortWithinPartitions("meter_id")
                .persist(StorageLevel.MEMORY_AND_DISK))

    return ctx.cache.get("segment.typical_shapes", key, compute)


# ------------------------------------------------------------------ model table access


def model_table(lake) -> list[dict]:
    """Every gold.segment_model row (empty when the table does not exist)."""
    if not lake.exists(SEGMENT_MODEL.name):
        return []
    return lake.read_arrow(SEGMENT_MODEL.name).to_pylist()


def latest_model_version(lake, as_of: dt.date) -> str | None:
    """The newest model version trained on or before ``as_of`` (None when there is none)."""
    rows = [r for r in model_table(lake) if r["as_of"] <= as_of]
    return max((r["as_of"], r["model_version"]) for r in rows)[1] if rows else None


def model_segments(lake, version: str) -> list[dict]:
    """gold.segment_model rows of ``version`` sorted by segment id; LookupError naming the versions otherwise."""
    table = model_table(lake)
    rows = sorted((r for r in table if r["model_version"] == version), key=lambda r: r["segment_id"])
    if not rows:
        known = sorted({r["model_version"] for r in table})
        raise LookupError(f"{SEGMENT_MODEL.name}: no model version {version!r} (known versions: {known or 'none'}); "
                          f"run segment-train first or fix segment.model_version")
    return rows


def fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"
