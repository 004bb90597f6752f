"""Trend forecasts of monthly kWh per customer group, backtested against seasonal-naive (gold.segment_forecast).

Two Spark aggregations bring the inputs down to a few thousand rows, and the forecasting itself is small
numpy on the driver (the groups are a few dozen, each a few dozen months):

- :func:`group_month_kwh`: bills x archive region x segment of the as-of -> kWh and customers billed per
  (segment, region, month), the finest grain; every level's group is a sum of these cells.
- :func:`daily_temperatures`: bronze.weather -> one temperature per region and day (regions x days rows).
- :func:`forecast_rows`: the cells and daily temperatures (pandas) -> the rows of gold.segment_forecast
  (degree-days per region and month, :func:`monthly_degree_days`, and their climatology, :class:`DegreeDays`).

The model, per group: kWh per customer per day of month m regressed (least squares) on the month's mean
daily heating and cooling degree-days, a linear trend in years and, from ``month_effects_min_months`` fit
months on, month-of-year effects; a forecast is the fitted rate x the month's days x the customers billed in
the last month before the forecast (a changing population changes the total, not the rate). Future months
take climatological degree-days: per region and calendar month, the mean over the weather months before
the forecast's first month (one year of weather: last year's month). Without degree-days for a group
(no bronze.weather, too few covered months, no climatology for a target month) the fallback is
seasonal-naive per customer x the year-over-year ratio of the last ``yoy_months`` months (method
``naive_yoy``). The baseline, seasonal-naive, is the group's billed kWh of the same month a year before.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from gridpersona.config import ForecastConfig
from gridpersona.contracts.forecast import SEGMENT_FORECAST

CELL_COLUMNS = ("segment_id", "segment_label", "region", "month", "n_customers", "kwh")
DD_COLUMNS = ("region", "month", "hdd", "cdd")
WEATHER_COLUMNS = ("region", "date", "temp_mean_c")
LEVEL_KEYS = {"segment_region": ("segment_id", "region"), "segment": ("segment_id",), "region": ("region",),
              "all": ()}
METHOD_DD, METHOD_DD_MONTH, METHOD_YOY = "degree_days_trend", "degree_days_trend_month", "naive_yoy"


# ------------------------------------------------------------------ Spark: bring the inputs down to months

def group_month_kwh(billing: DataFrame, archive: DataFrame, segments: DataFrame, before: dt.date) -> DataFrame:
    """Bills of the months before ``before`` -> one row per (segment_id, segment_label, region, month):
    ``n_customers`` billed (a non-null bill_kwh) and their ``kwh``.

    ``billing``: bronze.billing_payment; ``archive``: bronze.customer_archive (customer_id -> region; a bill
    of a customer the archive lacks is left out); ``segments``: gold.customer_segments rows of one as-of
    (customer_id, segment_id, segment_label; a customer without one gets null segment columns).
    """
    bills = (billing.filter(F.col("bill_kwh").isNotNull())
             .select("customer_id", F.trunc("bill_month", "month").alias("month"), "bill_kwh")
             .filter(F.col("month") < F.lit(before)))
    regions = archive.select("customer_id", "region")
    # One segment per customer: a customer with two meters takes the lowest segment id (deterministic).
    segs = (segments.filter(F.col("customer_id").isNotNull()).groupBy("customer_id")
            .agg(F.min(F.struct("segment_id", "segment_label")).alias("s"))
            .select("customer_id", "s.segment_id", "s.segment_label"))
    return (bills.join(regions, "customer_id").join(segs, "customer_id", "left")
            .groupBy("segment_id", "segment_label", "region", "month")
            .agg(F.count(F.lit(1)).cast("long").alias("n_customers"), F.sum("bill_kwh").alias("kwh")))


def daily_temperatures(weather: DataFrame, last_day: dt.date) -> DataFrame:
    """bronze.weather -> (region, date, temp_mean_c) of the days up to ``last_day`` with a temperature: one
    row per region and day (regions x days, small enough for the driver)."""
    return (weather.filter(F.col("temp_mean_c").isNotNull() & (F.col("date") <= F.lit(last_day)))
            .groupBy("region", "date").agg(F.avg("temp_mean_c").alias("temp_mean_c")))


# ------------------------------------------------------------------ pandas: the groups' monthly series

def _k(month: dt.date) -> int:
    """Month index (year x 12 + month - 1) of a date."""
    return month.year * 12 + month.month - 1


def _month(k: int) -> dt.date:
    return dt.date(k // 12, k % 12 + 1, 1)


def _days(k: int) -> int:
    return calendar.monthrange(k // 12, k % 12 + 1)[1]


@dataclass
class GroupSeries:
    """One group's monthly bills: month index -> customers billed, kWh, and its customers per region."""

    level: str
    segment_id: int | None
    segment_label: str | None
    region: str | None
    n: dict[int, int] = field(default_factory=dict)
    kwh: dict[int, float] = field(default_factory=dict)
    by_region: dict[int, dict[str, int]] = field(default_factory=dict)  # month -> region -> customers


def group_series(cells: pd.DataFrame, levels) -> list[GroupSeries]:
    """The finest cells (columns ``CELL_COLUMNS``; ``month`` a date) -> one :class:`GroupSeries` per group of
    each level of ``levels``, ordered by level then keys. Cells with a null segment enter only the region and
    all levels."""
    groups: dict[tuple, GroupSeries] = {}
    for seg, label, region, month, n, kwh in cells[list(CELL_COLUMNS)].itertuples(index=False):
        segmented = seg is not None and not pd.isna(seg)
        seg = int(seg) if segmented else None
        k, n = _k(month), int(n)
        for level in levels:
            if "segment_id" in LEVEL_KEYS[level] and not segmented:
                continue
            key = (level, seg if "segment_id" in LEVEL_KEYS[level] else None,
                   region if "region" in LEVEL_KEYS[level] else None)
            g = groups.get(key)
            if g is None:
                g = groups[key] = GroupSeries(level, key[1], label if key[1] is not None else None, key[2])
            elif key[1] is not None and label is not None and (g.segment_label is None or label < g.segment_label):
                g.segment_label = label
            g.n[k] = g.n.get(k, 0) + n
            g.kwh[k] = g.kwh.get(k, 0.0) + float(kwh)
            g.by_region.setdefault(k, {})[region] = g.by_region.get(k, {}).get(region, 0) + n
    order = {level: i for i, level in enumerate(levels)}
    return [groups[key] for key in sorted(groups, key=lambda x: (order[x[0]], x[1] if x[1] is not None else -1,
                                                                  x[2] or ""))]


def monthly_degree_days(daily: pd.DataFrame, params: ForecastConfig) -> pd.DataFrame:
    """Daily temperatures (columns ``WEATHER_COLUMNS``) -> (region, month, hdd, cdd): each month's heating and
    cooling degree-days, the mean of its days' degree-days x its days (a few missing days are filled by the
    month's mean). Months with a temperature on fewer than ``params.min_weather_coverage`` of their days are
    left out (unknown)."""
    if daily.empty:
        return pd.DataFrame(columns=list(DD_COLUMNS))
    t = daily["temp_mean_c"].astype(float)
    frame = pd.DataFrame({"region": daily["region"], "month": [d.replace(day=1) for d in daily["date"]],
                          "hdd": np.maximum(0.0, params.heating_base_c - t),
                          "cdd": np.maximum(0.0, t - params.cooling_base_c)})
    g = frame.groupby(["region", "month"], sort=True).agg(days=("hdd", "size"), hdd=("hdd", "mean"),
                                                           cdd=("cdd", "mean")).reset_index()
    dim = np.array([_days(_k(m)) for m in g["month"]], float)
    g["hdd"], g["cdd"] = g["hdd"] * dim, g["cdd"] * dim
    return g.loc[g["days"] >= params.min_weather_coverage * dim, list(DD_COLUMNS)].reset_index(drop=True)


class DegreeDays:
    """Degree-days per region and month from daily temperatures, and their climatology: a month's
    climatological degree-days are the mean of the same calendar month's over the weather months before the
    forecast (one year of weather: last year's month)."""

    def __init__(self, daily: pd.DataFrame, params: ForecastConfig):
        monthly = monthly_degree_days(daily, params)
        self.by = {(r, _k(m)): (float(h), float(c))
                   for r, m, h, c in monthly[list(DD_COLUMNS)].itertuples(index=False)}
        self._climate: dict[tuple[str, int, int], tuple[float, float] | None] = {}

    def group(self, weights: dict[str, int], k: int) -> tuple[float, float] | None:
        """Customer-weighted (hdd, cdd) of month ``k`` over the regions of ``weights``; None when a region
        with customers has no degree-days that month."""
        return self._mix(weights, lambda r: self.by.get((r, k)))

    def climatology(self, weights: dict[str, int], k: int, before: int) -> tuple[float, float] | None:
        """Climatological (hdd, cdd) of month ``k`` from the weather before month index ``before``,
        customer-weighted over the regions of ``weights``; None when a region has none."""
        return self._mix(weights, lambda r: self._region_climatology(r, k, before))

    def _region_climatology(self, region: str, k: int, before: int) -> tuple[float, float] | None:
        key = (region, k % 12, before)
        if key not in self._climate:
            same = [v for (r, kk), v in self.by.items() if r == region and kk < before and kk % 12 == k % 12]
            self._climate[key] = ((sum(v[0] for v in same) / len(same), sum(v[1] for v in same) / len(same))
                                  if same else None)
        return self._climate[key]

    @staticmethod
    def _mix(weights, value) -> tuple[float, float] | None:
        total = sum(weights.values())
        if not total:
            return None
        h = c = 0.0
        for region, w in weights.items():
            v = value(region)
            if v is None:
                return None
            h += w * v[0]
            c += w * v[1]
        return h / total, c / total


# ------------------------------------------------------------------ the model and its fallback

@dataclass(frozen=True)
class Prediction:
    """Forecasts for target months (month index -> kWh; None: none), how, and the relative error sd."""

    kwh: dict[int, float | None]
    method: str | None
    reason: str | None
    history_months: int
    n_customers: int | None
    dd: dict[int, tuple[float, float] | None]
    rel_sd: float | None  # in-sample relative residual sd (None: not known)
    # The degree-day model given the target months' realised degree-days, where the weather has them
    # (a backtest's months): its error without the error of forecasting the weather.
    expost: dict[int, float | None] = field(default_factory=dict)


def fit_degree_day_model(y: np.ndarray, hdd_day: np.ndarray, cdd_day: np.ndarray, k: np.ndarray,
                         month_effects: bool) -> np.ndarray:
    """Least-squares coefficients of kWh per customer per day ``y`` on [1, mean daily hdd, mean daily cdd,
    trend in years (month index / 12)] (+ 11 month-of-year dummies when ``month_effects``)."""
    return np.linalg.lstsq(_design(hdd_day, cdd_day, k, month_effects), y, rcond=None)[0]


def _design(hdd_day, cdd_day, k, month_effects: bool) -> np.ndarray:
    k = np.asarray(k, dtype=float)
    cols = [np.ones_like(k), np.asarray(hdd_day, float), np.asarray(cdd_day, float), k / 12.0]
    if month_effects:
        cols += [(k % 12 == m).astype(float) for m in range(1, 12)]
    return np.column_stack(cols)


def predict(g: GroupSeries, dd: DegreeDays, cutoff: int, targets: list[int], params: ForecastConfig) -> Prediction:
    """Forecast group ``g``'s kWh for month indexes ``targets`` from its months before ``cutoff``: the
    degree-day model when it can fit and every target has a climatology, else the ``naive_yoy`` fallback,
    else no number (reason ``short_history``)."""
    train = sorted(k for k in g.n if k < cutoff and g.n[k] > 0)
    if not train:
        return Prediction({t: None for t in targets}, None, "short_history", 0, None, {t: None for t in targets}, None)
    last = train[-1]
    n_last, weights = g.n[last], g.by_region[last]
    clim = {t: dd.climatology(weights, t, cutoff) for t in targets}

    rows = [(k, dd.group(g.by_region[k], k)) for k in train]
    rows = [(k, v) for k, v in rows if v is not None]
    if len(rows) >= params.min_model_months and all(v is not None for v in clim.values()):
        k = np.array([r[0] for r in rows])
        days = np.array([_days(x) for x in k], float)
        y = np.array([g.kwh[x] / g.n[x] for x in k]) / days
        h = np.array([r[1][0] for r in rows]) / days
        c = np.array([r[1][1] for r in rows]) / days
        month_effects = len(rows) >= params.month_effects_min_months
        beta = fit_degree_day_model(y, h, c, k, month_effects)
        fitted = _design(h, c, k, month_effects) @ beta
        dof = len(rows) - np.linalg.matrix_rank(_design(h, c, k, month_effects))
        rel = (y - fitted) / np.where(fitted > 0, fitted, np.nan)
        rel_sd = float(math.sqrt(np.nansum(rel ** 2) / dof)) if dof > 0 else None
        def at(t: int, degree_days: tuple[float, float]) -> float:
            td = float(_days(t))
            x = _design([degree_days[0] / td], [degree_days[1] / td], [t], month_effects)
            return max(0.0, float((x @ beta)[0])) * td * n_last

        realised = {t: dd.group(weights, t) for t in targets}
        return Prediction({t: at(t, clim[t]) for t in targets}, METHOD_DD_MONTH if month_effects else METHOD_DD,
                          None, len(train), n_last, clim, rel_sd,
                          {t: None if v is None else at(t, v) for t, v in realised.items()})

    fallback = naive_yoy(g, cutoff, targets, params.yoy_months)
    if fallback is not None:
        return Prediction(fallback, METHOD_YOY, None, len(train), n_last, clim, None)
    return Prediction({t: None for t in targets}, None, "short_history", len(train), n_last, clim, None)


def naive_yoy(g: GroupSeries, cutoff: int, targets: list[int], yoy_months: int) -> dict[int, float] | None:
    """The fallback without weather: per target month, the kWh per customer of the same month a year before x
    (kWh per customer of the last ``yoy_months`` months before ``cutoff`` / of the same months a year earlier)
    x the customers of the last month. None when a month it needs has no bill."""
    recent = list(range(cutoff - yoy_months, cutoff))
    needed = recent + [k - 12 for k in recent] + [t - 12 for t in targets]
    if any(g.n.get(k, 0) <= 0 for k in needed) or any(t - 12 >= cutoff for t in targets):
        return None
    per = lambda ks: sum(g.kwh[k] for k in ks) / sum(g.n[k] for k in ks)  # noqa: E731
    before = per([k - 12 for k in recent])
    if before <= 0:
        return None
    ratio = per(recent) / before
    n_last = g.n[cutoff - 1]
    return {t: g.kwh[t - 12] / g.n[t - 12] * ratio * n_last for t in targets}


def seasonal_naive(g: GroupSeries, k: int) -> float | None:
    """The baseline: the group's billed kWh of the same month a year before; None without that month."""
    return g.kwh.get(k - 12) if g.n.get(k - 12, 0) > 0 else None


def ape(forecast: float | None, actual: float | None) -> float | None:
    """Absolute percentage error |forecast - actual| / actual x 100; None when either is unknown or actual 0."""
    if forecast is None or actual is None or actual == 0:
        return None
    return abs(forecast - actual) / abs(actual) * 100.0


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# ------------------------------------------------------------------ the table's rows

def forecast_rows(cells: pd.DataFrame, weather: pd.DataFrame, params: ForecastConfig,
                  as_of: dt.date) -> list[dict]:
    """The rows of gold.segment_forecast (dicts keyed by its columns) for ``as_of``.

    ``cells``: :func:`group_month_kwh` as pandas; ``weather``: :func:`daily_temperatures` as pandas
    (empty: no weather). History rows per bill month; backtest rows for the last ``backtest_months``
    months (model fit on the months before); forecast rows for ``horizon_months`` after the last bill
    month; one summary row per group and one overall row per level.
    """
    dd = DegreeDays(weather, params)
    groups = group_series(cells, params.levels)
    rows: list[dict] = []
    summaries: dict[str, list[dict]] = {level: [] for level in params.levels}
    for g in groups:
        base = {"as_of": as_of, "level": g.level, "segment_id": g.segment_id, "segment_label": g.segment_label,
                "region": g.region}
        months = sorted(g.n)
        last = months[-1]
        for k in months:
            v = dd.group(g.by_region[k], k)
            rows.append(_row(base, "history", k, n_customers=g.n[k], actual_kwh=g.kwh[k],
                             naive_kwh=seasonal_naive(g, k), hdd=v and v[0], cdd=v and v[1]))

        # Up to backtest_months held out, leaving the model its min_model_months to fit on.
        held_out = max(1, min(params.backtest_months, len(months) - params.min_model_months))
        bt_cut = last - held_out + 1
        bt_targets = list(range(bt_cut, last + 1))
        bt = predict(g, dd, bt_cut, bt_targets, params)
        errors, ape_m, ape_n, ape_x = [], [], [], []
        for t in bt_targets:
            actual = g.kwh.get(t) if g.n.get(t, 0) > 0 else None
            f, naive, expost = bt.kwh.get(t), seasonal_naive(g, t), bt.expost.get(t)
            a_m, a_n, a_x = ape(f, actual), ape(naive, actual), ape(expost, actual)
            ape_m.append(a_m)
            ape_n.append(a_n)
            ape_x.append(a_x)
            if f is not None and actual:
                errors.append((f - actual) / actual)
            rows.append(_row(base, "backtest", t, n_customers=g.n.get(t), actual_kwh=actual, forecast_kwh=f,
                             naive_kwh=naive, **_interval(f, bt.rel_sd, params.interval_z),
                             hdd=bt.dd[t] and bt.dd[t][0], cdd=bt.dd[t] and bt.dd[t][1],
                             method=bt.method, reason=bt.reason, history_months=bt.history_months,
                             ape_model_pct=a_m, ape_naive_pct=a_n, expost_kwh=expost, ape_expost_pct=a_x))

        fc_cut = last + 1
        fc_targets = list(range(fc_cut, fc_cut + params.horizon_months))
        fc = predict(g, dd, fc_cut, fc_targets, params)
        # The forecast's interval: the backtest's errors when it ran with the same method, else in-sample.
        rel_sd = (math.sqrt(float(np.mean(np.square(errors)))) if errors and bt.method == fc.method
                  else fc.rel_sd)
        for t in fc_targets:
            f = fc.kwh.get(t)
            rows.append(_row(base, "forecast", t, n_customers=fc.n_customers, forecast_kwh=f,
                             naive_kwh=seasonal_naive(g, t), **_interval(f, rel_sd, params.interval_z),
                             hdd=fc.dd[t] and fc.dd[t][0], cdd=fc.dd[t] and fc.dd[t][1],
                             method=fc.method, reason=fc.reason, history_months=fc.history_months))

        mape_m = _mean(ape_m) if all(a is not None for a in ape_m) else None
        mape_n = _mean(ape_n) if all(a is not None for a in ape_n) else None
        mape_x = _mean(ape_x) if all(a is not None for a in ape_x) else None
        summary = _row(base, "summary", None, n_customers=g.n[last], method=fc.method, reason=fc.reason,
                       history_months=fc.history_months, mape_model_pct=mape_m, mape_naive_pct=mape_n,
                       mape_expost_pct=mape_x, n_groups=int(mape_m is not None and mape_n is not None))
        rows.append(summary)
        summaries[g.level].append(summary)

    for level, items in summaries.items():
        both = [s for s in items if s["n_groups"]]
        rows.append(_row({"as_of": as_of, "level": level, "segment_id": None, "segment_label": None,
                          "region": None}, "overall", None,
                         mape_model_pct=_mean(s["mape_model_pct"] for s in both),
                         mape_naive_pct=_mean(s["mape_naive_pct"] for s in both),
                         mape_expost_pct=_mean(s["mape_expost_pct"] for s in both), n_groups=len(both),
                         reason=None if both else "no_backtest"))
    return rows


def _interval(f: float | None, rel_sd: float | None, z: float) -> dict:
    if f is None or rel_sd is None:
        return {}
    return {"lower_kwh": max(0.0, f * (1 - z * rel_sd)), "upper_kwh": f * (1 + z * rel_sd)}


def _row(base: dict, kind: str, k: int | None, **values) -> dict:
    row = {c: None for c in SEGMENT_FORECAST.column_names}
    row.update(base)
    row["kind"] = kind
    row["month"] = None if k is None else _month(k)
    for name, v in values.items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            row[name] = None
        elif name in ("n_customers", "history_months", "n_groups"):
            row[name] = int(v)
        elif name in ("method", "reason"):
            row[name] = v
        else:
            row[name] = float(v)
    return row


def overall_line(rows: list[dict], level: str = "segment_region") -> str:
    """'backtest 3 months, 32 groups: MAPE model 2.1 % vs seasonal-naive 5.3 %' for ``level`` (from its
    overall row), or why there is no comparison."""
    overall = next((r for r in rows if r["kind"] == "overall" and r["level"] == level), None)
    groups = sum(1 for r in rows if r["kind"] == "summary" and r["level"] == level)
    if not groups:
        return f"{level}: no group"
    if overall is None or not overall["n_groups"]:
        return f"{level}: {groups} groups, no backtest comparison (too little history for model and naive)"
    expost = overall["mape_expost_pct"]
    return (f"{level}: {overall['n_groups']} of {groups} groups compared: MAPE model "
            f"{overall['mape_model_pct']:.1f} % vs seasonal-naive {overall['mape_naive_pct']:.1f} %"
            + ("" if expost is None else f" (model with the realised weather {expost:.1f} %)"))
