"""Segment portraits for analysts: the bounded data behind the pictures, and the pictures.

Shared by ``notebooks/segment_portraits.ipynb`` and ``gridpersona report`` so the
notebook and the report show the same thing. Loaders read the gold tables of one
as-of and return small Python structures (one row per segment, tag value or
campaign: aggregated in Spark, never whole tables on the driver); plotters take
those and return matplotlib figures. A section whose table does not exist for the
as-of loads as ``None`` and is shown as "not computed for this as-of".

The radar chart follows seed 003 §4.1 (portrait visualisation with radar charts):
each axis is one portrait attribute, min-max scaled across the segments.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from typing import Any, Sequence

from pyspark.sql import functions as F

from gridpersona.contracts.bronze import AMI_INTERVAL
from gridpersona.contracts.campaigns import CAMPAIGN_EVALUATION, CAMPAIGN_TARGETS
from gridpersona.contracts.ops import JOB_RUNS
from gridpersona.contracts.segments import SEGMENT_PROFILE
from gridpersona.contracts.silver import AMI_CLEAN, AMI_QUARANTINE, METER_DAY_QUALITY
from gridpersona.contracts.tags import CUSTOMER_TAGS, TAG_CATALOG

# A tag's null ("not determinable") is shown as this value, always last and in its own neutral grey.
UNKNOWN = "unknown"
UNKNOWN_COLOR = "#b8b8b8"

NOT_COMPUTED = "not computed for this as-of"

# Categorical tags of gold.customer_tags (the tags/campaigns contract) shown as distributions.
CATEGORICAL_TAGS = ("consumption_level", "price_sensitivity", "payment_channel_pref", "credit_rating",
                    "interaction_channel_pref", "campaign_participation", "churn_risk", "electrification_potential")
BOOLEAN_TAGS = ("ev_owner", "vacancy", "bill_shock_risk", "high_value_stable", "green_eco", "smart_tech")

# Radar axes: (key, label). peak_to_mean comes from the weekday centroid.
RADAR_AXES = (("mean_daily_kwh", "kWh/day (log)"), ("peak_share", "peak share"), ("valley_share", "valley share"),
              ("load_factor", "load factor"), ("weekend_ratio", "weekend ratio"), ("peak_to_mean", "peak/mean"))

_VALUE_ORDER = ("high", "medium", "low", "good", "poor", "active", "occasional", "never", "online", "offline",
                "auto_debit", "app", "hotline", "service_hall")


# ------------------------------------------------------------------ loading


def _as_of_rows(lake, table: str, as_of: dt.date):
    """The table's rows of ``as_of`` as a DataFrame, or None when the table or the as-of is absent."""
    if not lake.exists(table):
        return None
    df = lake.read(table)
    if "as_of" in df.columns:
        df = df.filter(F.col("as_of") == F.lit(as_of))
    return df if df.limit(1).count() else None


def latest_as_of(lake) -> dt.date | None:
    """The newest as-of that gold.segment_profile holds (from the Delta log, no Spark job)."""
    if not lake.exists(SEGMENT_PROFILE.name):
        return None
    values = [v for v in lake.partition_values(SEGMENT_PROFILE.name, "as_of") if v is not None]
    return max(values) if values else None


def load_segment_portraits(lake, as_of: dt.date) -> list[dict] | None:
    """One dict per segment of gold.segment_profile at ``as_of`` (largest first), with ``peak_to_mean`` added."""
    df = _as_of_rows(lake, SEGMENT_PROFILE.name, as_of)
    if df is None:
        return None
    keep = ["segment_id", "segment_label", "segment_name_zh", "segment_name_en", "model_version", "meters", "share",
            "mean_daily_kwh", "peak_share", "flat_share", "valley_share", "load_factor", "weekend_ratio",
            "mean_distance", "centroid_shape"]
    rows = [r.asDict() for r in df.select(*[c for c in keep if c in df.columns]).collect()]
    for r in rows:
        shape = r.get("centroid_shape") or []
        weekday = [x for x in shape[: len(shape) // 2] if x is not None]
        mean = sum(weekday) / len(weekday) if weekday else 0
        r["peak_to_mean"] = max(weekday) / mean if mean else None
    rows.sort(key=lambda r: (-r["meters"], r["segment_id"]))
    return rows


def load_tag_distributions(lake, as_of: dt.date, tags: Sequence[str] = CATEGORICAL_TAGS + BOOLEAN_TAGS
                           ) -> dict[str, dict[str, int]] | None:
    """{tag: {value: customers}} over gold.customer_tags at ``as_of``; None if absent.

    Values as text (booleans ``true``/``false``); null (not determinable) as :data:`UNKNOWN`, listed last.
    """
    df = _as_of_rows(lake, CUSTOMER_TAGS.name, as_of)
    if df is None:
        return None
    present = [t for t in tags if t in df.columns]
    if not present:
        return {}
    # One pass: stack (tag, value) pairs and count them.
    pairs = F.explode(F.array(*[F.struct(F.lit(t).alias("tag"), F.coalesce(F.col(t).cast("string"), F.lit(UNKNOWN)).alias("value"))
                                for t in present])).alias("p")
    counts = df.select(pairs).groupBy("p.tag", "p.value").count().collect()
    out: dict[str, dict[str, int]] = {t: {} for t in present}
    for r in counts:
        out[r["tag"]][r["value"]] = int(r["count"])
    return {t: dict(sorted(v.items(), key=lambda kv: _value_rank(kv[0]))) for t, v in out.items()}


def _value_rank(value: str) -> tuple[int, str]:
    return (_VALUE_ORDER.index(value), value) if value in _VALUE_ORDER else (len(_VALUE_ORDER) + (value == UNKNOWN), value)


def load_tag_coverage(lake, as_of: dt.date) -> dict[str, float | None] | None:
    """{tag: share of customers with a known value} at ``as_of``, in catalog order; None if nothing is tagged.

    From gold.tag_catalog's ``coverage`` (written by the tags stage); computed from gold.customer_tags when the
    catalog predates that column.
    """
    catalog = _as_of_rows(lake, TAG_CATALOG.name, as_of)
    if catalog is not None and "coverage" in catalog.columns:
        return {r["code"]: r["coverage"] for r in catalog.select("position", "code", "coverage").orderBy("position").collect()}
    tags = _as_of_rows(lake, CUSTOMER_TAGS.name, as_of)
    if tags is None:
        return None
    present = [t for t in CATEGORICAL_TAGS + BOOLEAN_TAGS if t in tags.columns]
    n = F.count(F.lit(1))
    row = tags.agg(*[(F.count(F.col(t)) / n).alias(t) for t in present]).first()
    return {t: row[t] for t in present}


def load_boolean_tags_by_segment(lake, as_of: dt.date, tags: Sequence[str] = BOOLEAN_TAGS) -> list[dict] | None:
    """Per segment label: customers and the share with each boolean tag true; None if gold.customer_tags is absent."""
    df = _as_of_rows(lake, CUSTOMER_TAGS.name, as_of)
    if df is None:
        return None
    present = [t for t in tags if t in df.columns]
    aggs = [F.count(F.lit(1)).alias("customers")] + [F.avg(F.col(t).cast("double")).alias(t) for t in present]
    rows = df.groupBy(F.coalesce("segment_label", F.lit("unsegmented")).alias("segment_label")).agg(*aggs).collect()
    return sorted((r.asDict() for r in rows), key=lambda r: -r["customers"])


# gold.campaign_evaluation columns the funnel carries, per campaign row (names as written by the evaluate stage).
FUNNEL_EVALUATION_COLUMNS = ("targets_without_response", "n_treatment", "responders_treatment", "rate_treatment",
                             "n_control", "responders_control", "rate_control", "uplift", "uplift_ci_low",
                             "uplift_ci_high", "confidence", "significant", "family_size", "family_confidence",
                             "uplift_family_low", "uplift_family_high", "significant_family")


def load_campaign_funnel(lake, as_of: dt.date) -> list[dict] | None:
    """Per campaign at ``as_of``, one dict (by campaign_id); None if gold.campaign_targets has no rows for it.

    From gold.campaign_targets: ``targeted`` (targets), ``treatment`` and
    ``control`` (targets by ``ab_group``). From the ``campaign`` rows of
    gold.campaign_evaluation, when it holds the as-of (``evaluated``), the
    columns of :data:`FUNNEL_EVALUATION_COLUMNS` under their own names
    (absent keys otherwise). ``customers``: tagged customers of the as-of, or None.
    """
    targets = _as_of_rows(lake, CAMPAIGN_TARGETS.name, as_of)
    if targets is None:
        return None
    _require_columns(CAMPAIGN_TARGETS.name, targets.columns, ("campaign_id", "ab_group"), CAMPAIGN_TARGETS.schema)
    group = F.col("ab_group")
    counts = targets.groupBy("campaign_id").agg(
        F.count(F.lit(1)).alias("targeted"),
        F.sum((group == "treatment").cast("long")).alias("treatment"),
        F.sum((group == "control").cast("long")).alias("control"))
    rows = {r["campaign_id"]: r.asDict() for r in counts.collect()}
    tags = _as_of_rows(lake, CUSTOMER_TAGS.name, as_of)
    customers = tags.count() if tags is not None else None
    evaluation = _as_of_rows(lake, CAMPAIGN_EVALUATION.name, as_of)
    if evaluation is not None:
        _require_columns(CAMPAIGN_EVALUATION.name, evaluation.columns, ("campaign_id", "level", *FUNNEL_EVALUATION_COLUMNS),
                         CAMPAIGN_EVALUATION.schema)
        top = evaluation.filter(F.col("level") == "campaign").select("campaign_id", *FUNNEL_EVALUATION_COLUMNS)
        for r in top.collect():
            entry = rows.setdefault(r["campaign_id"], {"campaign_id": r["campaign_id"], "targeted": 0, "treatment": 0,
                                                       "control": 0})
            entry.update({c: r[c] for c in FUNNEL_EVALUATION_COLUMNS})
    out = sorted(rows.values(), key=lambda r: r["campaign_id"])
    for r in out:
        r["customers"] = customers
        r["evaluated"] = evaluation is not None
    return out


def _require_columns(table: str, have: Sequence[str], needed: Sequence[str], contract) -> None:
    """A table written before (or without) its contract's columns fails naming them, not with a KeyError later."""
    missing = [c for c in needed if c not in have]
    if missing:
        raise ValueError(f"{table} lacks column(s) {missing} of its contract ({len(contract.fields)} columns: "
                         f"{', '.join(contract.fieldNames())}); rerun the stage that writes it")


def load_job_runs(lake, as_of: dt.date) -> list[dict] | None:
    """The stages of the latest run for ``as_of`` in ops.job_runs (one row per stage, in run order): end rows
    (succeeded / failed) only; a stage's ``running`` row says nothing of its outcome."""
    if not lake.exists(JOB_RUNS.name):
        return None
    rows = [r for r in lake.read_arrow(JOB_RUNS.name).to_pylist() if r["as_of"] == as_of and r["status"] != "running"]
    if not rows:
        return None
    # Latest attempt of each stage for the as-of: stages may run in separate runs (daily / monthly).
    latest: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["started_at"]):
        latest[r["stage"]] = r
    keep = ("run_id", "stage", "status", "started_at", "duration_s", "rows_in", "rows_out", "outputs", "window_days",
            "config_hash", "code_version")
    return [{k: r[k] for k in keep} for r in sorted(latest.values(), key=lambda r: r["started_at"])]


def _clean_read_version(lake, as_of: dt.date) -> int | None:
    """The bronze.ami_interval version the newest succeeded clean run of ``as_of`` read (None: unknown)."""
    from gridpersona.stages.runner import stage_runs

    for run in stage_runs(lake, as_of=as_of):
        if run["stage"] == "clean" and run["status"] == "succeeded":
            return run["versions_read"].get(AMI_INTERVAL.name)
    return None


def load_data_quality(lake, as_of: dt.date, window_days: int) -> dict | None:
    """Reconciliation and fault figures of the clean stage's window ending on ``as_of``.

    raw rows (Delta log statistics), clean rows by quality, quarantined rows by reason,
    meter-days complete / incomplete; None when the silver tables are absent.
    """
    needed = (AMI_INTERVAL.name, AMI_CLEAN.name, AMI_QUARANTINE.name, METER_DAY_QUALITY.name)
    if not all(lake.exists(t) for t in needed):
        return None
    first = as_of - dt.timedelta(days=window_days - 1)
    in_window = F.col("date").between(F.lit(first), F.lit(as_of))
    # Raw rows of the bronze version the clean run read: rows ingested since are the next run's.
    raw = lake.read(AMI_INTERVAL.name, _clean_read_version(lake, as_of)).filter(in_window).count()
    clean = {r["quality"]: int(r["count"]) for r in lake.read(AMI_CLEAN.name).filter(in_window).groupBy("quality").count().collect()}
    quarantine = {r["reason"]: int(r["count"]) for r in lake.read(AMI_QUARANTINE.name).filter(in_window).groupBy("reason").count().collect()}
    days = lake.read(METER_DAY_QUALITY.name).filter(in_window).agg(
        F.count(F.lit(1)).alias("meter_days"), F.sum(F.col("complete").cast("long")).alias("complete"),
        F.sum("missing_intervals").alias("missing_intervals")).collect()[0]
    kept = clean.get("measured", 0) + clean.get("outlier_replaced", 0)
    return {"first": first, "last": as_of, "raw_rows": raw, "clean_by_quality": clean, "quarantine_by_reason": quarantine,
            "kept_rows": kept, "quarantined_rows": sum(quarantine.values()), "reconciled": kept + sum(quarantine.values()) == raw,
            "meter_days": int(days["meter_days"] or 0), "complete_meter_days": int(days["complete"] or 0),
            "missing_intervals": int(days["missing_intervals"] or 0)}


# ------------------------------------------------------------------ plotting


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    # CJK names are in the tables; the plots use the English names so no CJK font is needed.
    return plt


def segment_title(r: dict) -> str:
    return f"{r['segment_id']} {r['segment_name_en']} ({r['meters']:,})"


def plot_centroid_curves(portraits: list[dict]):
    """Small multiples: each segment's typical weekday (solid) and weekend (dashed) shape over the day."""
    plt = _plt()
    n = len(portraits)
    cols = min(4, n) or 1
    rows = (n + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), sharex=True, squeeze=False)
    for ax, r in zip(axes.flat, portraits):
        shape = [x if x is not None else float("nan") for x in (r.get("centroid_shape") or [])]
        half = len(shape) // 2
        if half:
            hours = [24 * i / half for i in range(half)]
            ax.plot(hours, shape[:half], color="tab:blue", lw=1.6, label="weekday")
            ax.plot(hours, shape[half:], color="tab:orange", lw=1.2, ls="--", label="weekend")
        ax.set_title(segment_title(r), fontsize=9)
        ax.set_xticks([0, 6, 12, 18, 24])
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.supxlabel("hour of day (local)", fontsize=9)
    fig.supylabel("share of daily kWh per slot", fontsize=9)
    fig.suptitle("Segment centroids: typical daily load curves", fontsize=11)
    fig.tight_layout()
    return fig


def radar_values(portraits: list[dict], axes: Sequence[tuple[str, str]] = RADAR_AXES) -> list[list[float]]:
    """Per segment, each radar attribute min-max scaled to [0, 1] across the segments (0.5 when all equal;
    kWh/day on a log scale)."""
    import math

    out = [[0.0] * len(axes) for _ in portraits]
    for j, (key, _) in enumerate(axes):
        values = [r.get(key) for r in portraits]
        if key == "mean_daily_kwh":
            # Commercial segments use tens of times what households do: a log scale keeps households apart.
            values = [None if v is None else math.log10(max(v, 0.01)) for v in values]
        known = [v for v in values if v is not None]
        lo, hi = (min(known), max(known)) if known else (0.0, 0.0)
        for i, v in enumerate(values):
            out[i][j] = 0.0 if v is None else (0.5 if hi == lo else (v - lo) / (hi - lo))
    return out


def plot_segment_radar(portraits: list[dict], axes: Sequence[tuple[str, str]] = RADAR_AXES):
    """Radar chart of key features per segment (seed 003 §4.1), min-max scaled across segments."""
    import math

    plt = _plt()
    values = radar_values(portraits, axes)
    angles = [2 * math.pi * j / len(axes) for j in range(len(axes))]
    fig = plt.figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot(projection="polar")
    for r, vals in zip(portraits, values):
        ax.plot(angles + angles[:1], vals + vals[:1], lw=1.4, label=segment_title(r))
        ax.fill(angles + angles[:1], vals + vals[:1], alpha=0.06)
    ax.set_xticks(angles)
    ax.set_xticklabels([label for _, label in axes], fontsize=8)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.set_yticklabels([])
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left", bbox_to_anchor=(1.05, 1.0), fontsize=7)
    ax.set_title("Segment portraits (each axis min-max scaled across segments)", fontsize=10, pad=16)
    fig.tight_layout()
    return fig


def plot_tag_distributions(dist: dict[str, dict[str, int]], coverage: dict[str, float | None] | None = None):
    """One 100 % stacked bar per tag: the share of customers holding each value; ``unknown`` in neutral grey.

    ``coverage`` (tag -> share known) is written beside each tag's name when given.
    """
    plt = _plt()
    tags = list(dist)
    fig, ax = plt.subplots(figsize=(8.5, 0.55 * max(len(tags), 1) + 1.4))
    cmap = plt.get_cmap("tab20")
    # tab20's greys (indexes 14, 15) are left out so that grey means unknown only.
    palette = [cmap(i) for i in range(20) if i not in (14, 15)]
    colors: dict[str, Any] = {UNKNOWN: UNKNOWN_COLOR}
    for i, tag in enumerate(tags):
        counts = dist[tag]
        total = sum(counts.values()) or 1
        left = 0.0
        for value, n in counts.items():
            color = colors.setdefault(value, palette[(len(colors) - 1) % len(palette)])
            width = n / total
            ax.barh(i, width, left=left, color=color, edgecolor="white", label=value)
            if width >= 0.07:
                ax.text(left + width / 2, i, f"{value}\n{width:.0%}", ha="center", va="center", fontsize=6)
            left += width
    ax.set_yticks(range(len(tags)))
    cov = coverage or {}
    ax.set_yticklabels([f"{t} ({cov[t]:.0%} known)" if cov.get(t) is not None else t for t in tags], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:.0%}"))
    ax.set_title("Tag distributions (share of customers)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_campaign_funnel(funnel: list[dict]):
    """Per campaign: targeted -> treatment -> responded (treatment) bars, control beside them."""
    plt = _plt()
    names = [r["campaign_id"] for r in funnel]
    stages = [("targeted", "targeted", "tab:gray"), ("treatment", "treatment (contacted)", "tab:blue"),
              ("responders_treatment", "responded (treatment)", "tab:green"), ("control", "control (holdout)", "tab:orange")]
    stages = [s for s in stages if any(r.get(s[0]) is not None for r in funnel)]
    fig, ax = plt.subplots(figsize=(8.5, 0.7 * max(len(names), 1) + 1.5))
    height = 0.8 / max(len(stages), 1)
    for k, (key, label, color) in enumerate(stages):
        ys = [i + (k - (len(stages) - 1) / 2) * height for i in range(len(names))]
        vals = [r.get(key) or 0 for r in funnel]
        ax.barh(ys, vals, height=height, color=color, label=label)
        for y, v in zip(ys, vals):
            ax.text(v, y, f" {v:,}", va="center", fontsize=6)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("customers", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Campaign funnel", fontsize=10)
    fig.tight_layout()
    return fig


def plot_stage_timings(runs: list[dict]):
    """Seconds per stage of the run, with rows in -> out beside each bar."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * max(len(runs), 1) + 1.2))
    names = [r["stage"] for r in runs]
    secs = [r["duration_s"] or 0 for r in runs]
    ax.barh(range(len(runs)), secs, color=["tab:red" if r["status"] != "succeeded" else "tab:blue" for r in runs])
    for i, r in enumerate(runs):
        ax.text(secs[i], i, f" {secs[i]:.1f} s  ({(r['rows_in'] or 0):,} -> {(r['rows_out'] or 0):,} rows)", va="center", fontsize=7)
    ax.set_yticks(range(len(runs)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(secs + [1]) * 1.6)
    ax.set_xlabel("seconds", fontsize=8)
    ax.set_title("Stage timings", fontsize=10)
    fig.tight_layout()
    return fig


def figure_png(fig, dpi: int = 110) -> bytes:
    """PNG bytes of a figure (closed afterwards)."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
