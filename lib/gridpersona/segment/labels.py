"""Segment names: centroid features, label rules, generated labels and qualifiers (numpy, driver side).

Each centroid is described by a few interpretable features
(:func:`centroid_features`: the share of the weekday typical shape falling
in named hour windows such as ``night_share``, ``peak_to_mean``,
``peak_hour``, ``weekend_ratio``, ``mean_daily_kwh``) and named by the first
rule of an ordered list whose bounds all hold (:func:`label_centroid`).
A centroid no rule names gets a label generated from its own curve
(:func:`describe_centroid`: the part of the day of its peak, broad or
sharp), never a catch-all. Centroids that end up with the same label are
told apart by qualifiers from their curves (:func:`distinct_labels`), so no
two segments share a code or a name.

Everything here takes plain values (feature dicts, :class:`LabelRule` and
:class:`DayPart` lists, minute windows): the stage turns ``segment.labels``,
``segment.peak_parts`` and ``segment.windows`` into them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np


def window_mask(start_minute: int, end_minute: int, slots: int) -> np.ndarray:
    """1.0 for each slot of the day whose first minute lies in [start, end) (wrapping midnight), else 0.0."""
    step = 1440 // slots
    starts = np.arange(slots) * step
    if start_minute < end_minute:
        inside = (starts >= start_minute) & (starts < end_minute)
    else:
        inside = (starts >= start_minute) | (starts < end_minute)
    return inside.astype(float)


def centroid_features(centroid: Sequence[float], *, slots: int, windows: Mapping[str, tuple[int, int]],
                      mean_daily_kwh: float | None = None, weekend_ratio: float | None = None) -> dict[str, float]:
    """Interpretable features of a centroid (weekday half first, as typical_shapes builds it).

    ``<name>_share`` for each window (share of the weekday typical shape in the
    window), ``weekend_<name>_share`` (same on the weekend half),
    ``peak_to_mean`` (weekday max slot over mean slot), ``trough_to_mean`` (min
    slot over mean slot), ``peak_hour`` (local hour
    at the middle of the weekday max slot), ``peak_width_hours``
    (:func:`peak_width_hours` of the weekday half), ``weekend_ratio`` and
    ``mean_daily_kwh`` as given (NaN when None).
    """
    c = np.asarray(centroid, dtype=float)
    wd, we = c[:slots], c[slots:2 * slots] if len(c) >= 2 * slots else c[:slots]
    out: dict[str, float] = {}
    wd_total, we_total = wd.sum(), we.sum()
    for name, (start, end) in windows.items():
        mask = window_mask(start, end, slots)
        out[f"{name}_share"] = float(wd @ mask / wd_total) if wd_total > 0 else float("nan")
        out[f"weekend_{name}_share"] = float(we @ mask / we_total) if we_total > 0 else float("nan")
    mean = wd.mean()
    out["peak_to_mean"] = float(wd.max() / mean) if mean > 0 else float("nan")
    out["trough_to_mean"] = float(wd.min() / mean) if mean > 0 else float("nan")
    out["peak_hour"] = float((int(np.argmax(wd)) + 0.5) * 24.0 / slots)
    out["peak_width_hours"] = peak_width_hours(wd)
    out["weekend_ratio"] = float("nan") if weekend_ratio is None else float(weekend_ratio)
    out["mean_daily_kwh"] = float("nan") if mean_daily_kwh is None else float(mean_daily_kwh)
    return out


def peak_width_hours(shape: Sequence[float]) -> float:
    """Hours of the block around the daily peak: the run of slots (wrapping midnight) on both sides of the
    max slot that stay at or above half-way between the day's min and max. A narrow spike gives ~1-3 h, a
    broad plateau (storage or electric heating, a night tariff block) 5 h and more; flat curves ~24 h."""
    c = np.asarray(shape, dtype=float)
    n = len(c)
    if n == 0 or not np.isfinite(c).all() or c.max() <= c.min():
        return 24.0 if n else float("nan")
    half = c.min() + 0.5 * (c.max() - c.min())
    top = int(np.argmax(c))
    width = 1
    for step in (1, -1):
        j = 1
        while j < n and c[(top + step * j) % n] >= half and width < n:
            width += 1
            j += 1
    return float(width * 24.0 / n)


@dataclass(frozen=True)
class LabelRule:
    """A segment label and the bounds on centroid features that give it (all must hold)."""

    code: str
    zh: str
    en: str
    when: Mapping[str, tuple[float | None, float | None]]  # feature -> (min, max), inclusive; None = open


def rule_matches(rule: LabelRule, features: Mapping[str, float]) -> bool:
    """True when every bound of ``rule`` holds; a NaN or missing feature fails its bound."""
    for name, (lo, hi) in rule.when.items():
        value = features.get(name, float("nan"))
        if value is None or math.isnan(value):
            return False
        if lo is not None and value < lo:
            return False
        if hi is not None and value > hi:
            return False
    return True


def label_centroid(features: Mapping[str, float], rules: Sequence[LabelRule], fallback: LabelRule) -> tuple[LabelRule, int]:
    """(the first rule whose bounds all hold or ``fallback``, its position; len(rules) for the fallback)."""
    for i, rule in enumerate(rules):
        if rule_matches(rule, features):
            return rule, i
    return fallback, len(rules)


@dataclass(frozen=True)
class DayPart:
    """A part of the day a generated label names a centroid's peak after (hours as window_mask minutes)."""

    code: str
    zh: str
    en: str
    start_minute: int
    end_minute: int


def describe_centroid(features: Mapping[str, float], parts: Sequence[DayPart], *, broad_max_peak_to_mean: float,
                      sharp_min_peak_to_mean: float) -> LabelRule:
    """A label generated from the centroid's own weekday curve, for a centroid no archetype rule names.

    Code ``peak_<part>`` after the part of the day holding the weekday peak
    (``peak_hour``), with ``_broad`` when ``peak_to_mean`` is below
    ``broad_max_peak_to_mean`` or ``_sharp`` when at least
    ``sharp_min_peak_to_mean``; zh and en names to match (e.g.
    ``peak_late_evening_sharp`` 晚间尖峰型 / Late-evening sharp peak).
    """
    hour = features.get("peak_hour", float("nan"))
    minute = 0 if hour is None or math.isnan(hour) else int(hour * 60) % 1440
    part = next((p for p in parts if _in_window(minute, p.start_minute, p.end_minute)), None)
    ratio = features.get("peak_to_mean", float("nan"))
    shape = ""
    if ratio is not None and not math.isnan(ratio):
        shape = "broad" if ratio < broad_max_peak_to_mean else "sharp" if ratio >= sharp_min_peak_to_mean else ""
    zh_shape, en_shape = {"broad": ("平缓高峰", "broad "), "sharp": ("尖峰", "sharp "), "": ("高峰", "")}[shape]
    if part is None:
        return LabelRule("peak_" + (shape or "day"), f"全天{zh_shape}型", f"All-day {en_shape}peak".replace("  ", " "), {})
    code = f"peak_{part.code}" + (f"_{shape}" if shape else "")
    return LabelRule(code, f"{part.zh}{zh_shape}型", f"{part.en} {en_shape}peak", {})


def _in_window(minute: int, start: int, end: int) -> bool:
    return start <= minute < end if start < end else (minute >= start or minute < end)


# Qualifiers that tell apart centroids given the same label: (feature, scale of a telling difference,
# (code, zh, en) for the lower value, (code, zh, en) for the higher). mean_daily_kwh's scale is relative.
QUALIFIERS: tuple[tuple[str, float, tuple[str, str, str], tuple[str, str, str]], ...] = (
    ("daytime_share", 0.05, ("away_by_day", "日间外出", "away by day"), ("home_by_day", "日间在家", "home by day")),
    ("morning_share", 0.05, ("quiet_morning", "早间低", "quiet mornings"), ("busy_morning", "早间高", "busy mornings")),
    ("evening_share", 0.05, ("light_evening", "傍晚低", "light evenings"), ("heavy_evening", "傍晚高", "heavy evenings")),
    ("night_share", 0.05, ("quiet_night", "夜间低", "quiet nights"), ("night_load", "夜间高", "night load")),
    ("peak_to_mean", 0.4, ("broad", "平缓", "broad"), ("sharp", "尖峰", "sharp")),
    ("weekend_ratio", 0.1, ("weekday_heavy", "工作日偏高", "weekday-heavy"), ("weekend_heavy", "周末偏高", "weekend-heavy")),
    ("mean_daily_kwh", 0.25, ("low_use", "低用量", "low use"), ("high_use", "高用量", "high use")),
)


def distinct_labels(labels: Sequence[LabelRule], features: Sequence[Mapping[str, float]],
                    pinned: Iterable[int] = ()) -> list[LabelRule]:
    """``labels`` with qualifiers added until no two share a code, a zh name or an en name.

    Centroids sharing a label are told apart by the :data:`QUALIFIERS` feature
    on which they differ most (relative to its scale): the highest gets the
    high word, the lowest the low word (e.g. ``evening_peak_home_by_day`` /
    ``evening_peak_away_by_day``); with three or more the middle ones keep the
    label and the next round picks another feature. A centroid order change
    gives the same names. Numbered only when no feature differs. ``pinned``
    indexes (e.g. the vacancy rule's segment) keep their label; the others
    of their group are qualified instead.
    """
    out = list(labels)
    fixed = set(pinned)
    used: dict[int, set[str]] = {i: set() for i in range(len(out))}
    for _ in range(4 * len(QUALIFIERS) + 2):
        clashes = _clashing_groups(out)
        if not clashes:
            return out
        for group in clashes:
            best = None
            for feature, scale, low, high in QUALIFIERS:
                if any(feature in used[i] for i in group):
                    continue
                values = [features[i].get(feature, float("nan")) for i in group]
                if any(v is None or math.isnan(v) for v in values):
                    continue
                spread = max(values) - min(values)
                spread /= scale * (abs(float(np.mean(values))) or 1.0) if feature == "mean_daily_kwh" else scale
                if spread > 0 and (best is None or spread > best[0]):
                    best = (spread, feature, values, low, high)
            if best is None:
                free = [i for i in sorted(group, key=lambda i: (i not in fixed, i))][1:]
                for n, i in enumerate(free, start=2):
                    out[i] = _qualified(out[i], (str(n), str(n), str(n)))
                continue
            _, feature, values, low, high = best
            lo_i = group[int(np.argmin(values))]
            hi_i = group[int(np.argmax(values))]
            for i in group:
                used[i].add(feature)
            if lo_i not in fixed:
                out[lo_i] = _qualified(out[lo_i], low)
            if hi_i not in fixed:
                out[hi_i] = _qualified(out[hi_i], high)
    return out


def _clashing_groups(labels: Sequence[LabelRule]) -> list[list[int]]:
    """Groups (index lists) of labels sharing a code, zh or en name; overlapping clashes merged."""
    parent = list(range(len(labels)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for key in (lambda r: r.code, lambda r: r.zh, lambda r: r.en):
        first: dict[str, int] = {}
        for i, r in enumerate(labels):
            k = key(r)
            if k in first:
                parent[find(i)] = find(first[k])
            else:
                first[k] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(labels)):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _qualified(rule: LabelRule, qualifier: tuple[str, str, str]) -> LabelRule:
    code, zh, en = qualifier
    if rule.en.endswith(")"):
        return LabelRule(f"{rule.code}_{code}", f"{rule.zh[:-1]}，{zh}）", f"{rule.en[:-1]}, {en})", rule.when)
    return LabelRule(f"{rule.code}_{code}", f"{rule.zh}（{zh}）", f"{rule.en} ({en})", rule.when)


# The vacancy rule's segment when no ``vacant`` label rule gives its display names.
VACANT_LABEL = LabelRule("vacant", "空置型", "Vacant", {})


def vacant_rule_label(rules: Sequence[LabelRule]) -> LabelRule:
    """Display names of the vacancy rule's segment: the ``vacant`` label rule's when configured."""
    return next((r for r in rules if r.code == "vacant"), VACANT_LABEL)


def name_centroids(features: Sequence[Mapping[str, float]], rules: Sequence[LabelRule], parts: Sequence[DayPart], *,
                   broad_max_peak_to_mean: float, sharp_min_peak_to_mean: float,
                   pinned: Sequence[tuple[Mapping[str, float], LabelRule]] = ()) -> list[tuple[LabelRule, int]]:
    """(label, rule position) of each centroid: the first label rule that holds, else a label generated
    from the curve (rank len(rules)); then qualified until no two share a code or name, ``pinned``
    (features, label) entries (the vacancy segment) taking part in the comparison but keeping their label."""
    named = []
    for f in features:
        generated = describe_centroid(f, parts, broad_max_peak_to_mean=broad_max_peak_to_mean,
                                      sharp_min_peak_to_mean=sharp_min_peak_to_mean)
        named.append(label_centroid(f, rules, generated))
    labels = distinct_labels([r for r, _ in named] + [lbl for _, lbl in pinned],
                             list(features) + [f for f, _ in pinned],
                             pinned=range(len(named), len(named) + len(pinned)))
    return [(labels[i], rank) for i, (_, rank) in enumerate(named)]


def features_json(features: Mapping[str, float]) -> str:
    """Centroid features as the stable JSON gold.segment_model stores (sorted keys, 6 decimals, NaN as null)."""
    return json.dumps({k: (None if v != v else round(v, 6)) for k, v in sorted(features.items())})
