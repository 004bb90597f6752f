"""Holidays and weather (issue 16 item 5): holiday periods, vacancy that skips them, the calendar the run
uses, temperature slopes, and the generator's weather, bills and holiday absences."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from gridpersona.config import load_settings
from gridpersona.config.holidays import default_calendar, holiday_period_dates
from gridpersona.contracts.bronze import HOLIDAY_CALENDAR
from gridpersona.stages.calendar import holiday_calendar
from gridpersona.synthetic import generate as G
from gridpersona.transform import alerts as AL
from gridpersona.transform import features as FV
from gridpersona.transform import tags as TG
from gridpersona.transform.shapes import tariff_slot_masks

d = dt.date
DAILY_SCHEMA = ("meter_id string, date date, slot_kwh array<double>, daily_kwh double, completeness double, "
                "peak_share double, flat_share double, valley_share double, load_factor double, max_kwh double, "
                "is_weekend boolean")
ARCHIVE_SCHEMA = (
    "customer_id string, meter_id string, customer_name string, phone string, address string, region string, "
    "customer_type string, tariff_type string, age_band string, household_size int, housing_type string, "
    "contracted_capacity_kva double, products_held string, do_not_contact boolean, vip boolean, "
    "account_open_date date")


@pytest.fixture(scope="module")
def settings():
    return load_settings("test")


def _day(meter: str, day: dt.date, kwh: float) -> tuple:
    slots = [kwh / 24.0] * 24
    return (meter, day, slots, kwh, 1.0, 0.3, 0.4, 0.3, 1.0, kwh / 24.0, day.weekday() >= 5)


def _view(spark, settings, rows, meters, regions=None, weather=None, holidays=frozenset(), as_of=None):
    archive = spark.createDataFrame(
        [(f"C_{m}", m, None, None, None, (regions or {}).get(m, "SA01"), "residential", None, None, None, None,
          None, None, False, None, None) for m in meters], ARCHIVE_SCHEMA)
    empty = spark.createDataFrame([], "customer_id string")
    segments = spark.createDataFrame([], "meter_id string, segment_id int, segment_label string")
    return FV.customer_feature_view(
        archive, segments, spark.createDataFrame(rows, DAILY_SCHEMA), empty, empty, empty, empty,
        as_of=as_of or max(r[1] for r in rows), interval_minutes=60, time_zone="Asia/Shanghai",
        params=settings.tags.features, absent=frozenset(FV.OPTIONAL_SOURCES), weather=weather,
        holiday_dates=holidays)


# ------------------------------------------------------------------ holiday periods (no Spark)


def test_holiday_periods_take_the_adjacent_weekend_and_respect_make_up_working_days():
    cn = default_calendar("cn", d(2026, 2, 1), d(2026, 10, 31))
    off = {r.date for r in cn if r.day_off}
    work = {r.date for r in cn if not r.day_off}
    spring = holiday_period_dates(d(2026, 2, 9), d(2026, 3, 1), off, work)
    # Spring Festival: 15-23 Feb off; Saturday 14 Feb and Saturday 28 Feb are make-up working days.
    assert spring == {d(2026, 2, 15) + dt.timedelta(days=k) for k in range(9)}
    assert d(2026, 2, 14) not in spring and d(2026, 3, 1) not in spring
    # Without the make-up day, Saturday 14 Feb would be a day off next to the holiday: in the period.
    assert d(2026, 2, 14) in holiday_period_dates(d(2026, 2, 9), d(2026, 3, 1), off, work - {d(2026, 2, 14)})
    # Dragon Boat Festival (Fri 19 - Sun 21 June): a three-day period; the weekend before is ordinary.
    june = holiday_period_dates(d(2026, 6, 1), d(2026, 6, 30), off, work)
    assert june == {d(2026, 6, 19), d(2026, 6, 20), d(2026, 6, 21)}
    # A range cut inside a period still sees the period (its days inside the range).
    assert holiday_period_dates(d(2026, 10, 5), d(2026, 10, 12), off, work) == {d(2026, 10, k) for k in (5, 6, 7)}
    assert default_calendar("none", d(2026, 1, 1), d(2026, 12, 31)) == []
    with pytest.raises(ValueError, match="unknown holiday calendar country"):
        default_calendar("fr", d(2026, 1, 1), d(2026, 1, 2))


# ------------------------------------------------------------------ the run's calendar


def test_holiday_calendar_reads_the_table_else_the_configured_default(make_settings, spark, tmp_path):
    from gridpersona.lake import Lake

    first, last = d(2026, 9, 24), d(2026, 10, 7)
    settings = make_settings(f"lake.root={tmp_path / 'lake'}")
    lake = Lake(settings, spark)
    built_in = holiday_calendar(lake, settings, first, last)
    assert built_in.source == "built-in cn" and d(2026, 10, 1) in built_in.days_off
    assert built_in.period_dates() == {d(2026, 9, k) for k in (25, 26, 27)} | {d(2026, 10, k) for k in range(1, 8)}
    assert "built-in cn" in built_in.note
    none = holiday_calendar(lake, make_settings(f"lake.root={tmp_path / 'lake'}", "calendar.country=none"),
                            first, last)
    assert none.source == "built-in none" and not none.days_off and not none.period_dates()

    # A utility calendar: only 1-3 October off, Sunday 4 October a make-up working day.
    rows = [(d(2026, 10, k), "National Day", True) for k in (1, 2, 3)] + [(d(2026, 10, 4), "National Day", False)]
    lake.write_arrow(HOLIDAY_CALENDAR.name, pa.Table.from_pydict(
        {"date": [r[0] for r in rows], "holiday_name": [r[1] for r in rows], "day_off": [r[2] for r in rows]},
        schema=G.arrow_schema(HOLIDAY_CALENDAR)), mode="overwrite")
    table = holiday_calendar(lake, none_settings := make_settings(f"lake.root={tmp_path / 'lake'}",
                                                                  "calendar.country=none"), first, last)
    assert table.source == HOLIDAY_CALENDAR.name and table.workdays == {d(2026, 10, 4)}
    assert table.period_dates() == {d(2026, 10, 1), d(2026, 10, 2), d(2026, 10, 3)}
    # A table without a row for the range's years is no calendar for them: the default applies, and the note says so.
    later = holiday_calendar(lake, settings, d(2028, 9, 24), d(2028, 10, 7))
    assert later.source == "built-in cn" and "no row for 2028" in later.note
    assert none_settings.calendar.country == "none"


# ------------------------------------------------------------------ vacancy skips holiday periods


def test_vacancy_skips_holiday_periods(spark, settings):
    days = [d(2026, 9, 17) + dt.timedelta(days=k) for k in range(21)]  # 17 Sep .. 7 Oct
    period = frozenset({d(2026, 9, k) for k in (25, 26, 27)} | {d(2026, 10, k) for k in range(1, 8)})
    rows = []
    for day in days:
        rows.append(_day("M_AWAY", day, 0.8 if day >= d(2026, 10, 1) else 9.0))  # away over National Day only
        rows.append(_day("M_VACANT", day, 0.6))  # near-zero throughout
        # Near-zero from 28 Sep (two working days before the holiday, the holiday, the window's end).
        rows.append(_day("M_SPAN", day, 0.7 if day >= d(2026, 9, 28) else 8.0))
        # Near-zero over the Mid-Autumn weekend and after it: the holiday neither starts nor breaks the run.
        rows.append(_day("M_AFTER", day, 0.7 if d(2026, 9, 26) <= day <= d(2026, 9, 30) else 8.0))
    meters = ["M_AWAY", "M_VACANT", "M_SPAN", "M_AFTER"]
    view = _view(spark, settings, rows, meters, holidays=period).cache()
    fixed = {r["meter_id"]: r for r in view.collect()}
    plain = {r["meter_id"]: r for r in FV.meter_load_features(
        spark.createDataFrame([r for r in rows if r[0] in ("M_AWAY", "M_AFTER")], DAILY_SCHEMA), as_of=days[-1],
        interval_minutes=60, params=settings.tags.features).collect()}
    # Without the calendar the National Day absence reads as a 7-day vacancy run.
    assert plain["M_AWAY"]["current_near_zero_run_days"] == 7
    assert (fixed["M_AWAY"]["current_near_zero_run_days"], fixed["M_AWAY"]["longest_near_zero_run_days"],
            fixed["M_AWAY"]["near_zero_days"]) == (0, 0, 0)
    # A vacant premise stays vacant across the holidays: its 11 ordinary days form one run.
    assert fixed["M_VACANT"]["current_near_zero_run_days"] == 11 and fixed["M_VACANT"]["near_zero_days"] == 11
    # Only the ordinary days of a run count: 28-30 Sep.
    assert fixed["M_SPAN"]["current_near_zero_run_days"] == 3
    # 26-27 Sep are holiday days: the run is 28-30 Sep, and the (busy) National Day days do not break it.
    assert fixed["M_AFTER"]["longest_near_zero_run_days"] == 3 and fixed["M_AFTER"]["current_near_zero_run_days"] == 3
    assert plain["M_AFTER"]["longest_near_zero_run_days"] == 5
    tagged = {r["customer_id"]: r["vacancy"] for r in TG.compile_tags(view, settings.tags).collect()}
    view.unpersist()
    assert tagged == {"C_M_AWAY": False, "C_M_VACANT": True, "C_M_SPAN": False, "C_M_AFTER": False}


def test_vacancy_alert_run_skips_holiday_periods(spark, settings):
    days = [d(2026, 9, 21) + dt.timedelta(days=k) for k in range(22)]  # 21 Sep .. 12 Oct
    period = frozenset({d(2026, 9, k) for k in (25, 26, 27)} | {d(2026, 10, k) for k in range(1, 8)})
    rows = ([_day("M_AWAY", day, 0.8 if d(2026, 10, 1) <= day <= d(2026, 10, 7) else 9.0) for day in days]
            + [_day("M_VACANT", day, 0.5) for day in days])
    daily = spark.createDataFrame(rows, DAILY_SCHEMA).select("meter_id", "date", "slot_kwh", "daily_kwh",
                                                             "completeness")
    customers = spark.createDataFrame([("C_AWAY", "M_AWAY", "R1", None), ("C_VACANT", "M_VACANT", "R1", None)],
                                      "customer_id string, meter_id string, plan_id string, account_close_date date")
    masks = tariff_slot_masks(settings.tariff, 60)

    def runs(holidays):
        progress = AL.daily_progress(daily, customers, masks=masks, params=settings.alerts,
                                     near_zero_kwh=settings.tags.features.near_zero_daily_kwh,
                                     days=[d(2026, 10, 7), d(2026, 10, 12)], holiday_dates=holidays)
        return {(r["customer_id"], r["date"].day): r["near_zero_run_days"] for r in progress.collect()}

    # The run counts within the bill period (October): without the calendar, National Day is a 7-day run.
    assert runs(frozenset()) == {("C_AWAY", 7): 7, ("C_AWAY", 12): 0, ("C_VACANT", 7): 7, ("C_VACANT", 12): 12}
    # With it, the holiday days are skipped: no run for the absence; the vacant premise counts 8-12 Oct.
    assert runs(period) == {("C_AWAY", 7): 0, ("C_AWAY", 12): 0, ("C_VACANT", 7): 0, ("C_VACANT", 12): 5}


# ------------------------------------------------------------------ temperature slopes


def test_temperature_slopes_follow_degree_days_and_say_why_when_unknown(spark, settings):
    days = [d(2026, 7, 1) + dt.timedelta(days=k) for k in range(14)]
    temps = [20.0 + k for k in range(14)]  # 20 .. 33 C: cooling degree-days 0 .. 11
    cdd = [max(0.0, t - settings.tags.features.cooling_base_c) for t in temps]
    rows = ([_day("M_AC", day, 5.0 + 0.8 * c) for day, c in zip(days, cdd)]
            + [_day("M_FLAT", day, 6.0) for day in days]
            + [_day("M_NOWX", day, 6.0) for day in days]  # its region has no weather
            + [_day("M_SHORT", day, 6.0) for day in days[:5]])
    weather = spark.createDataFrame([("SA01", day, t) for day, t in zip(days, temps)],
                                    "region string, date date, temp_mean_c double")
    meters = ["M_AC", "M_FLAT", "M_NOWX", "M_SHORT"]
    frame = _view(spark, settings, rows, meters, regions={"M_NOWX": "SA09"}, weather=weather,
                  as_of=days[-1]).cache()
    view = {r["meter_id"]: r for r in frame.collect()}
    assert view["M_AC"]["cooling_kwh_per_degree"] == pytest.approx(0.8)
    assert view["M_AC"]["heating_kwh_per_degree"] is None  # July: no heating day to fit on
    assert view["M_AC"]["weather_days"] == 14 and view["M_AC"]["weather_reason"] is None
    assert view["M_FLAT"]["cooling_kwh_per_degree"] == pytest.approx(0.0, abs=1e-9)
    assert (view["M_NOWX"]["cooling_kwh_per_degree"], view["M_NOWX"]["weather_reason"]) == (None, "no_weather")
    assert (view["M_SHORT"]["cooling_kwh_per_degree"], view["M_SHORT"]["weather_reason"]) == (None, "too_few_days")
    tagged = {r["customer_id"]: r["weather_sensitive"] for r in TG.compile_tags(frame, settings.tags).collect()}
    frame.unpersist()
    assert tagged == {"C_M_AC": False, "C_M_FLAT": False, "C_M_NOWX": None, "C_M_SHORT": None}
    # No bronze.weather at all: every slope unknown, said as no_weather.
    absent = _view(spark, settings, rows, ["M_AC"], as_of=days[-1]).first()
    assert (absent["cooling_kwh_per_degree"], absent["weather_reason"]) == (None, "no_weather")


# ------------------------------------------------------------------ the generator


def test_generated_bills_follow_the_written_weather_and_grow(settings):
    start, days, seed = d(2026, 6, 1), 14, 7
    grid_dates = [start + dt.timedelta(days=k) for k in range(days)]
    snapshot = grid_dates[-1]
    months = G._billing_months(snapshot, 24)
    weather = G._weather(grid_dates, seed, span_start=months[0])
    # The window's temperatures do not depend on how far back the series goes.
    assert np.array_equal(G._weather(grid_dates, seed).temp_c, weather.temp_c)
    assert np.array_equal(weather.span_temp_c[-days:], weather.temp_c) and weather.span_start == months[0]
    table = G._weather_table(weather).to_pydict()
    assert set(table["region"]) == set(G._REGIONS) and min(table["date"]) == months[0]
    assert max(table["date"]) == snapshot

    pop = G._population({"evening_peak": 1.0, "electric_heating": 1.0}, 40, 0.0, seed, weather)
    cust = G._customers(pop, seed, months[0])
    shares = np.full((40, 3), 1 / 3)

    def bills(w, growth=0.0):
        t = G._billing(pop, cust, seed, 24, w, snapshot, settings.tariff, shares, start, growth).to_pydict()
        kwh = np.array(t["bill_kwh"]).reshape(40, 24)
        return kwh.sum(axis=0)

    base = bills(weather)
    # A hot spell in one past month (+6 C over its days in the written series) raises that month's bills only.
    hot = months[13]
    span = weather.span_temp_c.copy()
    first = (hot - weather.span_start).days
    span[first:first + 28] += 6.0
    warmer = bills(G.Weather(weather.temp_c, weather.factor, weather.norm, weather.hdd, weather.cdd,
                             weather.span_start, span))
    changed = np.flatnonzero(np.abs(warmer - base) > 1e-6)
    assert list(changed) == [13] and warmer[13] > 1.1 * base[13]
    # Growth: a month about a year before the window bills (1.04)^-1 of its kWh; the window's months 1.
    grown = bills(weather, 0.04)
    years = [(start - (m + dt.timedelta(days=15))).days / 365.25 for m in months]
    year_ago = int(np.argmin(np.abs(np.array(years) - 1.0)))
    assert grown[year_ago] / base[year_ago] == pytest.approx(1.04 ** -years[year_ago], rel=2e-3)
    assert G._bill_growth([d(2026, 6, 1)], start, 0.04)[0] == 1.0


def test_generated_holiday_absences_are_near_zero(make_settings, spark, tmp_path):
    from gridpersona.lake import Lake

    settings = make_settings(f"lake.root={tmp_path / 'lake'}", "generate.archetype_mix={evening_peak: 1.0}",
                             "generate.faults.unknown_meter_share=0", "generate.plant_outcomes=false")
    lake = Lake(settings, spark)
    counts = G.generate_lake(settings, lake, meters=40, days=10, start="2026-09-29")
    assert counts["bronze.holiday_calendar"] > 0 and counts["bronze.weather"] > 0
    ami = lake.read_arrow("bronze.ami_interval")
    meter = np.array(ami["meter_id"].to_pylist())
    date = np.array(ami["date"].to_pylist())
    kwh = np.nan_to_num(ami["kwh"].to_numpy(zero_copy_only=False))
    holiday = [d(2026, 10, k) for k in range(1, 8)]
    away = 0
    for m in np.unique(meter):
        daily = [kwh[(meter == m) & (date == day)].sum() for day in holiday]
        away += all(v < settings.tags.features.near_zero_daily_kwh for v in daily)
    # About 15% of the occupied homes shut down over National Day: near-zero every day of it, like a vacancy.
    assert 2 <= away <= 15
    calendar = lake.read_arrow(HOLIDAY_CALENDAR.name).to_pydict()
    assert d(2026, 10, 1) in calendar["date"] and d(2026, 10, 10) in calendar["date"]
    assert calendar["day_off"][calendar["date"].index(d(2026, 10, 10))] is False
