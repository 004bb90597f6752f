"""Trend forecasts (gold.segment_forecast): the degree-day model, seasonal-naive, the backtest, the fallback.

Unit tests on hand-made monthly frames (pandas, no Spark) plus one small Spark test of the two aggregations
and one look at the shared synthetic lake's table.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from gridpersona.config import ForecastConfig
from gridpersona.contracts.forecast import SEGMENT_FORECAST
from gridpersona.transform import forecast as FC

AS_OF = dt.date(2026, 8, 29)
BASES = (16.0, 22.0)


def _months(first: dt.date, n: int) -> list[dt.date]:
    k0 = FC._k(first)
    return [FC._month(k0 + i) for i in range(n)]


def _world(n_months: int = 24, *, base=8.0, per_hdd=0.6, per_cdd=0.9, trend_per_year=0.4, customers=100,
           seed=1, first=dt.date(2024, 8, 1)):
    """(cells, daily weather, monthly degree-days) of one segment in one region whose kWh per customer per day
    is exactly base + per_hdd x hdd/day + per_cdd x cdd/day + trend_per_year x years since ``first``. The
    temperature: a Shanghai-like annual cycle (4-29 C) plus day-to-day noise and a shift per month, so
    years differ."""
    rng = np.random.default_rng(seed)
    cells, daily, dd = [], [], {}
    k0 = FC._k(first)
    for m in _months(first, n_months):
        k, days = FC._k(m), FC._days(FC._k(m))
        dates = [m + dt.timedelta(days=i) for i in range(days)]
        temp = (16.8 - 12.0 * np.cos(2 * np.pi * (np.array([d.timetuple().tm_yday for d in dates]) - 20) / 365)
                + rng.normal(0, 2.0) + rng.normal(0, 1.5, days))
        daily += [("SA01", d, float(t)) for d, t in zip(dates, temp)]
        h, c = np.maximum(0, BASES[0] - temp).sum(), np.maximum(0, temp - BASES[1]).sum()
        dd[m] = (h, c)
        rate = base + per_hdd * h / days + per_cdd * c / days + trend_per_year * (k - k0) / 12
        cells.append((1, "evening_peak", "SA01", m, customers, rate * days * customers))
    return (pd.DataFrame(cells, columns=FC.CELL_COLUMNS), pd.DataFrame(daily, columns=FC.WEATHER_COLUMNS), dd)


def _rows(cells, weather, **params):
    params = {"levels": ["segment_region"], "backtest_months": 3, **params}
    rows = FC.forecast_rows(cells, weather, ForecastConfig(**params), AS_OF)
    return pd.DataFrame(rows, columns=SEGMENT_FORECAST.column_names)


def test_degree_day_model_recovers_the_planted_response_and_trend():
    cells, _, dd = _world()
    series = FC.group_series(cells, ["segment_region"])[0]
    k = np.array(sorted(series.n))
    days = np.array([FC._days(x) for x in k], float)
    y = np.array([series.kwh[x] / series.n[x] for x in k]) / days
    hdd = [dd[FC._month(x)][0] / d for x, d in zip(k, days)]
    cdd = [dd[FC._month(x)][1] / d for x, d in zip(k, days)]
    beta = FC.fit_degree_day_model(y, hdd, cdd, k, month_effects=False)
    # beta = [intercept at month index 0, per hdd, per cdd, per year]
    assert beta[1:] == pytest.approx([0.6, 0.9, 0.4], abs=1e-9)


def test_monthly_degree_days_and_coverage():
    days = [dt.date(2026, 6, 1) + dt.timedelta(days=i) for i in range(30)]
    daily = pd.DataFrame([("SA01", d, 10.0) for d in days[:27]] + [("SA02", d, 30.0) for d in days[:26]],
                         columns=FC.WEATHER_COLUMNS)
    dd = FC.monthly_degree_days(daily, ForecastConfig())
    # SA01: 27 of 30 days (0.9) at 16 - 10 = 6 degree-days, filled to the month; SA02: 26 days (< 0.9): unknown.
    assert [tuple(r) for r in dd.itertuples(index=False)] == [("SA01", dt.date(2026, 6, 1), 180.0, 0.0)]


def test_forecast_uses_climatological_degree_days_and_the_last_count():
    cells, weather, dd = _world()
    out = _rows(cells, weather)
    fc = out[out["kind"] == "forecast"].sort_values("month")
    assert list(fc["month"]) == [dt.date(2026, 8, 1), dt.date(2026, 9, 1), dt.date(2026, 10, 1)]
    assert set(fc["method"]) == {"degree_days_trend"} and set(fc["n_customers"]) == {100}
    # August's climatology: the mean of the weather's Augusts (2024 and 2025); the planted rate at it x 31 days
    # x 100 customers:
    h = (dd[dt.date(2024, 8, 1)][0] + dd[dt.date(2025, 8, 1)][0]) / 2
    c = (dd[dt.date(2024, 8, 1)][1] + dd[dt.date(2025, 8, 1)][1]) / 2
    years = (FC._k(dt.date(2026, 8, 1)) - FC._k(dt.date(2024, 8, 1))) / 12
    expected = (8.0 + 0.6 * h / 31 + 0.9 * c / 31 + 0.4 * years) * 31 * 100
    row = fc.iloc[0]
    assert row["forecast_kwh"] == pytest.approx(expected, rel=1e-9)
    assert row["hdd"] == pytest.approx(h) and row["cdd"] == pytest.approx(c)
    assert row["lower_kwh"] < row["forecast_kwh"] < row["upper_kwh"]


def test_seasonal_naive_is_the_same_month_last_year():
    cells, weather, _ = _world()
    out = _rows(cells, weather)
    kwh = {m: v for m, v in zip(cells["month"], cells["kwh"])}
    hist = out[out["kind"] == "history"]
    for m, naive in zip(hist["month"], hist["naive_kwh"]):
        last_year = dt.date(m.year - 1, m.month, 1)
        assert (naive is None or np.isnan(naive)) if last_year not in kwh else naive == kwh[last_year]
    bt = out[out["kind"] == "backtest"]
    assert list(bt["naive_kwh"]) == [kwh[dt.date(m.year - 1, m.month, 1)] for m in bt["month"]]


def test_backtest_mape_and_the_overall_row():
    cells, weather, _ = _world()
    out = _rows(cells, weather)
    bt = out[out["kind"] == "backtest"]
    assert list(bt["month"]) == [dt.date(2026, 5, 1), dt.date(2026, 6, 1), dt.date(2026, 7, 1)]
    assert set(bt["history_months"]) == {21}  # fit on the months before the held-out ones
    ape_m = (bt["forecast_kwh"] - bt["actual_kwh"]).abs() / bt["actual_kwh"] * 100
    ape_n = (bt["naive_kwh"] - bt["actual_kwh"]).abs() / bt["actual_kwh"] * 100
    assert list(bt["ape_model_pct"]) == pytest.approx(list(ape_m))
    # Given the months' realised degree-days the planted (noise-free) response is exact.
    assert bt["ape_expost_pct"].max() < 1e-6
    summary = out[out["kind"] == "summary"].iloc[0]
    assert summary["mape_model_pct"] == pytest.approx(ape_m.mean())
    assert summary["mape_naive_pct"] == pytest.approx(ape_n.mean())
    overall = out[out["kind"] == "overall"].iloc[0]
    assert overall["n_groups"] == 1 and overall["mape_model_pct"] == pytest.approx(ape_m.mean())
    # The planted world has a trend and weather the naive ignores: the model wins.
    assert summary["mape_model_pct"] < summary["mape_naive_pct"]


def test_backtest_holds_out_fewer_months_to_leave_the_model_its_fit():
    cells, weather, _ = _world(n_months=18)
    out = _rows(cells, weather, backtest_months=12)
    bt = out[out["kind"] == "backtest"]
    assert len(bt) == 6 and set(bt["history_months"]) == {12} and set(bt["method"]) == {"degree_days_trend"}


def test_too_short_history_gets_a_reason_not_a_number():
    cells, weather, _ = _world(n_months=8)
    out = _rows(cells, weather)
    fc = out[out["kind"].isin(["backtest", "forecast"])]
    assert fc["forecast_kwh"].isna().all() and set(fc["reason"]) == {"short_history"}
    assert fc["method"].isna().all() and fc["naive_kwh"].isna().all()
    assert out[out["kind"] == "overall"].iloc[0]["n_groups"] == 0
    assert "no backtest comparison" in FC.overall_line(out.to_dict("records"))


def test_without_weather_the_fallback_is_naive_times_the_yoy_ratio():
    cells, weather, _ = _world()
    out = _rows(cells, weather.iloc[0:0])
    fc = out[out["kind"] == "forecast"].sort_values("month")
    assert set(fc["method"]) == {"naive_yoy"} and fc["hdd"].isna().all()
    kwh = {m: v for m, v in zip(cells["month"], cells["kwh"])}
    recent = [dt.date(2026, 5, 1), dt.date(2026, 6, 1), dt.date(2026, 7, 1)]
    ratio = sum(kwh[m] for m in recent) / sum(kwh[dt.date(m.year - 1, m.month, 1)] for m in recent)
    assert fc.iloc[0]["forecast_kwh"] == pytest.approx(kwh[dt.date(2025, 8, 1)] * ratio)


def test_levels_sum_cells_and_leave_unsegmented_customers_to_region_and_all():
    m = dt.date(2026, 1, 1)
    cells = pd.DataFrame([(1, "a", "SA01", m, 10, 100.0), (1, "a", "SA02", m, 30, 300.0),
                          (2, "b", "SA01", m, 5, 50.0), (None, None, "SA01", m, 7, 70.0)],
                         columns=FC.CELL_COLUMNS)
    groups = {(g.level, g.segment_id, g.region): g for g in FC.group_series(cells, ForecastConfig().levels)}
    assert groups[("segment", 1, None)].n == {FC._k(m): 40}
    assert groups[("segment", 1, None)].by_region[FC._k(m)] == {"SA01": 10, "SA02": 30}
    assert groups[("region", None, "SA01")].kwh == {FC._k(m): 220.0}
    assert groups[("all", None, None)].n == {FC._k(m): 52}
    assert len([g for g in groups if g[0] == "segment_region"]) == 3


def test_spark_aggregations(spark):
    d = dt.date
    billing = spark.createDataFrame(
        [("C1", d(2026, 6, 1), 100.0), ("C2", d(2026, 6, 1), 50.0), ("C3", d(2026, 6, 1), 20.0),
         ("C1", d(2026, 8, 1), 999.0), ("C2", d(2026, 7, 1), None)],
        "customer_id string, bill_month date, bill_kwh double")
    archive = spark.createDataFrame([("C1", "SA01"), ("C2", "SA01"), ("C3", "SA02")],
                                    "customer_id string, region string")
    segments = spark.createDataFrame([("C1", 3, "ev_night"), ("C2", 3, "ev_night")],
                                     "customer_id string, segment_id int, segment_label string")
    cells = FC.group_month_kwh(billing, archive, segments, d(2026, 8, 1)).toPandas()
    got = {(None if pd.isna(r.segment_id) else int(r.segment_id), r.region, r.month): (r.n_customers, r.kwh)
           for r in cells.itertuples()}
    # August is not before the as-of's month; C2's July bill has no kWh; C3 has no segment.
    assert got == {(3, "SA01", d(2026, 6, 1)): (2, 150.0), (None, "SA02", d(2026, 6, 1)): (1, 20.0)}

    weather = spark.createDataFrame([("SA01", d(2026, 6, 1), 10.0), ("SA01", d(2026, 6, 1), 12.0),
                                     ("SA01", d(2026, 6, 2), None), ("SA01", d(2026, 9, 1), 20.0)],
                                    "region string, date date, temp_mean_c double")
    temps = FC.daily_temperatures(weather, d(2026, 8, 29)).collect()
    assert [(r.region, r.date, r.temp_mean_c) for r in temps] == [("SA01", d(2026, 6, 1), 11.0)]


def test_the_shared_lake_has_a_forecast_partition(synthetic_lake):
    lake = synthetic_lake.lake
    results = dict(synthetic_lake.results)
    assert results["forecast"].outputs[SEGMENT_FORECAST.name] > 0
    rows = lake.read(SEGMENT_FORECAST.name).filter(f"as_of = '{synthetic_lake.as_of}'")
    kinds = {r["kind"] for r in rows.select("kind").distinct().collect()}
    assert {"history", "backtest", "forecast", "summary", "overall"} <= kinds
    assert any(n.startswith("backtest ") for n in results["forecast"].notes)
    # The report's section: the backtest table and the chart.
    from gridpersona.analyst import report as R

    b = R._Builder()
    R._forecast_section(b, lake, synthetic_lake.as_of)
    assert b.images == ["Forecast"] and not b.missing and "MAPE seasonal-naive" in "".join(b.parts)


def test_without_bills_every_overall_row_says_why_it_has_no_figure():
    cells = pd.DataFrame([], columns=FC.CELL_COLUMNS)
    weather = pd.DataFrame([], columns=FC.WEATHER_COLUMNS)
    rows = FC.forecast_rows(cells, weather, ForecastConfig(), AS_OF)
    overall = [r for r in rows if r["kind"] == "overall"]
    assert overall and all(r["n_groups"] == 0 and r["mape_model_pct"] is None and r["reason"] == "no_backtest"
                           for r in overall)
    assert [r for r in rows if r["kind"] != "overall"] == []
