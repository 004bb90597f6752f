"""Abnormal-use flags for inspection teams (用电检查): the meter-day evidence, the peers' level and the detectors.

:func:`anomaly_flags` turns a span of silver.daily_load_shape (the run's window and ``history_days`` before
it), the negative readings of silver.ami_quarantine and the archive into the rows of gold.anomaly_flags
(without ``as_of``). Spark does the per-day work in column expressions (:func:`day_evidence`,
:func:`negative_days`, :func:`with_peer_index`); each meter's days then go through :func:`detect_meter`, plain
numpy on one meter's few hundred rows (a grouped pandas function: change points need the meter's whole
series). The detectors, their thresholds (``anomalies.*``), the score and the reason: docs/anomalies.md.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from gridpersona.config import AnomaliesConfig

HOURS = 24

# What :func:`detect_meter` returns per flag, and the grouped function's output schema.
FLAG_FIELDS = (
    ("meter_id", "string"), ("customer_id", "string"), ("flag", "string"), ("start_date", "date"),
    ("end_date", "date"), ("days", "int"), ("score", "double"), ("reason", "string"), ("baseline_kwh", "double"),
    ("recent_kwh", "double"), ("own_ratio", "double"), ("peer_ratio", "double"), ("shape_shift", "double"),
    ("has_pv", "string"),
)
FLAG_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in FLAG_FIELDS)


# ------------------------------------------------------------------ Spark: evidence per meter and day

def day_evidence(daily: DataFrame, *, params: AnomaliesConfig, interval_minutes: int) -> DataFrame:
    """silver.daily_load_shape rows -> meter_id, date, daily_kwh, usable, zero_day, flat_day, flat_kwh, hourly.

    ``usable``: completeness >= ``min_completeness``; ``zero_day``: usable and every reading exactly 0;
    ``flat_day``: usable, above 0, largest minus smallest slot at most ``flatline_tolerance_kwh`` (a stuck
    register); ``flat_kwh``: that day's reading; ``hourly``: the day's kWh per local hour (24 values).
    """
    per_hour = max(1, 60 // interval_minutes)
    usable = F.col("completeness") >= F.lit(params.min_completeness)
    hourly = F.expr(f"transform(sequence(0, {HOURS - 1}), h -> aggregate(slice(slot_kwh, h * {per_hour} + 1, "
                    f"{per_hour}), CAST(0 AS DOUBLE), (acc, x) -> acc + x))")
    return daily.select(
        "meter_id", "date", "daily_kwh", usable.alias("usable"),
        (usable & (F.col("max_kwh") == 0)).alias("zero_day"),
        (usable & (F.col("min_kwh") > 0)
         & (F.col("max_kwh") - F.col("min_kwh") <= F.lit(params.flatline_tolerance_kwh))).alias("flat_day"),
        F.col("max_kwh").alias("flat_kwh"), hourly.alias("hourly"))


def negative_days(quarantine: DataFrame) -> DataFrame:
    """silver.ami_quarantine rows -> meter_id, date (local), negative_readings, negative_kwh (their sum, < 0):
    the readings clean set aside as ``negative``, per meter and local day (a reversed CT's only trace)."""
    return (quarantine.filter((F.col("reason") == "negative") & F.col("meter_id").isNotNull()
                              & F.col("local_date").isNotNull())
            .groupBy("meter_id", F.col("local_date").alias("date"))
            .agg(F.count(F.lit(1)).cast("int").alias("negative_readings"), F.sum("kwh").alias("negative_kwh")))


def with_peer_index(days: DataFrame, groups: DataFrame, *, min_peers: int) -> DataFrame:
    """``days`` (day_evidence rows) + ``groups`` (meter_id, peer_group) -> days with ``peer_index``.

    A meter's day ratio is its daily kWh over its own median normal day; a day's peer index is the median
    ratio of the peer group's meters that day (of everyone's when fewer than ``min_peers`` meters of the
    group have one, or when the meter's group is null). A heat wave or a holiday that moves everyone moves the
    index, so dividing by it leaves what is the meter's own.
    """
    normal = F.col("usable") & ~F.col("zero_day") & ~F.col("flat_day") & (F.col("daily_kwh") > 0)
    level = F.percentile_approx(F.when(normal, F.col("daily_kwh")), 0.5, 10000).over(Window.partitionBy("meter_id"))
    rated = (days.join(F.broadcast(groups), "meter_id")
             .withColumn("_ratio", F.when(normal, F.col("daily_kwh") / level)))
    # One aggregation for both levels: (date, group) rows and, rolled up, (date) rows for everyone.
    index = (rated.filter(F.col("_ratio").isNotNull()).rollup("date", "peer_group")
             .agg(F.percentile_approx("_ratio", 0.5, 10000).alias("_index"), F.count(F.lit(1)).alias("_peers"),
                  F.grouping_id().alias("_level"))
             .filter(F.col("date").isNotNull()))
    per_group = index.filter((F.col("_level") == 0) & F.col("peer_group").isNotNull()
                             & (F.col("_peers") >= min_peers)).select("peer_group", "date",
                                                                      F.col("_index").alias("_group_index"))
    everyone = index.filter(F.col("_level") == 1).select("date", F.col("_index").alias("_all_index"))
    return (rated.join(F.broadcast(per_group), ["peer_group", "date"], "left")
            .join(F.broadcast(everyone), "date", "left")
            .withColumn("peer_index", F.coalesce("_group_index", "_all_index"))
            .drop("_ratio", "_group_index", "_all_index"))


def peer_groups(archive: DataFrame, keys: list[str]) -> DataFrame:
    """Archive -> meter_id, customer_id, peer_group (the ``keys``' values joined; null when one is null;
    everyone's when ``keys`` is empty), has_pv (the archive's optional column; null when absent)."""
    group = F.concat_ws("|", *[F.col(k).cast("string") for k in keys]) if keys else F.lit("all")
    if keys:
        group = F.when(F.greatest(*[F.col(k).isNull().cast("int") for k in keys]) == 0, group) \
            if len(keys) > 1 else F.when(F.col(keys[0]).isNotNull(), group)
    has_pv = F.col("has_pv").cast("boolean") if "has_pv" in archive.columns else F.lit(None).cast("boolean")
    return (archive.filter(F.col("meter_id").isNotNull() & F.col("customer_id").isNotNull())
            .dropDuplicates(["meter_id"])
            .select("meter_id", "customer_id", group.alias("peer_group"), has_pv.alias("has_pv")))


def anomaly_flags(days: DataFrame, quarantine: DataFrame, archive: DataFrame, *, params: AnomaliesConfig,
                  window_first: dt.date, interval_minutes: int) -> DataFrame:
    """The flags of every archive meter (gold.anomaly_flags' columns but ``as_of``; FLAG_SCHEMA).

    ``days``: :func:`day_evidence` of silver.daily_load_shape over the span analysed (read three times here:
    the stage checkpoints it, one pass over the shapes); ``quarantine``: silver.ami_quarantine rows of that
    span (only ``negative`` ones are used); only flags whose evidence ends on or after ``window_first`` are
    kept. ``archive`` must have the columns of ``params.peer_keys``.
    """
    missing = [k for k in params.peer_keys if k not in archive.columns]
    if missing:
        raise ValueError(f"anomalies.peer_keys names {missing}, not columns of bronze.customer_archive "
                         f"({', '.join(archive.columns)}); fix conf (anomalies.peer_keys)")
    groups = peer_groups(archive, list(params.peer_keys))
    days = with_peer_index(days, groups.select("meter_id", "peer_group"), min_peers=params.min_peers)
    negatives = (negative_days(quarantine).join(F.broadcast(groups.select("meter_id")), "meter_id")
                 .select("meter_id", "date", "negative_readings", "negative_kwh"))
    cols = ["meter_id", "date", "daily_kwh", "usable", "zero_day", "flat_day", "flat_kwh", "hourly", "peer_index"]
    # A reverse-flow day has no clean reading (no daily row): its negatives come in as rows of their own.
    rows = (days.select(*cols, F.lit(None).cast("int").alias("negative_readings"),
                        F.lit(None).cast("double").alias("negative_kwh"))
            .unionByName(negatives.select("meter_id", "date", *[F.lit(None).cast(t).alias(c) for c, t in (
                ("daily_kwh", "double"), ("usable", "boolean"), ("zero_day", "boolean"), ("flat_day", "boolean"),
                ("flat_kwh", "double"), ("hourly", "array<double>"), ("peer_index", "double"))],
                "negative_readings", "negative_kwh"))
            .join(F.broadcast(groups.select("meter_id", "customer_id", "has_pv")), "meter_id"))
    slots = 1440 // interval_minutes
    settings = params.model_dump()

    def per_meter(frame: pd.DataFrame) -> pd.DataFrame:
        found = detect_meter(frame, AnomaliesConfig(**settings), window_first=window_first, slots_per_day=slots)
        return pd.DataFrame(found, columns=[name for name, _ in FLAG_FIELDS])

    return rows.groupBy("meter_id").applyInPandas(per_meter, FLAG_SCHEMA)


# ------------------------------------------------------------------ one meter's series (numpy)

def _by_day(values, inverse: np.ndarray, days: int, fill: float = np.nan) -> np.ndarray:
    """A column's values (None: missing) onto one slot per day (``inverse``: each row's day index): a day's
    shape row and its negatives row merge, the non-missing value winning."""
    arr = np.asarray(values)
    v = (np.array([np.nan if x is None or x is pd.NA else float(x) for x in arr], dtype=float)
         if arr.dtype == object else arr.astype(float))
    out = np.full(days, np.nan)
    ok = ~np.isnan(v)
    out[inverse[ok]] = v[ok]
    return np.where(np.isnan(out), fill, out)


def _runs(mask: np.ndarray, ordinal: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) row indexes of each run of ``mask`` rows on consecutive calendar days."""
    runs, start = [], None
    for i, on in enumerate(mask):
        if on and start is not None and ordinal[i] == ordinal[i - 1] + 1:
            continue
        if start is not None:
            runs.append((start, i - 1))
            start = None
        if on:
            start = i
    if start is not None:
        runs.append((start, len(mask) - 1))
    return runs


def _best_split(values: np.ndarray, lo: int, hi: int) -> int | None:
    """The split t in [lo, hi] minimising the within-segment sum of squares of ``values`` (rows: days,
    columns: dimensions) for the two segments [:t] and [t:]; None when the range is empty."""
    n = len(values)
    if lo > hi or n < 2:
        return None
    v = values.reshape(n, -1)
    cs = np.cumsum(v, axis=0)
    cs2 = np.cumsum((v ** 2).sum(axis=1))
    t = np.arange(lo, hi + 1)
    left = cs2[t - 1] - (cs[t - 1] ** 2).sum(axis=1) / t
    total, total2 = cs[-1], cs2[-1]
    right = (total2 - cs2[t - 1]) - ((total - cs[t - 1]) ** 2).sum(axis=1) / (n - t)
    return int(t[np.argmin(left + right)])


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Share of a day's energy in other hours between normalised shapes ``a`` and ``b`` (half the L1
    distance, 0..1; rows of 2-d arrays each). Unlike a correlation it stays near 0 between two flat shapes."""
    return 0.5 * np.abs(a - b).sum(axis=-1)


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if len(x) else None


def _pct(x: float | None) -> str:
    return "?" if x is None or not math.isfinite(x) else f"{x:.0%}"


def detect_meter(frame: pd.DataFrame, params: AnomaliesConfig, *, window_first: dt.date,
                 slots_per_day: int) -> list[dict[str, Any]]:
    """One meter's flags (dicts with FLAG_FIELDS' keys) from its rows: ``date``, ``daily_kwh``, ``usable``,
    ``zero_day``, ``flat_day``, ``flat_kwh``, ``hourly`` (24 kWh), ``peer_index``, ``negative_readings``,
    ``negative_kwh``, ``meter_id``, ``customer_id``, ``has_pv`` (a date may come in two rows: its shape row and its
    negatives row). At most one flag per kind: the latest run or the best change point. A flag is kept when
    its evidence ends on or after ``window_first``.
    """
    if frame.empty:
        return []
    meter_id, customer_id = str(frame["meter_id"].iloc[0]), str(frame["customer_id"].iloc[0])
    pv = frame["has_pv"].dropna()
    has_pv = None if pv.empty else bool(pv.iloc[0])
    # Plain arrays, one slot per date (pandas row operations cost more than the detectors).
    ordinal, inverse = np.unique(np.fromiter((x.toordinal() for x in frame["date"]), dtype=np.int64,
                                             count=len(frame)), return_inverse=True)
    n_days = len(ordinal)
    dates = [dt.date.fromordinal(int(o)) for o in ordinal]
    col = {c: frame[c].to_numpy() for c in ("daily_kwh", "usable", "zero_day", "flat_day", "flat_kwh",
                                            "negative_readings", "negative_kwh", "peer_index", "hourly")}
    kwh = _by_day(col["daily_kwh"], inverse, n_days)
    usable, zero, flat = (_by_day(col[c], inverse, n_days, 0.0) > 0
                          for c in ("usable", "zero_day", "flat_day"))  # null: false
    flat_kwh = _by_day(col["flat_kwh"], inverse, n_days)
    neg = _by_day(col["negative_readings"], inverse, n_days, 0.0)
    neg_kwh = _by_day(col["negative_kwh"], inverse, n_days, 0.0)
    peer = _by_day(col["peer_index"], inverse, n_days)
    hourly_of = [None] * n_days
    for i, h in zip(inverse, col["hourly"]):
        if h is not None and not (isinstance(h, float) and math.isnan(h)):
            hourly_of[i] = h
    reverse = neg >= params.reverse_min_share * slots_per_day
    normal = usable & ~zero & ~flat & ~reverse & (np.nan_to_num(kwh) > 0)
    out: list[dict[str, Any]] = []

    def emit(kind: str, first: int, last: int, days: int, score: float, reason: str, **extra) -> None:
        if dates[last] < window_first:
            return
        row = {"meter_id": meter_id, "customer_id": customer_id, "flag": kind, "start_date": dates[first],
               "end_date": dates[last], "days": int(days), "score": float(min(1.0, max(0.0, score))),
               "reason": reason, "baseline_kwh": None, "recent_kwh": None, "own_ratio": None, "peer_ratio": None,
               "shape_shift": None, "has_pv": None}
        row.update({k: (None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v)
                    for k, v in extra.items()})
        out.append(row)

    def baseline_before(i: int) -> tuple[float | None, int]:
        """Median kWh of the normal days before row i, and how many there are."""
        before = kwh[:i][normal[:i]]
        return _median(before), len(before)

    # Flatline: a stuck register repeats one non-zero reading all day, day after day.
    runs = [r for r in _runs(flat, ordinal) if r[1] - r[0] + 1 >= params.flatline_min_days]
    if runs:
        a, b = runs[-1]
        n = b - a + 1
        value = float(flat_kwh[a])
        base, nb = baseline_before(a)
        emit("flatline", a, b, n, n / 7.0,
             f"{n} d from {dates[a]} with every reading {value:.3f} kWh ({value * slots_per_day:.1f} kWh/d): a stuck "
             f"meter" + (f"; own baseline {base:.1f} kWh/d over {nb} d before" if base is not None else ""),
             baseline_kwh=base, recent_kwh=float(np.nanmedian(kwh[a:b + 1])))

    # Zero run: exact zeros (no base load at all) where the days before show an occupied premise.
    runs = [r for r in _runs(zero, ordinal) if r[1] - r[0] + 1 >= params.zero_run_min_days]
    for a, b in reversed(runs):
        base, nb = baseline_before(a)
        if base is None or nb < max(1, params.baseline_days // 2) or base < params.occupied_min_daily_kwh:
            continue  # occupancy before the run unknown or not shown: vacancy, not an anomaly
        n = b - a + 1
        emit("zero_run", a, b, n, n / 7.0,
             f"{n} d from {dates[a]} of exact zero readings on an occupied premise (own baseline {base:.1f} kWh/d "
             f"over {nb} d before; a vacant home keeps a base load)", baseline_kwh=base, recent_kwh=0.0)
        break

    # Reverse flow: most of a day's readings negative (clean quarantined them), on days enough.
    rev_rows = np.flatnonzero(reverse)
    if len(rev_rows) >= params.reverse_min_days and has_pv is not True:
        a, b = int(rev_rows[0]), int(rev_rows[-1])
        share = float(np.mean(np.minimum(1.0, neg[rev_rows] / slots_per_day)))
        daily_neg = float(np.median(neg_kwh[rev_rows]))
        base, nb = baseline_before(a)
        pv_text = "no PV (archive)" if has_pv is False else "PV unknown (archive has no has_pv value)"
        emit("reverse_flow", a, b, len(rev_rows), share,
             f"{len(rev_rows)} d from {dates[a]} with {share:.0%} of readings negative ({daily_neg:.1f} kWh/d); "
             f"{pv_text}" + (f"; own baseline {base:.1f} kWh/d" if base is not None else ""),
             baseline_kwh=base, recent_kwh=daily_neg, has_pv="no" if has_pv is False else "unknown")

    # Change points over the normal days with a peer index: a level drop, a shape change.
    idx = np.flatnonzero(normal & np.isfinite(peer) & (peer > 0))
    if len(idx) < params.baseline_days + min(params.drop_min_days, params.pattern_min_days):
        return out
    hourly = np.array([np.asarray(hourly_of[i], dtype=float) for i in idx])
    totals = hourly.sum(axis=1, keepdims=True)
    shapes = hourly / np.where(totals > 0, totals, 1.0)
    x = kwh[idx] / peer[idx]

    t = _best_split(np.log(x), params.baseline_days, len(idx) - params.drop_min_days)
    if t is not None:
        base, after = float(np.median(x[:t])), float(np.median(x[t:]))
        ratio = after / base if base > 0 else math.inf
        low = float(np.mean(x[t:] < params.drop_day_ratio * base))
        usual_low = float(np.quantile(x[:t], params.drop_below_quantile))
        shift = float(_shift(shapes[:t].mean(axis=0), shapes[t:].mean(axis=0)))
        if (ratio <= params.drop_max_ratio and low >= params.drop_day_share and after < usual_low
                and shift <= params.drop_max_shape_shift):
            own_base, own_after = float(np.median(kwh[idx[:t]])), float(np.median(kwh[idx[t:]]))
            peer_ratio = float(np.median(peer[idx[t:]]) / np.median(peer[idx[:t]]))
            own = own_after / own_base
            emit("sustained_drop", int(idx[t]), int(idx[-1]), len(idx) - t, 1.0 - ratio,
                 f"from {dates[idx[t]]} ({len(idx) - t} d) at {_pct(own)} of own baseline ({own_base:.1f} -> "
                 f"{own_after:.1f} kWh/d, {t} d before); peers {_pct(peer_ratio)}; {low:.0%} of the days low, "
                 f"below its usual low days; shape kept ({shift:.0%} of the energy moved hours)",
                 baseline_kwh=own_base, recent_kwh=own_after, own_ratio=own, peer_ratio=peer_ratio,
                 shape_shift=shift)

    t = _best_split(shapes, params.baseline_days, len(idx) - params.pattern_min_days)
    if t is not None:
        old, new = shapes[:t].mean(axis=0), shapes[t:].mean(axis=0)
        shift = float(_shift(old, new))
        nearer = float(np.mean(_shift(shapes[t:], new) < _shift(shapes[t:], old)))
        # Against the meter's own day-to-day spread: an EV charged on random nights moves a lot by chance.
        spread = float(np.median(np.concatenate([_shift(shapes[:t], old), _shift(shapes[t:], new)])))
        contrast = shift / spread if spread > 0 else math.inf
        own_base, own_after = float(np.median(kwh[idx[:t]])), float(np.median(kwh[idx[t:]]))
        # Both sides occupied: a move-in after vacant days changes the shape, and is no anomaly.
        occupied = min(own_base, own_after) >= params.occupied_min_daily_kwh
        if (shift >= params.pattern_min_shift and contrast >= params.pattern_min_contrast
                and nearer >= params.pattern_day_share and occupied):
            peer_ratio = float(np.median(peer[idx[t:]]) / np.median(peer[idx[:t]]))
            emit("pattern_change", int(idx[t]), int(idx[-1]), len(idx) - t, shift,
                 f"from {dates[idx[t]]} ({len(idx) - t} d) the daily shape changed: {shift:.0%} of the energy moved "
                 f"hours against the {t} d before, peak hour {int(np.argmax(old)):02d}h -> "
                 f"{int(np.argmax(new)):02d}h, {contrast:.1f} x its day-to-day spread, {nearer:.0%} of the days "
                 f"nearer the new shape; energy "
                 f"{_pct(own_after / own_base)} of before",
                 baseline_kwh=own_base, recent_kwh=own_after, own_ratio=own_after / own_base,
                 peer_ratio=peer_ratio, shape_shift=shift)
    return out
