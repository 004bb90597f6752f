"""A customer's portrait page for ``gridpersona report --customer ID`` (seed 003 §4.1: radar and load curve).

Opt-in and customer-level: the report shows it only for the ids asked for. Its figures
come from gold.customer_portrait (the numbers behind the tags, no PII) and are set
against the customer's peers: the customers of the same ``customer_type`` at the as-of.

- Radar: each axis is the customer's percentile among the peers for one portrait figure
  (share of peers with a lower value, ties counted half; 0.5 is the peer median).
- Curves: the customer's weekday and weekend mean slot kWh against the peers' mean curve
  and, when the customer has a segment, the segment centroid's shape scaled to the
  customer's own daily kWh (same energy, the segment's timing).

Loaders return small Python structures (one Spark aggregate per peer group, never the
peers' rows on the driver); plotters return matplotlib figures, as in
:mod:`gridpersona.analyst.portraits`.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Sequence

from pyspark.sql import functions as F

from gridpersona.analyst import portraits as P
from gridpersona.contracts.segments import SEGMENT_PROFILE
from gridpersona.contracts.tags import CUSTOMER_PORTRAIT

# Radar axes: (gold.customer_portrait column, label). Each is read as a percentile among the peers.
PORTRAIT_AXES = (("monthly_mean_kwh", "kWh/month"), ("peak_share", "peak share"), ("valley_share", "valley share"),
                 ("load_factor", "load factor"), ("peak_to_mean", "peak/mean"),
                 ("peak_valley_rate", "peak-valley rate"), ("weekend_ratio", "weekend ratio"),
                 ("daily_kwh_cv", "day-to-day CV"))


def load_customer_portraits(lake, as_of: dt.date, customer_ids: Sequence[str]) -> list[dict]:
    """The gold.customer_portrait rows of ``customer_ids`` at ``as_of``, in the order asked (duplicates once).

    ValueError (one line) when the table is absent or an id has no row for the as-of: the page is asked for
    by id, and a wrong id is the caller's to fix.
    """
    ids = list(dict.fromkeys(customer_ids))
    if not lake.exists(CUSTOMER_PORTRAIT.name):
        raise ValueError(f"report --customer: {CUSTOMER_PORTRAIT.name} does not exist under {lake.root}; run "
                         f"`gridpersona run tags --as-of {as_of}` first")
    rows = {r["customer_id"]: r.asDict() for r in lake.read(CUSTOMER_PORTRAIT.name)
            .filter((F.col("as_of") == F.lit(as_of)) & F.col("customer_id").isin(ids)).collect()}
    unknown = [c for c in ids if c not in rows]
    if unknown:
        raise ValueError(f"report --customer: no customer {', '.join(unknown)} in {CUSTOMER_PORTRAIT.name} for as-of "
                         f"{as_of} (ids are gold.customer_tags.customer_id values of that as-of)")
    return [rows[c] for c in ids]


def load_peer_figures(lake, as_of: dt.date, customer: dict, axes: Sequence[tuple[str, str]] = PORTRAIT_AXES) -> dict:
    """The customer's standing among its peers (same ``customer_type`` at ``as_of``).

    Returns {"peers": customers of the group, "percentile": {axis: share of peers (with a value) below the
    customer's value, ties counted half; None when the customer's value is unknown}, "median": {axis: the
    peers' median}, "known": {axis: peers with a value}, "weekday_curve" / "weekend_curve": the peers'
    mean curve (slot-wise mean over the peers that have one; None when none has)}.
    """
    peers = (lake.read(CUSTOMER_PORTRAIT.name)
             .filter((F.col("as_of") == F.lit(as_of)) & (F.col("customer_type") == F.lit(customer["customer_type"]))))
    aggs = [F.count(F.lit(1)).alias("peers")]
    for key, _ in axes:
        x = customer.get(key)
        aggs += [F.count(F.col(key)).alias(f"{key}__n"), F.median(key).alias(f"{key}__median")]
        if x is not None:
            aggs += [F.count(F.when(F.col(key) < F.lit(x), 1)).alias(f"{key}__below"),
                     F.count(F.when(F.col(key) == F.lit(x), 1)).alias(f"{key}__ties")]
    row = peers.agg(*aggs).first().asDict()
    percentile, median, known = {}, {}, {}
    for key, _ in axes:
        n = row[f"{key}__n"]
        known[key], median[key] = n, row[f"{key}__median"]
        below = row.get(f"{key}__below")
        percentile[key] = None if below is None or not n else (below + 0.5 * row[f"{key}__ties"]) / n
    # Peer mean curves: one row per (day type, slot), at most 2 x slots rows on the driver.
    kinds = F.explode(F.array(*[F.struct(F.lit(c).alias("kind"), F.col(c).alias("curve"))
                                for c in ("weekday_curve", "weekend_curve")])).alias("k")
    slots = (peers.select(kinds).select("k.kind", F.posexplode("k.curve").alias("slot", "kwh"))
             .groupBy("kind", "slot").agg(F.avg("kwh").alias("kwh")).collect())
    curves: dict[str, list] = {}
    for r in sorted(slots, key=lambda r: (r["kind"], r["slot"])):
        curves.setdefault(r["kind"], []).append(r["kwh"])
    return {"peers": row["peers"], "percentile": percentile, "median": median, "known": known,
            "weekday_curve": curves.get("weekday_curve"), "weekend_curve": curves.get("weekend_curve")}


def segment_centroid(lake, as_of: dt.date, segment_id: int | None) -> dict | None:
    """{"label": the segment's English name, "weekday": shape, "weekend": shape} of the customer's segment at
    ``as_of`` (gold.segment_profile ``centroid_shape``, weekday half then weekend half); None when unknown."""
    if segment_id is None or not lake.exists(SEGMENT_PROFILE.name):
        return None
    rows = (lake.read(SEGMENT_PROFILE.name)
            .filter((F.col("as_of") == F.lit(as_of)) & (F.col("segment_id") == F.lit(segment_id)))
            .select("segment_label", "segment_name_en", "centroid_shape").limit(1).collect())
    if not rows or not rows[0]["centroid_shape"]:
        return None
    shape = list(rows[0]["centroid_shape"])
    half = len(shape) // 2
    return {"label": rows[0]["segment_name_en"] or rows[0]["segment_label"], "weekday": shape[:half],
            "weekend": shape[half:]}


def scaled_to(shape: Sequence[float] | None, curve: Sequence[float] | None) -> list[float] | None:
    """``shape`` rescaled so that its sum equals ``curve``'s (the segment's timing at the customer's daily
    energy); None when either is missing, their lengths differ, or a sum is not positive."""
    if not shape or not curve or len(shape) != len(curve) or any(v is None for v in shape):
        return None
    total, energy = sum(shape), sum(curve)
    if not total > 0 or not energy > 0:
        return None
    return [v * energy / total for v in shape]


def plot_customer_radar(customer_id: str, percentile: dict, axes: Sequence[tuple[str, str]] = PORTRAIT_AXES):
    """Radar of the customer's percentiles among peers (0 lowest .. 1 highest; dashed ring: the peer median).
    An axis without a value is drawn at 0 and labelled ``n/a``."""
    plt = P._plt()
    angles = [2 * math.pi * j / len(axes) for j in range(len(axes))]
    values = [percentile.get(k) for k, _ in axes]
    drawn = [0.0 if v is None else v for v in values]
    fig = plt.figure(figsize=(5.8, 5.0))
    ax = fig.add_subplot(projection="polar")
    ring = [0.5] * (len(axes) + 1)
    ax.plot(angles + angles[:1], ring, color="grey", lw=0.9, ls="--", label="peer median")
    ax.plot(angles + angles[:1], drawn + drawn[:1], color="tab:blue", lw=1.6, label=customer_id)
    ax.fill(angles + angles[:1], drawn + drawn[:1], color="tab:blue", alpha=0.12)
    ax.set_xticks(angles)
    ax.set_xticklabels([f"{label}\n{'n/a' if v is None else f'P{100 * v:.0f}'}" for (_, label), v in zip(axes, values)],
                       fontsize=8)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.set_yticklabels([])
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7)
    ax.set_title("Percentile among peers (same customer type)", fontsize=10, pad=16)
    fig.tight_layout()
    return fig


def plot_customer_curves(customer: dict, peers: dict, centroid: dict | None):
    """Weekday and weekend panels: the customer's mean slot kWh (solid), the peers' mean (dashed) and the
    segment centroid scaled to the customer's daily kWh (dotted, when known)."""
    plt = P._plt()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.2), sharey=True)
    for ax, kind in zip(axes, ("weekday", "weekend")):
        own = customer.get(f"{kind}_curve")
        lines = [(own, "customer", dict(color="tab:blue", lw=1.8)),
                 (peers.get(f"{kind}_curve"), f"peer mean ({peers['peers']:,} {customer['customer_type']})",
                  dict(color="grey", lw=1.2, ls="--"))]
        if centroid:
            lines.append((scaled_to(centroid[kind], own), f"segment {centroid['label']} (scaled)",
                          dict(color="tab:orange", lw=1.2, ls=":")))
        for values, label, style in lines:
            if values:
                hours = [24 * i / len(values) for i in range(len(values))]
                ax.plot(hours, [float("nan") if v is None else v for v in values], label=label, **style)
        if not own:
            ax.text(0.5, 0.5, f"no complete {kind} in the window", transform=ax.transAxes, ha="center", fontsize=8,
                    color="#a60")
        ax.set_title(kind, fontsize=9)
        ax.set_xticks([0, 6, 12, 18, 24])
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean kWh per slot", fontsize=8)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.supxlabel("hour of day (local)", fontsize=9)
    fig.suptitle(f"Load curve of {customer['customer_id']}", fontsize=10)
    fig.tight_layout()
    return fig
