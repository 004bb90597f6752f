"""The advice stage: prices and the rate advisor (gold.rate_comparison), similar homes (gold.neighbour_comparison)."""

from __future__ import annotations

import calendar
import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from pyspark.sql import functions as F

from gridpersona.config import ConfigError, NeighboursConfig, RateAdvisorConfig, TariffConfig, load_settings
from gridpersona.transform import neighbours as NB
from gridpersona.transform import pricing as PR

D = Decimal
KWH = dict(peak=D("0"), flat=D("0"), valley=D("0"))


def _plans():
    return TariffConfig().model_copy()


def test_tiered_flat_and_tou_charges_by_hand():
    t = _plans()
    tiered, flat, tou = t.plan("res_tiered"), t.plan("res_flat"), t.plan("res_tou")
    kwh = dict(peak=D("300"), flat=D("250"), valley=D("150"))  # 700 kWh
    # 260 x 0.56 + 340 x 0.61 + 100 x 0.86
    assert PR.plan_charge(tiered, kwh) == D("145.60") + D("207.40") + D("86.00")
    assert PR.plan_charge(flat, kwh) == D("392.00")
    assert PR.plan_charge(tou, kwh) == D("216.00") + D("140.00") + D("46.50")
    # Below the first limit a tiered plan is the flat price; a partial month pays its share, half-up.
    small = dict(peak=D("100"), flat=D("0"), valley=D("0"))
    assert PR.plan_charge(tiered, small) == PR.plan_charge(flat, small) == D("56.00")
    assert PR.plan_bill(flat, dict(peak=D("1"), flat=D("0"), valley=D("0")), 15, 30) == D("0.28")
    assert PR.plan_bill(flat, dict(peak=D("0.0625"), flat=D("0"), valley=D("0")), 1, 1) == D("0.04")  # 0.035 up


def test_spark_bill_column_equals_the_python_bill_to_the_cent(spark):
    t = _plans()
    rows = [(D(p), D(f), D(v), w, m) for p, f, v, w, m in [
        ("0.000000", "0", "0", 1, 31), ("259.999999", "0.000001", "0", 31, 31), ("400.5", "300.25", "123.125", 17, 30),
        ("12.345678", "0.000004", "8.5", 3, 28), ("0.0625", "0", "0", 1, 1), ("1000", "2000", "3000", 29, 31)]]
    # Prices of four decimals make charges of ten: the Spark twin must not round them on the way.
    four = TariffConfig(plans=[{"id": "x", "kind": "flat", "customer_types": ["residential"], "price": "0.5283"},
                               {"id": "y", "kind": "tiered", "customer_types": ["residential"],
                                "blocks": [{"up_to_kwh": "260.5", "price": "0.5283"}, {"price": "0.8617"}]}],
                        current_plan={})
    rows.append((D("324.200265"), D("0"), D("0"), 30, 30))  # flat: 171.2749999995 -> 171.27
    assert PR.plan_bill(four.plan("x"), dict(peak=D("324.200265"), flat=D(0), valley=D(0)), 30, 30) == D("171.27")
    df = spark.createDataFrame(rows, "peak decimal(18,6), flat decimal(18,6), valley decimal(18,6), w int, m int")
    plans = [*t.plans, *four.plans]
    got = df.select(*[PR.plan_bill_column(plan, {p: F.col(p) for p in PR.PERIODS}, F.col("w"), F.col("m")).alias(plan.id)
                      for plan in plans]).collect()  # one job for every plan
    for plan in plans:
        want = [PR.plan_bill(plan, dict(peak=p, flat=f, valley=v), w, m) for p, f, v, w, m in rows]
        assert [r[plan.id] for r in got] == want, plan.id


@pytest.mark.parametrize("override, message", [
    ("tariff.plans=[{id: x, kind: tou, customer_types: [residential], prices: {peak: 1, flat: 0.5}}]",
     "price for each of peak, flat and valley"),
    ("tariff.plans=[{id: x, kind: tiered, customer_types: [residential], blocks: [{up_to_kwh: 10, price: 1}]}]",
     "end with one block without up_to_kwh"),
    ("tariff.plans=[{id: x, kind: flat, customer_types: [residential], price: 1, prices: {peak: 1}}]", "drop prices"),
    ("tariff.current_plan={residential: {flat_rate: nope}}", "unknown plan 'nope'"),
    ("tariff.plans=[{id: x, kind: flat, customer_types: [residential], price: 0.12345}]", "more than 4 decimals"),
])
def test_a_wrong_plan_fails_at_config_load_naming_it(override, message):
    with pytest.raises(ConfigError, match=message):
        load_settings("test", [override])


def test_prices_are_exact_decimals_as_written():
    plan = load_settings("test").tariff.plan("res_tou")
    assert plan.prices["valley"] == D("0.31") and str(plan.prices["peak"]) == "0.72"


def _daily(spark, rows):
    """silver.daily_load_shape-like rows: (meter_id, date, slot_kwh, completeness); daily_kwh from the slots."""
    return spark.createDataFrame(
        [(m, d, s, float(sum(s)), c) for m, d, s, c in rows],
        "meter_id string, date date, slot_kwh array<double>, daily_kwh double, completeness double")


def _archive(spark, rows):
    """Archive rows (customer_id, meter_id, customer_type, tariff_type, region, housing_type, household_size
    [, account_close_date]); a row without a close date is an open account."""
    rows = [r if len(r) == 8 else (*r, None) for r in rows]
    return spark.createDataFrame(rows, "customer_id string, meter_id string, customer_type string, tariff_type string, "
                                       "region string, housing_type string, household_size int, account_close_date date")


def test_rate_advisor_prices_scales_months_and_says_why_it_does_not_recommend(spark):
    tariff = TariffConfig()
    masks = {"peak": [0.0] * 24, "flat": [0.0] * 24, "valley": [0.0] * 24}
    for h in range(24):  # hourly slots: 23-07 valley, 08-11 and 18-23 peak, else flat
        period = "valley" if h >= 23 or h < 7 else "peak" if 8 <= h < 11 or 18 <= h < 23 else "flat"
        masks[period][h] = 1.0
    night = [1.0 if (h >= 23 or h < 7) else 0.1 for h in range(24)]  # 8 + 1.6 = 9.6 kWh/day, mostly valley
    first, last = dt.date(2026, 6, 21), dt.date(2026, 7, 10)  # 10 June days + 10 July days
    days = [first + dt.timedelta(days=i) for i in range(20)]
    rows = [("m1", d, night, 1.0) for d in days]
    rows += [("m2", d, night, 1.0 if i % 2 else 0.5) for i, d in enumerate(days)]  # half the days too incomplete
    rows += [("m3", d, night, 1.0) for d in days]
    # 5.6 kWh a day, mostly at peak: 168 a month is under the first block (tiered costs what flat costs) and
    # time-of-use costs more.
    flatday = [0.5 if masks["peak"][h] else 0.1 for h in range(24)]
    rows += [("m5", d, flatday, 1.0) for d in days] + [("m6", d, night, 1.0) for d in days]
    daily = _daily(spark, rows)
    archive = _archive(spark, [("c1", "m1", "residential", "flat_rate", "r", "apartment", 2),
                               ("c2", "m2", "residential", "flat_rate", "r", "apartment", 2),
                               ("c3", "m3", "residential", None, "r", "apartment", 2),
                               ("c4", None, "residential", "tou", "r", "apartment", 2),
                               ("c5", "m5", "residential", "tiered", "r", "apartment", 2),
                               ("c6", "m6", "residential", "flat_rate", "r", "apartment", 2, dt.date(2026, 7, 1))])
    out = PR.rate_comparison(daily, archive, tariff=tariff, params=RateAdvisorConfig(min_days=15, min_saving_cny=100),
                             masks=masks, first=first, last=last, as_of=last)
    got = {(r["customer_id"], r["plan_id"]): r for r in out.collect()}
    assert {c for c, _ in got} == {"c1", "c2", "c3", "c5"}  # no meter, or closed by the as-of: no rows
    r = got[("c1", "res_tou")]
    # Each month holds 10 window days, all priced: the month's kWh is 10 days' x D / 10.
    per_day = {p: sum(v for v, m in zip(night, masks[p]) if m) for p in PR.PERIODS}
    bill = D(0)
    for dim in (30, 31):
        kwh = {p: (D(repr(per_day[p] * 10)) * dim / 10).quantize(D("0.000001")) for p in PR.PERIODS}
        bill += PR.plan_bill(tariff.plan("res_tou"), kwh, 10, dim)
    assert r["window_bill_cny"] == bill and r["days_used"] == 20 and r["days_in_window"] == 20
    assert r["annual_bill_cny"] == (bill * 365 / 20).quantize(D("0.01"), ROUND_HALF_UP)
    assert r["recommended_plan_id"] == "res_tou" and r["reason"] is None and got[("c1", "res_flat")]["is_current_plan"]
    assert r["annual_saving_cny"] == got[("c1", "res_flat")]["annual_bill_cny"] - r["annual_bill_cny"] > 100
    # Too few priced days: figures, but no recommendation; unknown current plan: no saving, no guess.
    assert got[("c2", "res_tou")]["days_used"] == 10 and got[("c2", "res_tou")]["reason"] == "insufficient_data"
    assert got[("c2", "res_tou")]["recommended_plan_id"] is None
    c3 = got[("c3", "res_tou")]
    assert c3["reason"] == "current_plan_unknown" and c3["annual_saving_cny"] is None and c3["is_current_plan"] is None
    # A tie with the current plan is no advice to switch: the current plan ranks first.
    c5 = got[("c5", "res_tiered")]
    assert c5["annual_bill_cny"] == got[("c5", "res_flat")]["annual_bill_cny"] and c5["cost_rank"] == 1
    assert c5["reason"] == "already_cheapest"


def test_similar_homes_fall_back_and_mark_the_efficient_fifth(spark):
    params = NeighboursConfig(min_peers=5, period_days=10, min_days=8, fallback=[["customer_type"]],
                              keys=["region", "customer_type", "housing_type", "household_size_band"])
    as_of = dt.date(2026, 7, 10)
    days = [as_of - dt.timedelta(days=i) for i in range(10)]
    use = {f"c{i}": 2.0 + i for i in range(9)}  # c0..c5: one fine group of 6; c6..c8 houses: too few, fall back
    rows, arch = [], []
    for c, kwh in use.items():
        i = int(c[1:])
        rows += [(f"m{i}", d, [kwh], 1.0) for d in days]
        arch.append((c, f"m{i}", "residential", "flat_rate", "north", "apartment" if i < 6 else "house", 3))
    rows += [("m9", d, [1.0], 1.0) for d in days[:5]]  # 5 complete days: below min_days
    arch.append(("c9", "m9", "residential", "flat_rate", "north", "apartment", 3))
    arch.append(("c10", "m10", "residential", "flat_rate", None, "apartment", 3))  # no readings, unknown region
    out = {r["customer_id"]: r for r in NB.neighbour_comparison(_daily(spark, rows), _archive(spark, arch),
                                                                 params=params, as_of=as_of).collect()}
    fine = [use[f"c{i}"] * 10 for i in range(6)]
    broad = [use[c] * 10 for c in use]
    assert out["c0"]["group_level"] == 0 and out["c0"]["peer_count"] == 6
    assert out["c0"]["group_key"] == "north|residential|apartment|3-4"
    assert out["c0"]["efficient_kwh"] == pytest.approx(np.percentile(fine, 20))
    assert out["c0"]["peer_median_kwh"] == pytest.approx(np.percentile(fine, 50))
    assert out["c6"]["group_level"] == 1 and out["c6"]["peer_count"] == 9
    assert out["c6"]["efficient_kwh"] == pytest.approx(np.percentile(broad, 20))
    assert [out[f"c{i}"]["state"] for i in range(6)] == ["great", "great", "good", "above", "above", "above"]
    assert out["c0"]["peer_pct"] == 0 and out["c5"]["peer_pct"] == pytest.approx(5 / 6)
    assert out["c9"]["state"] is None and out["c9"]["state_reason"] == "insufficient_data"
    assert out["c9"]["complete_days"] == 5 and out["c9"]["kwh_period"] is None
    assert out["c10"]["state_reason"] == "insufficient_data" and out["c10"]["group_level"] is None


# ------------------------------------------------------------------ on the shared synthetic lake

def _reprice(slots: list[list[float]], dates: list[dt.date], plan, masks, first, last) -> Decimal:
    """An independent bill: month by month from the slot kWh, with Python's Decimal (the documented rule)."""
    total = Decimal(0)
    months = sorted({d.replace(day=1) for d in [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]})
    for month in months:
        dim = calendar.monthrange(month.year, month.month)[1]
        in_window = sum(1 for i in range((last - first).days + 1)
                        if (first + dt.timedelta(days=i)).replace(day=1) == month)
        used = [s for s, d in zip(slots, dates) if d.replace(day=1) == month]
        if not used:
            continue
        kwh = {}
        for p in ("peak", "flat", "valley"):
            observed = 0.0
            for s in used:
                day = 0.0
                for v, m in zip(s, masks[p]):
                    day += v if m else 0.0
                observed += day
            kwh[p] = Decimal(repr(observed * dim / len(used))).quantize(Decimal("0.000001"), ROUND_HALF_UP)
        charge = sum((kwh[p] for p in kwh), Decimal(0))
        if plan.kind == "flat":
            charge = charge * plan.price
        elif plan.kind == "tou":
            charge = sum((kwh[p] * plan.prices[p] for p in kwh), Decimal(0))
        else:
            left, charge, low = charge, Decimal(0), Decimal(0)
            for b in plan.blocks:
                top = left if b.up_to_kwh is None else min(left, b.up_to_kwh)
                charge += max(Decimal(0), top - low) * b.price
                low = b.up_to_kwh if b.up_to_kwh is not None else low
        total += (charge * in_window / dim).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return total


@pytest.mark.e2e
def test_every_bill_equals_an_independent_pricing_of_the_daily_shapes(synthetic_lake):
    from gridpersona.transform.shapes import tariff_slot_masks

    s, lake = synthetic_lake.settings, synthetic_lake.lake
    as_of = synthetic_lake.as_of
    first = as_of - dt.timedelta(days=s.pipeline.window_days - 1)
    rates = lake.read("gold.rate_comparison").filter(F.col("as_of") == F.lit(as_of)).collect()
    customers = sorted({r["customer_id"] for r in rates})[:50]
    archive = {r["customer_id"]: r["meter_id"] for r in lake.read("bronze.customer_archive").collect()}
    meters = [archive[c] for c in customers]
    shapes = (lake.read("silver.daily_load_shape")
              .filter(F.col("meter_id").isin(meters) & F.col("date").between(first, as_of)
                      & (F.col("completeness") >= s.rate_advisor.min_completeness))
              .select("meter_id", "date", "slot_kwh").collect())
    masks = tariff_slot_masks(s.tariff, s.ami.interval_minutes)
    checked = 0
    for r in rates:
        if r["customer_id"] not in customers:
            continue
        days = sorted((x["date"], x["slot_kwh"]) for x in shapes if x["meter_id"] == archive[r["customer_id"]])
        want = _reprice([d[1] for d in days], [d[0] for d in days], s.tariff.plan(r["plan_id"]), masks, first, as_of)
        assert r["window_bill_cny"] == (want if days else None), (r["customer_id"], r["plan_id"])
        assert r["days_used"] == len(days)
        checked += 1
    assert checked >= 100  # 50 customers, two or three plans each


@pytest.mark.e2e
def test_every_compared_customer_has_a_big_enough_group_and_the_rest_a_reason(synthetic_lake):
    s, lake = synthetic_lake.settings, synthetic_lake.lake
    rows = lake.read("gold.neighbour_comparison").filter(F.col("as_of") == F.lit(synthetic_lake.as_of)).collect()
    archive = lake.read("bronze.customer_archive").filter(F.col("meter_id").isNotNull()).count()
    assert len(rows) == archive and len({r["customer_id"] for r in rows}) == archive
    stated = [r for r in rows if r["state"] is not None]
    assert stated and all(r["peer_count"] >= s.neighbours.min_peers and r["state_reason"] is None for r in stated)
    assert all(r["state_reason"] in ("insufficient_data", "no_group") for r in rows if r["state"] is None)
    # The efficient mark is the group's exact 20th percentile: recompute one group per level from the rows.
    for level in {r["group_level"] for r in stated}:
        key = next(r["group_key"] for r in stated if r["group_level"] == level)
        keys = next(r["group_keys"] for r in stated if r["group_level"] == level).split(",")
        members = [r for r in rows if r["kwh_period"] is not None]
        archive_rows = {a["customer_id"]: a for a in lake.read("bronze.customer_archive").collect()}
        bands = s.neighbours.household_size_bands

        def band(size):
            for b in bands:
                lo, hi = NB._band_range(b)
                if size is not None and size >= lo and (hi is None or size <= hi):
                    return b
            return None

        def key_of(cid):
            a = archive_rows[cid]
            vals = [band(a["household_size"]) if k == "household_size_band" else a[k] for k in keys]
            return None if any(v is None for v in vals) else "|".join(vals)

        peers = [r["kwh_period"] for r in members if key_of(r["customer_id"]) == key]
        mark = next(r["efficient_kwh"] for r in stated if r["group_level"] == level and r["group_key"] == key)
        assert mark == pytest.approx(np.percentile(peers, 100 * s.neighbours.efficient_percentile))


@pytest.mark.e2e
def test_tou_advice_reaches_the_tags_and_the_campaign_targets_only_savers(synthetic_lake):
    lake, as_of = synthetic_lake.lake, synthetic_lake.as_of
    tags = {r["customer_id"]: r for r in lake.read("gold.customer_tags").filter(F.col("as_of") == F.lit(as_of)).collect()}
    rates = lake.read("gold.rate_comparison").filter(F.col("as_of") == F.lit(as_of)).collect()
    recommended = {r["customer_id"]: r["plan_kind"] for r in rates if r["plan_id"] == r["recommended_plan_id"]}
    for cid, t in tags.items():
        if cid in recommended:
            assert t["tou_saver"] == (recommended[cid] == "tou"), cid
    assert any(t["tou_saver"] for t in tags.values()) and any(t["tou_saver"] is False for t in tags.values())
    targets = lake.read("gold.campaign_targets").filter(
        (F.col("as_of") == F.lit(as_of)) & (F.col("campaign_id") == "tou_rate_advice")).collect()
    assert targets and all(tags[t["customer_id"]]["tou_saver"] for t in targets)
