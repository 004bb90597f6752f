"""Portrait fields as numbers (issue 15 item 5): gold.customer_portrait and `report --customer`."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from gridpersona.app import cli
from gridpersona.config import load_settings
from gridpersona.contracts import pii_columns, spec_for
from gridpersona.contracts.tags import CUSTOMER_PORTRAIT, CUSTOMER_TAGS
from gridpersona.transform import features as FV
from gridpersona.transform import portrait as PT

AS_OF = dt.date(2026, 7, 5)  # a Sunday
FRI, SAT, SUN = AS_OF - dt.timedelta(days=2), AS_OF - dt.timedelta(days=1), AS_OF


def _days(*days) -> pa.Array:
    return pa.array([[{"date": d, "is_weekend": w, "slot_kwh": v} for d, w, v in meter] for meter in days],
                    type=pa.list_(pa.struct([("date", pa.date32()), ("is_weekend", pa.bool_()),
                                             ("slot_kwh", pa.list_(pa.float64()))])))


def test_day_type_curves_are_slot_means_per_day_type_and_null_without_days():
    days = _days(
        [(FRI, False, [1.0, 3.0]), (dt.date(2026, 7, 6), False, [3.0, 5.0]), (SAT, True, [2.0, 2.0]),
         (SUN, None, [9.0, 9.0])],  # a day of unknown type counts as neither
        [(SAT, True, [0.5, 1.5])],
        [],
    )
    out = FV.day_type_curves(days, slots=2).to_pylist()
    assert out[0] == {"weekday_curve": [2.0, 4.0], "weekend_curve": [2.0, 2.0]}
    assert out[1] == {"weekday_curve": None, "weekend_curve": [0.5, 1.5]}
    assert out[2] == {"weekday_curve": None, "weekend_curve": None}
    with pytest.raises(ValueError, match="holds 3 slots, expected 2"):
        FV.day_type_curves(_days([(FRI, False, [1.0, 2.0, 3.0])]), slots=2)


ARCHIVE_DDL = ("customer_id string, meter_id string, customer_name string, phone string, address string, "
               "region string, customer_type string, tariff_type string, age_band string, household_size int, "
               "housing_type string, contracted_capacity_kva double, products_held string, do_not_contact boolean, "
               "vip boolean, account_open_date date")
DAILY_DDL = ("meter_id string, date date, slot_kwh array<double>, daily_kwh double, completeness double, "
             "peak_share double, flat_share double, valley_share double, load_factor double, max_kwh double, "
             "is_weekend boolean")


def _day(meter: str, date: dt.date, slots: list[float], completeness: float = 1.0) -> tuple:
    return (meter, date, slots, sum(slots), completeness, 0.5, 0.3, 0.2, 0.4, max(slots), date.weekday() >= 5)


def test_portrait_numbers_on_a_hand_made_frame(spark):
    """C_A: a complete Friday (1 kWh/h for 12 h, then 3 kWh/h), a complete flat Saturday (2 kWh/h), an incomplete
    Sunday (left out); C_B: only an incomplete day; C_C: no load rows at all."""
    tags_config = load_settings("test").tags
    friday, saturday = [1.0] * 12 + [3.0] * 12, [2.0] * 24
    daily = spark.createDataFrame([_day("M_A", FRI, friday), _day("M_A", SAT, saturday),
                                   _day("M_A", SUN, [9.0] * 24, completeness=0.5),
                                   _day("M_B", SUN, [1.0] * 24, completeness=0.5)], DAILY_DDL)
    archive = spark.createDataFrame(
        [(f"C_{x}", f"M_{x}", "N", "P", "A", "SA01", "residential", "flat_rate", None, None, None, None, None, False,
          None, None) for x in "ABC"], ARCHIVE_DDL)
    segments = spark.createDataFrame([("M_A", 3, "evening_peak")], "meter_id string, segment_id int, segment_label string")
    d = dt.date
    billing = spark.createDataFrame([  # paid in the 12 months: 2 online (app, wechat), 1 auto-debit
        ("C_A", d(2026, 4, 1), 100.0, 56.0, d(2026, 4, 15), d(2026, 4, 10), 56.0, "app"),
        ("C_A", d(2026, 5, 1), 100.0, 56.0, d(2026, 5, 15), d(2026, 5, 10), 56.0, "wechat"),
        ("C_A", d(2026, 6, 1), 100.0, 56.0, d(2026, 6, 15), d(2026, 6, 10), 56.0, "auto_debit"),
    ], "customer_id string, bill_month date, bill_kwh double, bill_amount_cny double, due_date date, paid_date date, "
       "paid_amount_cny double, payment_channel string")
    utc = dt.timezone.utc
    interactions = spark.createDataFrame([
        ("I1", "C_A", dt.datetime(2026, 6, 1, 4, tzinfo=utc), "hotline", "inquiry", "bill"),
        ("I2", "C_A", dt.datetime(2026, 6, 2, 4, tzinfo=utc), "hotline", "inquiry", "bill"),
        ("I3", "C_A", dt.datetime(2026, 6, 3, 4, tzinfo=utc), "app", "inquiry", "app"),
    ], "interaction_id string, customer_id string, ts timestamp, channel string, interaction_type string, topic string")
    empty_contacts = spark.createDataFrame([], "contact_id string, customer_id string, campaign_id string, "
                                               "ts timestamp, channel string")
    empty_responses = spark.createDataFrame([], "campaign_id string, cycle_as_of date, customer_id string, "
                                                "responded boolean, response_ts timestamp")
    view = FV.customer_feature_view(archive, segments, daily, billing, interactions, empty_contacts, empty_responses,
                                    as_of=AS_OF, interval_minutes=60, time_zone="Asia/Shanghai",
                                    params=tags_config.features)
    # The tags as the stage passes them (its compiled gold.customer_tags rows), hand-made here so that the view is
    # computed once; the synthetic-lake test checks them against the tags stage's own.
    tags = spark.createDataFrame([("C_A", "online", "hotline"), ("C_B", None, None), ("C_C", None, None)],
                                 "customer_id string, payment_channel_pref string, interaction_channel_pref string")
    portrait = PT.customer_portrait(view, tags)
    assert [(f.name, f.dataType) for f in portrait.schema] == [(f.name, f.dataType) for f in CUSTOMER_PORTRAIT.schema]
    rows = {r["customer_id"]: r.asDict() for r in portrait.collect()}
    a, b, c = rows["C_A"], rows["C_B"], rows["C_C"]
    assert (a["as_of"], a["segment_id"], a["segment_label"], a["customer_type"]) == (AS_OF, 3, "evening_peak",
                                                                                     "residential")
    assert (a["days_observed"], a["days_used"]) == (3, 2)
    assert a["mean_daily_kwh"] == pytest.approx(48.0)
    assert a["monthly_mean_kwh"] == pytest.approx(48.0 * 365.25 / 12)  # 1461.0
    # Friday (3 - 1) / 3, Saturday (2 - 2) / 2: mean 1/3. The incomplete Sunday does not count.
    assert a["peak_valley_rate"] == pytest.approx(1 / 3)
    assert a["peak_to_mean"] == pytest.approx((3.0 / 2.0 + 2.0 / 2.0) / 2)  # max slot / mean slot, per day
    assert a["peak_demand_kw"] == pytest.approx(3.0) and a["weekend_ratio"] == pytest.approx(1.0)
    assert a["daily_kwh_cv"] == pytest.approx(0.0, abs=1e-12)
    assert a["weekday_curve"] == friday and a["weekend_curve"] == saturday
    assert (a["payment_channel_pref"], a["payment_channel_share"]) == ("online", pytest.approx(2 / 3))
    assert (a["interaction_channel_pref"], a["interaction_channel_share"]) == ("hotline", pytest.approx(2 / 3))
    assert a["kwh_pct_in_group"] == 0.0  # the only one with load in SA01 residential
    # Unknown stays null, and days_used / days_observed say why.
    load = ("monthly_mean_kwh", "mean_daily_kwh", "peak_share", "load_factor", "peak_valley_rate", "weekend_ratio",
            "peak_demand_kw", "kwh_pct_in_group", "weekday_curve", "weekend_curve")
    assert (b["days_observed"], b["days_used"], c["days_observed"], c["days_used"]) == (1, 0, 0, 0)
    assert all(b[k] is None and c[k] is None for k in load)
    # No bills or contacts for C_B: no preference, no share (not 0).
    assert (b["payment_channel_pref"], b["payment_channel_share"], b["interaction_channel_share"]) == (None,) * 3


def test_portrait_contract_has_no_pii_and_carries_the_tags_keys():
    spec = spec_for(CUSTOMER_PORTRAIT.name)
    assert spec is CUSTOMER_PORTRAIT and spec.partition_by == ("as_of",) and spec.keys == ("as_of", "customer_id")
    assert not set(spec.column_names) & pii_columns()


# ------------------------------------------------------------------ the shared synthetic lake


def _as_of_rows(lake, table, as_of):
    return lake.read(table).filter(F.col("as_of") == F.lit(as_of))


def test_synthetic_lake_portrait_has_one_row_per_tagged_customer_agreeing_with_tags_and_shapes(synthetic_lake):
    lake, as_of = synthetic_lake.lake, synthetic_lake.as_of
    portrait = {r["customer_id"]: r.asDict() for r in _as_of_rows(lake, CUSTOMER_PORTRAIT.name, as_of).collect()}
    tags = {r["customer_id"]: r.asDict() for r in _as_of_rows(lake, CUSTOMER_TAGS.name, as_of).collect()}
    assert len(portrait) == _as_of_rows(lake, CUSTOMER_PORTRAIT.name, as_of).count()  # one row per customer
    assert set(portrait) == set(tags)
    for cid, t in tags.items():
        p = portrait[cid]
        assert (p["customer_type"], p["segment_id"], p["segment_label"]) == (t["customer_type"], t["segment_id"],
                                                                             t["segment_label"]), cid
        assert (p["payment_channel_pref"], p["interaction_channel_pref"]) == (t["payment_channel_pref"],
                                                                              t["interaction_channel_pref"]), cid
        # The tag is cut from the same number: consumption_level reads kwh_pct_in_group (>= 0.7 high).
        if p["kwh_pct_in_group"] is not None and t["consumption_level"] is not None:
            assert (t["consumption_level"] == "high") == (p["kwh_pct_in_group"] >= 0.7), cid
    # An independent computation from silver.daily_load_shape for the meters of the window.
    settings = synthetic_lake.settings
    first = as_of - dt.timedelta(days=settings.pipeline.window_days - 1)
    complete = F.col("completeness") >= F.lit(settings.tags.features.min_completeness)
    meters = {r["customer_id"]: r["meter_id"] for r in lake.read("bronze.customer_archive")
              .select("customer_id", "meter_id").collect()}
    shapes = {r["meter_id"]: r for r in lake.read("silver.daily_load_shape")
              .filter(F.col("date").between(first, as_of) & complete).groupBy("meter_id")
              .agg(F.count(F.lit(1)).alias("days"), F.avg("daily_kwh").alias("kwh"),
                   F.avg(F.when(F.col("max_kwh") > 0, (F.col("max_kwh") - F.col("min_kwh")) / F.col("max_kwh")))
                   .alias("pvr")).collect()}
    used = [cid for cid, p in portrait.items() if p["days_used"]]
    assert len(used) > 0.8 * len(portrait)
    for cid, p in portrait.items():
        s = shapes.get(meters[cid])
        if s is None:
            assert p["days_used"] == 0 and p["monthly_mean_kwh"] is None and p["weekday_curve"] is None, cid
            continue
        assert p["days_used"] == s["days"], cid
        assert p["monthly_mean_kwh"] == pytest.approx(s["kwh"] * 365.25 / 12, rel=1e-9), cid
        assert p["peak_valley_rate"] == pytest.approx(s["pvr"], rel=1e-9), cid
        curves = [x for x in (p["weekday_curve"], p["weekend_curve"]) if x is not None]
        assert curves and all(len(x) == 1440 // settings.ami.interval_minutes for x in curves), cid


def _report(synthetic_lake, tmp_path, *args) -> int:
    overrides = [a for o in synthetic_lake.overrides for a in ("--set", o)]
    return cli.main(["--env", "test", *overrides, "--set", f"lake.root={synthetic_lake.root}", "report",
                     "--as-of", str(synthetic_lake.as_of), "--out", str(tmp_path / "r.html"), *args])


def test_report_customer_page_is_written_only_when_asked_and_unknown_ids_fail_in_one_line(synthetic_lake, tmp_path,
                                                                                          capsys):
    lake, as_of = synthetic_lake.lake, synthetic_lake.as_of
    ids = [r["customer_id"] for r in _as_of_rows(lake, CUSTOMER_PORTRAIT.name, as_of)
           .filter(F.col("days_used") > 0).orderBy("customer_id").limit(1).collect()]
    assert _report(synthetic_lake, tmp_path, "--customer", "NO_SUCH_CUSTOMER", "--customer", ids[0]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "NO_SUCH_CUSTOMER" in err and ids[0] not in err, err
    assert not (tmp_path / "r.html").exists()

    assert _report(synthetic_lake, tmp_path, "--customer", ids[0]) == 0
    out = capsys.readouterr().out
    assert f"customer pages: {ids[0]}" in out
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f'id="customer-{ids[0]}"' in html and f'title="Portrait radar {ids[0]}"' in html
    assert f'title="Load curve {ids[0]}"' in html and "percentile among peers" in html
    # The aggregate sections before the page name no customer: customer-level rows only where asked.
    head = html.split('<h2 id="customer-')[0]
    everyone = [r["customer_id"] for r in _as_of_rows(lake, CUSTOMER_PORTRAIT.name, as_of).select("customer_id").collect()]
    assert not [cid for cid in everyone if cid in head]
