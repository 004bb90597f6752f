"""Mid-cycle alerts (transform/alerts.py, stage alerts): projection, price, threshold, once per period, consent."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from gridpersona.config import AlertsConfig, TariffConfig
from gridpersona.contracts.advice import ALERT_TARGETS
from gridpersona.contracts.bronze import BILLING_PAYMENT, WEATHER
from gridpersona.transform import alerts as AL

# Four 6-hour slots a day: valley, valley, flat, peak (hand-made masks keep the arithmetic by hand short).
MASKS = {"valley": [1.0, 1.0, 0.0, 0.0], "flat": [0.0, 0.0, 1.0, 0.0], "peak": [0.0, 0.0, 0.0, 1.0]}
PARAMS = AlertsConfig(min_days_elapsed=5, recent_days=7, min_completeness=0.9, ratio=1.3, min_increase_cny=30,
                      baseline_months=3, vacancy_run_days=3, holdout_share=0.1)
TARIFF = TariffConfig()
JUNE = dt.date(2026, 6, 1)
ARCHIVE_SCHEMA = ("customer_id string, meter_id string, customer_type string, tariff_type string, "
                  "do_not_contact boolean, account_close_date date, region string")
DAILY_SCHEMA = "meter_id string, date date, slot_kwh array<double>, daily_kwh double, completeness double"


def _june(day: int) -> dt.date:
    return JUNE.replace(day=day)


def _day(meter, day, slots, completeness=1.0):
    return (meter, _june(day), [float(x) for x in slots], float(sum(slots)), completeness)


def _bills(spark, rows):
    full = [(c, m, None, amount, None, None, None, None) for c, m, amount in rows]
    return spark.createDataFrame(full, BILLING_PAYMENT.schema)


def _alerts(spark, archive_rows, daily_rows, bill_rows, days, stored=None, params=PARAMS):
    """(priced progress rows, alert rows) of one run over ``days``; ``stored``: gold.alert_targets before it.
    ``archive_rows`` without a region are in SA01."""
    archive = spark.createDataFrame([r if len(r) == 7 else (*r, "SA01") for r in archive_rows], ARCHIVE_SCHEMA)
    daily = spark.createDataFrame(daily_rows, DAILY_SCHEMA)
    customers = AL.contactable_customers(archive, TARIFF)
    progress = AL.daily_progress(daily, customers, masks=MASKS, params=params, near_zero_kwh=1.5,
                                 days=days).localCheckpoint(eager=True)
    baselines = AL.bill_baselines(_bills(spark, bill_rows), sorted({AL.period_start(d) for d in days}),
                                  params.baseline_months)
    priced = AL.priced_progress(progress, baselines, tariff=TARIFF, params=params).localCheckpoint(eager=True)
    kept = stored.filter(~F.col("alert_date").isin(days)) if stored is not None else \
        spark.createDataFrame([], ALERT_TARGETS.schema)
    return priced.collect(), AL.drop_alerted(AL.alert_candidates(priced, params=params), kept).collect()


HIGH, NEAR_ZERO = [5, 5, 5, 5], [0.1, 0.1, 0.1, 0.1]
# c_tou (by hand below): June 1-4 4 kWh a day (valley 2, flat 1, peak 1); June 5 missing; June 6 incomplete;
# June 7-10 8 kWh. c_mean: 4 kWh a day, no bill of June 2025. The others: 20 or 0.4 kWh a day.
DAILY = ([_day("m_tou", d, [1, 1, 1, 1]) for d in range(1, 5)] + [_day("m_tou", 6, [9, 9, 9, 9], 0.5)]
         + [_day("m_tou", d, [2, 2, 2, 2]) for d in range(7, 11)]
         + [_day("m_mean", d, [1, 1, 1, 1]) for d in range(1, 13)]
         + [_day("m_gone", d, HIGH) for d in (1, 2)]  # readings stop after June 2
         + [_day(m, d, slots) for d in range(1, 15)
            for m, slots in (("m_high", HIGH), ("m_opt_out", HIGH), ("m_null", HIGH), ("m_unknown_plan", NEAR_ZERO),
                             ("m_unknown_plan_high", HIGH))])
ARCHIVE = [("c_tou", "m_tou", "residential", "tou", False, None),
           ("c_mean", "m_mean", "residential", "flat_rate", False, None),
           ("c_high", "m_high", "residential", "flat_rate", False, None),
           ("opt_out", "m_opt_out", "residential", "flat_rate", True, None),
           ("consent_null", "m_null", "residential", "flat_rate", None, None),
           ("unknown_plan", "m_unknown_plan", "residential", None, False, None),
           ("unknown_plan_high", "m_unknown_plan_high", "residential", "prepaid", False, None),
           ("c_gone", "m_gone", "residential", "tiered", False, None)]
BILLS = ([(c, dt.date(2025, 6, 1), 60.0 if c == "c_tou" else 50.0) for c, *_ in ARCHIVE if c != "c_mean"]
         + [("c_mean", dt.date(2026, m, 1), a) for m, a in ((2, 10.0), (3, 150.0), (4, 160.0), (5, 170.005))])
BACKFILL = [_june(d) for d in range(1, 13)]


@pytest.fixture(scope="module")
def backfill(spark):
    """A run over June 1-12: {(customer, day): priced row}, [alert rows]."""
    priced, rows = _alerts(spark, ARCHIVE, DAILY, BILLS, BACKFILL)
    return {(r["customer_id"], r["date"]): r for r in priced}, rows


def test_projection_and_price_of_a_made_up_tou_customer_by_hand(backfill):
    priced, rows = backfill
    r = priced[("c_tou", _june(10))]
    # 8 complete days; the last 7 days (June 4-10) hold 5 complete ones: valley (2 + 4x4)/5 = 3.6, flat and
    # peak (1 + 2x4)/5 = 1.8 a day, for the 30 - 8 = 22 days missing or left.
    assert (r["complete_days"], r["days_elapsed"], r["days_left"]) == (8, 10, 20)
    assert r["kwh_so_far"] == pytest.approx(48.0)
    assert r["projected_valley"] == Decimal("103.200000")    # 24 + 22 x 3.6
    assert r["projected_flat"] == r["projected_peak"] == Decimal("51.600000")  # 12 + 22 x 1.8
    assert r["projected_kwh"] == pytest.approx(206.4)
    # res_tou: 103.2 x 0.31 + 51.6 x 0.56 + 51.6 x 0.72 = 31.992 + 28.896 + 37.152
    assert r["plan_id"] == "res_tou" and r["projected_bill_cny"] == Decimal("98.04")
    # June 2025's bill: threshold max(1.3 x 60, 60 + 30) = 90 <= 98.04: an alert.
    assert (r["baseline_cny"], r["baseline_source"], r["threshold_cny"]) == (
        Decimal("60.00"), "same_month_last_year", Decimal("90.00"))
    # Five customers with a projection and a baseline are fewer than min_peers (20): no peer factor.
    assert r["peer_factor"] is None
    # June 9: 7 complete days, recent valley (2+2+4+4+4)/5 = 3.2, flat/peak 1.6, 23 days to project:
    # 93.6 x 0.31 + 46.8 x (0.56 + 0.72) = 88.92 < 90, so June 10 is the first crossing day.
    assert priced[("c_tou", _june(9))]["projected_bill_cny"] == Decimal("88.92")
    (alert,) = [a for a in rows if a["customer_id"] == "c_tou"]
    assert (alert["alert_type"], alert["alert_date"], alert["projected_bill_cny"], alert["days_left"]) == (
        "bill_projection", _june(10), Decimal("98.04"), 20)


def test_baseline_falls_back_to_the_mean_of_the_last_bills_and_the_ratio_can_set_the_threshold(backfill):
    priced, rows = backfill
    r = priced[("c_mean", _june(10))]
    assert r["projected_bill_cny"] == Decimal("67.20")  # 4 kWh a day: 120 kWh at 0.56 (res_flat)
    # No June 2025 bill: the mean of March-May (the last three), (150 + 160 + 170.01 (half up)) / 3 = 160.00.
    assert (r["baseline_cny"], r["baseline_source"]) == (Decimal("160.00"), "recent_bills_mean")
    assert r["threshold_cny"] == Decimal("208.00")  # 1.3 x 160 > 160 + 30
    assert not [a for a in rows if a["customer_id"] == "c_mean"]  # 67.20 < 208


def test_no_recent_complete_day_means_no_projection_and_no_price(backfill):
    priced, rows = backfill
    r = priced[("c_gone", _june(10))]  # nothing since June 2: no complete day among June 4-10
    assert (r["complete_days"], r["kwh_so_far"]) == (2, pytest.approx(40.0))
    assert r["projected_kwh"] is None and r["projected_bill_cny"] is None and r["plan_id"] == "res_tiered"
    assert priced[("c_gone", _june(5))]["projected_bill_cny"] is not None  # June 2 is among June 1-5


def test_no_consent_gets_no_row_and_an_unknown_plan_gets_no_bill_alert(backfill):
    _, rows = backfill
    got = sorted((r["customer_id"], r["alert_type"], r["alert_date"], r["near_zero_run_days"]) for r in rows)
    # c_high crosses every day from June 5 (min_days_elapsed): one row, the first of them. opt_out and
    # consent_null are as high, without a row; unknown plans get no bill alert, and a vacancy alert needs no
    # price: the third near-zero day in a row (vacancy_run_days 3).
    # c_gone: 620 kWh projected on June 5 from its two days (tiered: 370.20 >= 80).
    assert got == [("c_gone", "bill_projection", _june(5), 0), ("c_high", "bill_projection", _june(5), 0),
                   ("c_tou", "bill_projection", _june(10), 0), ("unknown_plan", "vacancy", _june(3), 3)]


def test_a_rerun_writes_the_same_rows_and_a_later_night_of_the_period_adds_none(spark, backfill):
    _, first = backfill
    stored = spark.createDataFrame(first, ALERT_TARGETS.schema)
    # The same days again: their partitions are replaced, so nothing stored outside them counts.
    _, again = _alerts(spark, ARCHIVE, DAILY, BILLS, BACKFILL, stored=stored)
    assert sorted(again) == sorted(first)
    # The next nights, with the backfill's rows stored: every customer still crosses, none is alerted twice.
    nights = [_june(13), _june(14)]
    _, unseen = _alerts(spark, ARCHIVE, DAILY, BILLS, nights)
    assert {(r["customer_id"], r["alert_date"]) for r in unseen} == {
        ("c_high", _june(13)), ("c_tou", _june(13)), ("unknown_plan", _june(13))}  # they still cross
    _, again_later = _alerts(spark, ARCHIVE, DAILY, BILLS, nights, stored=stored)
    assert again_later == []


def test_a_region_wide_rise_moves_the_baseline_and_an_individual_one_still_alerts(spark):
    # Region R1: four customers at 8 kWh a day (twice last June's use, like a hot month) and one at 20 (a
    # shock); R2 has two at 8 kWh, fewer than min_peers; "nr" (8 kWh) has no region.
    rows = {"r1a": ("R1", 2), "r1b": ("R1", 2), "r1c": ("R1", 2), "r1d": ("R1", 2), "r1_shock": ("R1", 5),
            "r2a": ("R2", 2), "r2b": ("R2", 2), "nr": (None, 2)}
    archive = [(c, f"m_{c}", "residential", "flat_rate", False, None, region) for c, (region, _) in rows.items()]
    daily = [_day(f"m_{c}", d, [k] * 4) for c, (_, k) in rows.items() for d in range(1, 11)]
    bills = [(c, dt.date(2025, 6, 1), 60.0) for c in rows]
    params = PARAMS.model_copy(update={"min_peers": 5})
    priced, alerts = _alerts(spark, archive, daily, bills, [_june(10)], params=params)
    by = {r["customer_id"]: r for r in priced}
    # 8 kWh x 30 days at 0.56 = 134.40 against 60: 2.24, the median of R1 (2.24 x 4 and 5.6) and of everyone.
    assert by["r1a"]["projected_bill_cny"] == Decimal("134.40")
    assert {c: by[c]["peer_factor"] for c in rows} == {**{c: pytest.approx(2.24) for c in rows},
                                                       "r2a": None, "r2b": None}
    # Threshold max(1.3 x 134.40, 134.40 + 30) = 174.72: the shock (336.00) crosses, its peers do not; R2's
    # pair, with too few peers, keeps the plain baseline (90.00) and is alerted.
    assert (by["r1a"]["threshold_cny"], by["nr"]["threshold_cny"], by["r2a"]["threshold_cny"]) == (
        Decimal("174.72"), Decimal("174.72"), Decimal("90.00"))
    assert sorted(a["customer_id"] for a in alerts) == ["r1_shock", "r2a", "r2b"]
    # Without the peer factor every one of them is alerted: the season reads as a shock.
    _, plain = _alerts(spark, archive, daily, bills, [_june(10)], params=params.model_copy(
        update={"baseline_adjust": "none"}))
    assert sorted(a["customer_id"] for a in plain) == sorted(rows)


# Monthly mean temperatures of region R1, June 2025 - May 2026 (then June 2026 at 30 deg C), and the
# bills of a customer whose use follows them exactly: kWh/day = 5 + 0.5 x hdd + 1.0 x cdd (bases 16 / 22).
TEMPS = [24, 28, 27, 23, 18, 12, 8, 6, 10, 14, 19, 22]


def _kwh_day(temp):
    return 5 + 0.5 * max(0, 16 - temp) + 1.0 * max(0, temp - 22)


def test_a_customer_whose_use_follows_the_weather_is_not_alerted_in_a_hotter_month_and_a_shock_is(spark):
    months = [dt.date(2025 + (5 + i) // 12, (5 + i) % 12 + 1, 1) for i in range(12)]
    weather = [("R1", m + dt.timedelta(days=d), float(t)) for m, t in zip(months, TEMPS)
               for d in range((dt.date(m.year + m.month // 12, m.month % 12 + 1, 1) - m).days)]
    weather += [("R1", _june(d), 30.0) for d in range(1, 15)]
    # c_ac and c_shock: a year of weather-following bills (June 2025 at 24 deg C: 7 kWh/day, 210 kWh, 117.60
    # CNY); c_short: only the last 6 of them. June 2026 is 30 deg C: 13 kWh/day expected. c_ac uses that,
    # c_shock twice it, c_short the weather's 13.
    def bills(c, ms):
        return [(c, m, _kwh_day(t) * ((dt.date(m.year + m.month // 12, m.month % 12 + 1, 1) - m).days),
                 117.6 if m == months[0] else None, None, None, None, None) for m, t in zip(months, TEMPS) if m in ms]
    bill_rows = bills("c_ac", months) + bills("c_shock", months) + bills("c_short", months[6:]) + [
        ("c_short", months[0], 210.0, 117.6, None, None, None, None)]
    use = {"c_ac": 13.0, "c_shock": 26.0, "c_short": 13.0}
    archive = spark.createDataFrame([(c, f"m_{c}", "residential", "flat_rate", False, None, "R1") for c in use],
                                    ARCHIVE_SCHEMA)
    daily = spark.createDataFrame([_day(f"m_{c}", d, [k / 4] * 4) for c, k in use.items() for d in range(1, 11)],
                                  DAILY_SCHEMA)
    billing = spark.createDataFrame(bill_rows, BILLING_PAYMENT.schema)
    days = [_june(10)]

    def run(adjust):
        params = PARAMS.model_copy(update={"baseline_adjust": adjust, "baseline_months": 0})
        customers = AL.contactable_customers(archive, TARIFF)
        progress = AL.daily_progress(daily, customers, masks=MASKS, params=params, near_zero_kwh=1.5, days=days)
        baselines = AL.bill_baselines(billing, [JUNE], 0)
        weather_in = AL.weather_inputs(billing, customers, spark.createDataFrame(weather, WEATHER.schema),
                                       days=days, params=params, heating_base_c=16.0, cooling_base_c=22.0,
                                       min_coverage=0.9)
        priced = AL.priced_progress(progress, baselines, tariff=TARIFF, params=params, weather=weather_in)
        alerts = AL.alert_candidates(priced, params=params).collect()
        return {r["customer_id"]: r for r in priced.collect()}, sorted(a["customer_id"] for a in alerts)

    by, alerted = run("weather")
    # 13 kWh/day x 30 at 0.56 = 218.40 against 117.60: the plain threshold max(1.3 x 117.60, 147.60) = 152.88.
    assert by["c_ac"]["projected_bill_cny"] == Decimal("218.40") and by["c_ac"]["baseline_cny"] == Decimal("117.60")
    # Its fit predicts 13 kWh/day at June 2026's 8 cooling degree-days a day and 7 at June 2025's 2: 13 / 7.
    assert by["c_ac"]["weather_factor"] == pytest.approx(13 / 7, rel=1e-4)
    assert by["c_shock"]["weather_factor"] == pytest.approx(13 / 7, rel=1e-4)
    assert by["c_short"]["weather_factor"] is None  # 7 bills, fewer than weather_min_bills (12)
    # Threshold 1.3 x 218.40 = 283.92: c_ac's 218.40 stays under it, c_shock's 436.80 crosses; c_short keeps
    # the plain baseline and is alerted for the weather.
    assert by["c_ac"]["threshold_cny"] == Decimal("283.92") and by["c_ac"]["peer_factor"] is None
    # (c_short, same use and baseline as c_ac: what the hot month alone does without the weather factor.)
    assert alerted == ["c_shock", "c_short"]


def test_shared_lake_alert_targets_hold_at_most_one_row_per_customer_type_and_period(synthetic_lake):
    lake = synthetic_lake.lake
    assert lake.exists(ALERT_TARGETS.name)
    alerts = lake.read(ALERT_TARGETS.name)
    assert alerts.count() > 0  # the lake's vacant homes at least (a week of near-zero days)
    twice = alerts.groupBy("customer_id", "alert_type", "period_start").count().filter(F.col("count") > 1)
    assert twice.count() == 0
    consent = synthetic_lake.lake.read("bronze.customer_archive").select("customer_id", "do_not_contact")
    assert alerts.join(consent, "customer_id").filter(F.coalesce("do_not_contact", F.lit(True))).count() == 0
