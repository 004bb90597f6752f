"""Segment and profile: typical shapes, vacancy, naming, stable ids, train/assign/profile on a small lake.

The end-to-end tests write a small silver.daily_load_shape built here in numpy
(hourly meters, four clearly different load archetypes plus vacant premises)
and a customer archive with PII columns, then run the stage functions.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pyarrow as pa
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from pyspark.sql import types as T

from gridpersona.contracts import segments as C
from gridpersona.contracts.bronze import BRONZE
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.segment import features as SF
from gridpersona.segment import ids as SI
from gridpersona.segment import kmeans as SK
from gridpersona.segment import labels as SL
from gridpersona.stages import segment_common as SC
from gridpersona.stages.profile import run_profile
from gridpersona.stages.runner import StageContext
from gridpersona.stages.segment_assign import run_segment_assign
from gridpersona.stages.segment_train import run_segment_train
from gridpersona.synthetic.generate import arrow_schema

DAILY = ("meter_id string, date date, slot_kwh array<double>, daily_kwh double, shape array<double>, "
         "peak_share double, flat_share double, valley_share double, max_kwh double, min_kwh double, "
         "load_factor double, completeness double, imputed_slots int, day_of_week int, is_weekend boolean")
MON = dt.date(2026, 6, 1)  # a Monday


def _day_row(meter, date, slot_kwh, completeness=1.0):
    slot_kwh = [float(x) for x in slot_kwh]
    total = float(sum(slot_kwh))
    shape = [x / total for x in slot_kwh] if total > 0 else [1.0 / len(slot_kwh)] * len(slot_kwh)
    n = len(slot_kwh)
    peak = sum(slot_kwh[i] for i in range(n) if 8 <= i * 24 // n < 11 or 18 <= i * 24 // n < 23)
    valley = sum(slot_kwh[i] for i in range(n) if i * 24 // n >= 23 or i * 24 // n < 7)
    return (meter, date, slot_kwh, total, shape, peak / total if total else None, (total - peak - valley) / total if total else None,
            valley / total if total else None, max(slot_kwh), min(slot_kwh),
            total / n / max(slot_kwh) if max(slot_kwh) else None, completeness, 0, date.isoweekday(), date.isoweekday() >= 6)


# ------------------------------------------------------------------ typical shape math


def _hand_days(spark):
    sat = MON + dt.timedelta(days=5)
    rows = [
        _day_row("a", MON, [1, 1, 1, 1]),                           # weekday, 4 kWh
        _day_row("a", MON + dt.timedelta(days=1), [0, 0, 2, 6]),    # weekday, 8 kWh
        _day_row("a", sat, [2, 0, 0, 2]),                           # weekend, 4 kWh
        _day_row("a", MON + dt.timedelta(days=2), [50, 0, 0, 0], completeness=0.5),  # incomplete: ignored
        _day_row("b", MON, [0, 3, 1, 0]),                           # weekday only: weekend reuses it
    ]
    return spark.createDataFrame(rows, DAILY)


def test_typical_shape_mean_of_daily_shapes(spark):
    out = {r["meter_id"]: r for r in SF.typical_shapes(_hand_days(spark), slots=4, method="mean_shape",
                                                        min_completeness=0.9).collect()}
    a, b = out["a"], out["b"]
    # weekday: mean of [.25,.25,.25,.25] and [0,0,.25,.75]; weekend: [.5,0,0,.5]
    assert a["features"] == pytest.approx([0.125, 0.125, 0.25, 0.5, 0.5, 0.0, 0.0, 0.5], abs=1e-11)
    assert (a["days_used"], a["weekday_days"], a["weekend_days"]) == (3, 2, 1)
    assert a["mean_daily_kwh"] == pytest.approx(16 / 3)
    assert a["weekday_daily_kwh"] == pytest.approx(6.0) and a["weekend_daily_kwh"] == pytest.approx(4.0)
    assert a["weekend_ratio"] == pytest.approx(4 / 6)
    assert b["features"] == pytest.approx([0, 0.75, 0.25, 0] * 2, abs=1e-11)
    assert b["weekend_days"] == 0 and b["weekend_ratio"] is None


def test_typical_shape_energy_weighted(spark):
    out = SF.typical_shapes(_hand_days(spark), slots=4, method="energy_weighted", min_completeness=0.9)
    # weekday: ([1,1,1,1] + [0,0,2,6]) / 12 kWh; weekend: [2,0,0,2] / 4 kWh
    expected = spark.createDataFrame([("a", [round(x, 9) for x in [1 / 12, 1 / 12, 3 / 12, 7 / 12, 0.5, 0.0, 0.0, 0.5]]),
                                      ("b", [0.0, 0.75, 0.25, 0.0] * 2)], "meter_id string, features array<double>")
    # chispa compares arrays exactly: both sides rounded to 9 decimals.
    rounded = out.select("meter_id", F.transform("features", lambda x: F.round(x, 9)).alias("features"))
    assert_df_equality(rounded, expected, ignore_row_order=True, ignore_nullable=True)


def test_day_type_sums_add_each_meters_days_in_list_order():
    import random

    import pyarrow as pa

    rng = random.Random(3)
    meters = []
    for m in range(5):
        days = [{"date": MON + dt.timedelta(days=d), "is_weekend": (d % 7) >= 5,
                 "daily_kwh": round(rng.uniform(0, 30), 3), "v": [rng.uniform(0, 1) for _ in range(6)]}
                for d in range(rng.randint(1, 20)) if rng.random() > 0.2]
        meters.append(days)
    meters.append([{"date": MON, "is_weekend": False, "daily_kwh": 2.0, "v": [0.5] * 6}])  # no weekend day
    got = SF.day_type_sums(pa.array(meters)).to_pylist()
    for days, row in zip(meters, got):
        for half, is_we in (("wd", False), ("we", True)):
            acc, kwh = [0.0] * 6, 0.0
            for d in (d for d in days if d["is_weekend"] == is_we):
                acc = [a + x for a, x in zip(acc, d["v"])]
                kwh = kwh + d["daily_kwh"]
            assert row[f"_{half}_sum"] == acc and row[f"_{half}_kwh"] == kwh  # exact: the same adds in order
        assert row["weekday_days"] + row["weekend_days"] == len(days)
    assert got[-1]["weekend_days"] == 0 and got[-1]["_we_sum"] == [0.0] * 6


def test_vacancy_rule_flags_low_consumption(spark):
    df = spark.createDataFrame([("m1", 0.4), ("m2", 1.49), ("m3", 1.5), ("m4", 12.0)], "meter_id string, mean_daily_kwh double")
    expected = spark.createDataFrame([("m1", 0.4, True), ("m2", 1.49, True), ("m3", 1.5, False), ("m4", 12.0, False)],
                                     "meter_id string, mean_daily_kwh double, is_vacant boolean")
    assert_df_equality(SF.flag_vacant(df, 1.5), expected, ignore_row_order=True, ignore_nullable=True)
    assert not any(r["is_vacant"] for r in SF.flag_vacant(df, None).collect())


# ------------------------------------------------------------------ naming


def _hours(slots):
    return (np.arange(slots) + 0.5) * 24.0 / slots


def _bump(h, c, w):
    d = (h - c + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / w) ** 2)


def _box(h, a, b):
    return ((h >= a) & (h < b)).astype(float) if a < b else ((h >= a) | (h < b)).astype(float)


def _norm(x):
    return x / x.sum()


def _archetype_shapes(slots=96):
    h = _hours(slots)
    evening = _norm(0.25 + 0.15 * _bump(h, 7.5, 1) + 0.2 * _bump(h, 13, 2.5) + 2.6 * _bump(h, 20.5, 1.5))
    double = _norm(0.25 + 1.9 * _bump(h, 7.8, 0.9) + 2.0 * _bump(h, 19.8, 1.3))
    flat = _norm(1.0 + 0.08 * _bump(h, 14, 4))
    night = _norm(0.15 + 2.5 * _box(h, 23, 7))
    # 8 kWh of evening-peak household plus 12 kWh charged 23:00-02:00
    ev = _norm(8 * evening + 12 * _norm(_box(h, 23, 2)))
    # 8 kWh of household plus a 2.5 kW heater every evening 21:00-00:30
    heating = _norm(8 * evening + 8.75 * _norm(_box(h, 21, 0.5)))
    commercial = _norm(0.15 + _box(h, 8, 18))
    return {"evening_peak": (evening, 9.0, 1.15), "double_peak": (double, 10.0, 1.15), "flat": (flat, 7.0, 1.15),
            "night": (night, 10.0, 1.15), "ev_night": (ev, 20.0, 1.1), "commercial_day": (commercial, 150.0, 0.35),
            "electric_heating": (heating, 16.75, 1.0),
            "vacant": (_norm(1.0 + 4 * _box(h, 19, 5.5)), 0.5, 1.0)}


def test_default_label_rules_name_archetype_centroids(make_settings):
    settings = make_settings()
    rules = SC.label_rules(settings)
    windows = SC.label_windows(settings)
    unnamed = SL.LabelRule("none", "无", "None", {})
    for code, (shape, kwh, weekend_ratio) in _archetype_shapes().items():
        feats = SL.centroid_features(np.concatenate([shape, shape]), slots=96, windows=windows,
                                    mean_daily_kwh=kwh, weekend_ratio=weekend_ratio)
        rule, _ = SL.label_centroid(feats, rules, unnamed)
        assert rule.code == code, (code, feats)
    assert {r.code: r.zh for r in rules}["evening_peak"] in ("高峰型", "晚高峰型")
    assert {r.code: r.zh for r in rules}["flat"] == "平稳型"


def test_label_rules_first_match_and_fallback():
    rules = [SL.LabelRule("night", "低谷型", "Night", {"night_share": (0.6, None)}),
             SL.LabelRule("flat", "平稳型", "Flat", {"peak_to_mean": (None, 1.6)})]
    fallback = SL.LabelRule("mixed", "混合型", "Mixed", {})
    assert SL.label_centroid({"night_share": 0.7, "peak_to_mean": 1.2}, rules, fallback)[0].code == "night"
    assert SL.label_centroid({"night_share": 0.3, "peak_to_mean": 1.2}, rules, fallback)[0].code == "flat"
    assert SL.label_centroid({"night_share": 0.3, "peak_to_mean": 3.0}, rules, fallback) == (fallback, 2)
    assert SL.label_centroid({"night_share": float("nan"), "peak_to_mean": 3.0}, rules, fallback)[0].code == "mixed"


def test_electric_heating_is_told_from_ev_charging_by_where_the_block_lies(make_settings):
    settings = make_settings()
    windows = SC.label_windows(settings)
    shapes = _archetype_shapes()
    heat, ev = (SL.centroid_features(np.concatenate([shapes[a][0]] * 2), slots=96, windows=windows)
                for a in ("electric_heating", "ev_night"))
    # The heater's block ends around midnight, the charger's lies mostly after it.
    assert heat["late_evening_share"] >= 0.35 and heat["small_hours_share"] < 0.25
    assert ev["small_hours_share"] >= 0.25
    rules = [r.code for r in SC.label_rules(settings)]
    assert rules.index("electric_heating") < rules.index("ev_night")


def test_overnight_heating_is_electric_heating_and_a_midnight_charging_block_stays_ev(make_settings):
    settings = make_settings()
    windows, rules = SC.label_windows(settings), SC.label_rules(settings)
    unnamed = SL.LabelRule("none", "无", "None", {})
    h = _hours(96)
    evening = _archetype_shapes()["evening_peak"][0]
    # 8 kWh of household plus a 1.2 kW heater from 18:30 until 07:00 (15 kWh): every night, peak in the evening.
    overnight = _norm(8 * evening + 15 * _norm(_box(h, 18.5, 7)))
    # The same household charging 12 kWh in a block centred on midnight on half the nights (6 kWh on average).
    charging = _norm(8 * evening + 6 * _norm(_box(h, 22.5, 2.5)))
    named = {}
    for name, shape in (("overnight", overnight), ("charging", charging)):
        feats = SL.centroid_features(np.concatenate([shape, shape]), slots=96, windows=windows,
                                    mean_daily_kwh=20.0, weekend_ratio=1.0)
        named[name] = SL.label_centroid(feats, rules, unnamed)[0].code
    assert named == {"overnight": "electric_heating", "charging": "ev_night"}


def test_unnamed_centroid_gets_a_label_from_its_own_curve(make_settings):
    settings = make_settings()
    h = _hours(48)
    windows = SC.label_windows(settings)

    def named(shape):
        feats = SL.centroid_features(np.concatenate([_norm(shape)] * 2), slots=48, windows=windows, mean_daily_kwh=9.0)
        [(rule, rank)] = SL.name_centroids([feats], SC.label_rules(settings), SC.day_parts(settings),
                                           broad_max_peak_to_mean=settings.segment.broad_max_peak_to_mean,
                                           sharp_min_peak_to_mean=settings.segment.sharp_min_peak_to_mean)
        return rule, rank

    # A broad late-evening rise with a deep night trough: neither flat nor an archetype.
    late, rank = named(0.9 + 0.6 * _bump(h, 22.75, 2.5) - 0.45 * _bump(h, 5, 2.5))
    assert (late.code, late.zh, late.en) == ("peak_late_evening_broad", "晚间平缓高峰型", "Late-evening broad peak")
    assert rank == len(SC.label_rules(settings))
    midday, _ = named(0.5 + 3.0 * _bump(h, 12.0, 0.6))
    assert midday.code == "peak_midday_sharp"


def test_centroids_with_the_same_label_are_told_apart():
    rule = SL.LabelRule("evening_peak", "高峰型", "Evening peak", {})
    feats = [{"daytime_share": 0.51, "evening_share": 0.38, "peak_to_mean": 2.0},
             {"daytime_share": 0.39, "evening_share": 0.39, "peak_to_mean": 2.0}]
    out = SL.distinct_labels([rule, rule], feats)
    assert [r.code for r in out] == ["evening_peak_home_by_day", "evening_peak_away_by_day"]
    assert [r.en for r in out] == ["Evening peak (home by day)", "Evening peak (away by day)"]
    assert out[0].zh != out[1].zh
    # Three alike: every code, zh and en name differs; order does not change the names.
    three = feats + [{"daytime_share": 0.45, "evening_share": 0.30, "peak_to_mean": 2.6}]
    out3 = SL.distinct_labels([rule] * 3, three)
    for attr in ("code", "zh", "en"):
        assert len({getattr(r, attr) for r in out3}) == 3
    assert SL.distinct_labels([rule] * 3, three[::-1]) == out3[::-1]
    # A pinned label (the vacancy segment) keeps its name; the other one is qualified.
    vacant = SL.LabelRule("vacant", "空置型", "Vacant", {})
    pinned = SL.distinct_labels([vacant, vacant], [{"mean_daily_kwh": 1.2}, {"mean_daily_kwh": 0.4}], pinned=[1])
    assert pinned[1] == vacant and pinned[0].code == "vacant_high_use"


def test_unknown_label_feature_is_a_config_error(make_settings):
    from gridpersona.config import ConfigError

    with pytest.raises(ConfigError, match="unknown feature"):
        make_settings('segment.labels=[{code: x, zh: 某, en: X, when: {nite_share: {min: 0.5}}}]')


# ------------------------------------------------------------------ stable ids


def test_match_ids_keep_ids_when_centroids_are_permuted():
    rng = np.random.default_rng(1)
    old = {3: rng.random(8), 5: rng.random(8), 9: rng.random(8)}
    order = [9, 3, 5]
    new = [old[i] + 0.01 * rng.random(8) for i in order]
    assert SI.match_ids(new, [0, 0, 0], old, slots=4, reserved=[0]) == order
    # An extra cluster gets a fresh id above every previous and reserved id.
    assert SI.match_ids([*new, rng.random(8) + 5], [0, 0, 0, 0], old, slots=4, reserved=[0]) == [*order, 10]
    # Fewer clusters: the nearest old ids are kept.
    assert SI.match_ids(new[:2], [0, 0], old, slots=4) == order[:2]


def test_first_ids_follow_a_canonical_order():
    a, b, c = np.eye(4)[[2, 0, 1]]
    ranks = [1, 0, 1]
    ids = SI.match_ids([a, b, c], ranks, {}, slots=4, reserved=[0])
    assert ids == [3, 1, 2]  # rule order first, then the weekday peak slot
    assert SI.match_ids([c, a, b], [1, 1, 0], {}, slots=4, reserved=[0]) == [2, 3, 1]


def test_hungarian_beats_greedy():
    cost = np.array([[1.0, 2.0], [1.1, 10.0]])  # greedy would take (0,0) and leave (1,1) = 10
    assert SI.hungarian(cost) == [(0, 1), (1, 0)]


def _blobs(rng, centers, n, spread):
    return np.concatenate([rng.normal(c, spread, (n, len(c))) for c in centers])


def test_ward_initialized_kmeans_finds_planted_groups_without_a_seed():
    rng = np.random.default_rng(3)
    points = _blobs(rng, [(0, 0), (5, 0), (0, 5)], 30, 0.4)
    inits = SK.ward_centers(points, np.ones(len(points)), [2, 3, 4])
    assert {k: len(c) for k, c in inits.items()} == {2: 2, 3: 3, 4: 4}
    centers, clusters, cost = SK.lloyd(points, inits[3], max_iter=40, tol=1e-6)
    truth = np.repeat([0, 1, 2], 30)
    assert SK.adjusted_rand_index(clusters, truth) == pytest.approx(1.0)
    assert SK.partition_agreement(clusters, truth) == 1.0
    # Deterministic: the same input gives bit-identical centers.
    again = SK.lloyd(points, SK.ward_centers(points, np.ones(len(points)), [3])[3], max_iter=40, tol=1e-6)
    assert np.array_equal(again[0], centers) and again[2] == cost


def test_silhouette_matches_mllib(spark):
    from pyspark.ml.evaluation import ClusteringEvaluator
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(5)
    points = _blobs(rng, [(0, 0, 0), (2, 1, 0), (0, 2, 2)], 12, 0.8)
    clusters = SK.lloyd(points, points[[0, 12, 24]], max_iter=20, tol=1e-9)[1]
    frame = spark.createDataFrame([(Vectors.dense(p.tolist()), int(c)) for p, c in zip(points, clusters)], ["v", "c"])
    expected = ClusteringEvaluator(featuresCol="v", predictionCol="c", distanceMeasure="squaredEuclidean").evaluate(frame)
    assert SK.silhouette(points, clusters) == pytest.approx(expected, abs=1e-9)


def test_choose_k_prefers_stability_among_near_best_silhouettes():
    sil = {3: 0.30, 4: 0.31, 5: 0.20}
    assert SK.choose_k(sil, {3: 0.95, 4: 0.70, 5: 1.0}, tolerance=0.02) == 3  # 5 is too far below the best
    assert SK.choose_k(sil, {3: 0.95, 4: 0.70, 5: 1.0}, tolerance=0.0) == 4
    assert SK.choose_k(sil, {3: 0.951, 4: 0.954, 5: 0.5}, tolerance=0.02) == 4  # equal at 0.01: silhouette decides


def test_partition_agreement_matches_clusters_one_to_one():
    assert SK.partition_agreement([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1]) == 1.0
    assert SK.partition_agreement([0, 0, 0, 1], [0, 0, 1, 1]) == 0.75


def test_adjusted_rand_index():
    assert SK.adjusted_rand_index([0, 0, 1, 1, 2, 2], ["b", "b", "a", "a", "c", "c"]) == pytest.approx(1.0)
    assert SK.adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)


# ------------------------------------------------------------------ end to end on a small lake

ARCHS = ("evening_peak", "night", "commercial_day", "flat", "vacant")
PER_ARCH = (14, 10, 8, 10, 6)
DAYS = 14


def _meter_day(arch, h, weekend, rng, shift, scale):
    if arch == "evening_peak":
        base = 0.25 + 0.2 * _bump(h - shift, 13, 2.5) + 2.6 * _bump(h - shift, 20.5, 1.5)
    elif arch == "night":
        base = 0.15 + 2.5 * _box((h - shift) % 24, 23, 7)
    elif arch == "commercial_day":
        base = 0.15 + (0.25 if weekend else 1.0) * _box((h - shift) % 24, 8, 18)
    elif arch == "flat":
        base = 1.0 + 0.08 * _bump(h, 14, 4)
    else:
        base = 1.0 + 4 * _box(h, 19, 5.5)
    noisy = base * rng.lognormal(0, 0.15, len(h))
    return scale * noisy / noisy.sum()


def _write_small_lake(spark, lake, seed=7):
    """silver.daily_load_shape (hourly, 48 meters x 14 days) and bronze.customer_archive; returns {meter: archetype}."""
    rng = np.random.default_rng(seed)
    h = _hours(24)
    truth, rows = {}, []
    scale_of = {"evening_peak": 9, "night": 10, "commercial_day": 150, "flat": 7, "vacant": 0.5}
    n = 0
    for arch, count in zip(ARCHS, PER_ARCH):
        for _ in range(count):
            n += 1
            meter = f"M{n:04d}"
            truth[meter] = arch
            shift, scale = rng.normal(0, 0.1), scale_of[arch] * rng.uniform(0.7, 1.3)
            for d in range(DAYS):
                date = MON + dt.timedelta(days=d)
                weekend = date.isoweekday() >= 6
                kwh = _meter_day(arch, h, weekend, rng, shift, scale * (0.43 if weekend and arch == "commercial_day" else 1))
                rows.append(_day_row(meter, date, kwh, completeness=0.5 if (n == 3 and d == 2) else 1.0))
    daily = spark.createDataFrame(rows, DAILY)
    lake.replace(daily, DAILY_LOAD_SHAPE.name, where={"date": [MON + dt.timedelta(days=d) for d in range(DAYS)]},
                 partition_by=["date"])
    spec = BRONZE["bronze.customer_archive"]
    meters = sorted(truth)
    cols = {c.name: [None] * len(meters) for c in spec.columns}
    cols.update(customer_id=[f"C{m[1:]}" for m in meters], meter_id=meters, customer_name=["张三"] * len(meters),
                phone=["13800000000"] * len(meters), address=["某路 1 号"] * len(meters), region=["R1"] * len(meters),
                customer_type=["residential"] * len(meters))
    lake.write_arrow("bronze.customer_archive", pa.table(cols, schema=arrow_schema(spec)))
    return truth


def _settings(root, *overrides):
    from gridpersona.config import load_settings

    return load_settings("test", [f"lake.root={root}", "ami.interval_minutes=60", "segment.k_min=3",
                                  "segment.k_max=5", *overrides])


def _ctx(settings, spark, lake, as_of=MON + dt.timedelta(days=DAYS - 1)):
    return StageContext(settings, spark, lake, as_of, DAYS)


def _segments(lake, as_of):
    return {r["meter_id"]: r for r in lake.read(C.CUSTOMER_SEGMENTS.name).filter(F.col("as_of") == as_of).collect()}


def _model_rows(lake):
    return sorted(lake.read_arrow(C.SEGMENT_MODEL.name).to_pylist(), key=lambda r: (r["model_version"], r["segment_id"]))


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """A small lake after segment-train, segment-assign and profile: (settings, lake, truth, results, first outputs)."""
    from gridpersona.lake import Lake

    settings = _settings(tmp_path_factory.mktemp("segment") / "lake")
    lake = Lake(settings, spark)
    truth = _write_small_lake(spark, lake)
    ctx = _ctx(settings, spark, lake)
    results = {"train": run_segment_train(ctx), "assign": run_segment_assign(ctx), "profile": run_profile(ctx)}
    first = {"model": _model_rows(lake), "segments": _segments(lake, ctx.as_of),
             "profile": [r for r in lake.read_arrow(C.SEGMENT_PROFILE.name).to_pylist() if r["as_of"] == ctx.as_of]}
    yield settings, lake, truth, results, first
    ctx.cache.release()


def test_train_names_each_archetype_and_reserves_vacant(trained):
    settings, lake, truth, results, first = trained
    model = first["model"]
    assert results["train"].outputs == {C.SEGMENT_MODEL.name: len(model)}
    assert model[0]["k"] == 4 and model[0]["k_selection"] == "silhouette_stability"  # four non-vacant archetypes
    assert set(json.loads(model[0]["silhouette_by_k"])) == set(json.loads(model[0]["stability_by_k"])) == {"3", "4", "5"}
    # Well-separated planted groups: a clear structure that any half of the meters recovers.
    assert model[0]["silhouette"] >= 0.25 and not model[0]["weak_structure"]
    assert model[0]["stability"] == pytest.approx(1.0)
    assert any("stability 100.0%" in n for n in results["train"].notes)
    vacant = [r for r in model if r["cluster_index"] is None]
    assert [(r["segment_id"], r["segment_label"], r["name_zh"]) for r in vacant] == [(0, "vacant", "空置型")]
    assert sorted(r["segment_label"] for r in model) == sorted(ARCHS)
    assert all(len(r["centroid"]) == 48 for r in model)
    assert sum(r["size"] for r in model) == len(truth)
    assert os.path.isdir(os.path.join(lake.root, model[0]["model_path"], "kmeans"))


def test_assign_recovers_the_planted_archetypes(trained):
    settings, lake, truth, results, first = trained
    segs = first["segments"]
    assert set(segs) == set(truth)
    assert all(segs[m]["segment_label"] == a for m, a in truth.items())
    assert SK.adjusted_rand_index([segs[m]["segment_id"] for m in sorted(truth)], [truth[m] for m in sorted(truth)]) == 1.0
    assert all(r["model_version"] == "20260614" and r["distance"] >= 0 and r["customer_id"] for r in segs.values())
    assert results["assign"].outputs == {C.CUSTOMER_SEGMENTS.name: len(truth)}


def test_profile_sizes_sum_to_the_meters_and_shares_to_one(trained):
    settings, lake, truth, results, first = trained
    rows = first["profile"]
    assert results["profile"].rows_in == len(truth)
    assert sum(r["meters"] for r in rows) == len(truth)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    by_label = {r["segment_label"]: r for r in rows}
    assert by_label["commercial_day"]["mean_daily_kwh"] > 50 > by_label["night"]["mean_daily_kwh"]
    assert by_label["night"]["valley_share"] > 0.6
    assert by_label["commercial_day"]["weekend_ratio"] == pytest.approx(0.43, abs=0.02)
    assert all(len(r["centroid_shape"]) == 48 for r in rows)


def test_no_pii_reaches_gold(trained):
    settings, lake, truth, results, first = trained
    pii = {c.name for c in BRONZE["bronze.customer_archive"].columns if c.pii}
    for table in (C.SEGMENT_MODEL.name, C.CUSTOMER_SEGMENTS.name, C.SEGMENT_PROFILE.name):
        assert not pii & set(lake.read(table).columns), table
    assert "张三" not in str(first["segments"]) and "13800000000" not in str(first["profile"])


def _own_copy(trained, spark, tmp_path, *overrides):
    """(settings, lake) over a copy of the trained lake: a test that writes leaves the module's lake as it was."""
    import shutil

    from gridpersona.lake import Lake

    root = tmp_path / "lake"
    shutil.copytree(trained[0].lake.root, root)
    settings = _settings(root, *overrides)
    return settings, Lake(settings, spark)


def test_assign_reuses_the_saved_model_without_retraining(spark, trained, monkeypatch, tmp_path):
    from pyspark.ml.clustering import KMeans

    first = trained[4]
    settings, lake = _own_copy(trained, spark, tmp_path)

    def no_fit(*a, **k):
        raise AssertionError("segment-assign must not train")

    monkeypatch.setattr(KMeans, "fit", no_fit)
    pinned = _settings(settings.lake.root, "segment.model_version=20260614")
    run_segment_assign(_ctx(pinned, spark, lake))
    assert _segments(lake, _ctx(pinned, spark, lake).as_of) == first["segments"]


def test_rerun_with_the_same_inputs_writes_identical_rows(spark, trained, tmp_path, monkeypatch):
    first = trained[4]
    settings, lake = _own_copy(trained, spark, tmp_path)
    computed = []

    def counted(*a, **k):
        computed.append(1)
        return SF.typical_shapes(*a, **k)

    monkeypatch.setattr(SC, "typical_shapes", counted)
    ctx = _ctx(settings, spark, lake)  # a new run: the features are recomputed from the lake, then shared
    run_segment_train(ctx)
    run_segment_assign(ctx)
    run_profile(ctx)
    ctx.cache.release()
    assert len(computed) == 1  # not the first run's frame, and once for train and assign

    # The same version, replaced by the same rows; only the config hash differs (the copy's lake.root).
    def without_hash(rows):
        return [{k: v for k, v in r.items() if k != "config_hash"} for r in rows]

    assert without_hash(_model_rows(lake)) == without_hash(first["model"])
    assert {r["config_hash"] for r in _model_rows(lake)} == {settings.config_hash()}
    assert _segments(lake, ctx.as_of) == first["segments"]
    profile = [r for r in lake.read_arrow(C.SEGMENT_PROFILE.name).to_pylist() if r["as_of"] == ctx.as_of]
    assert _stable(profile) == _stable(first["profile"])


def _stable(rows: list[dict]) -> list[dict]:
    """Rows by segment id, doubles to 9 decimals: file order and summation order may differ between runs."""
    def value(v):
        if isinstance(v, float):
            return round(v, 9)
        return [value(x) for x in v] if isinstance(v, list) else v

    return sorted(({k: value(v) for k, v in r.items()} for r in rows), key=lambda r: r["segment_id"])


def test_retrain_with_another_seed_keeps_segments_ids_and_names(spark, trained, tmp_path):
    first = trained[4]
    other, lake = _own_copy(trained, spark, tmp_path, "segment.seed=99")
    ctx = _ctx(other, spark, lake)
    run_segment_train(ctx)
    run_segment_assign(ctx)
    after = _segments(lake, ctx.as_of)
    assert {m: (r["segment_id"], r["segment_label"]) for m, r in after.items()} == \
        {m: (r["segment_id"], r["segment_label"]) for m, r in first["segments"].items()}
    # Training draws nothing at random: the centroids are the same.
    assert [r["centroid"] for r in _model_rows(lake)] == [r["centroid"] for r in first["model"]]
    assert {r["model_version"] for r in _model_rows(lake)} == {"20260614"}  # replaced, not added


def test_assign_without_a_model_says_what_to_do(spark, tmp_path):
    from gridpersona.lake import Lake

    settings = _settings(tmp_path / "lake")
    lake = Lake(settings, spark)
    _write_small_lake(spark, lake)
    with pytest.raises(LookupError, match="segment-train"):
        run_segment_assign(_ctx(settings, spark, lake))


def test_report_says_when_the_segments_are_a_continuum():
    from gridpersona.analyst.report import _model_structure

    class StubLake:
        def __init__(self, rows):
            self.rows = rows

        def exists(self, table):
            return table == C.SEGMENT_MODEL.name

        def read_arrow(self, table):
            return pa.Table.from_pylist(self.rows)

    weak = {"model_version": "20090531", "k": 4, "silhouette": 0.143, "stability": 0.74, "weak_structure": True}
    clear = dict(weak, model_version="20260614", silhouette=0.899, stability=1.0, weak_structure=False)
    [line] = _model_structure(StubLake([weak, weak]), {"20090531"})
    assert "silhouette 0.143" in line and "74.0%" in line and "partition of a continuum, not natural groups" in line
    [line] = _model_structure(StubLake([clear]), {"20260614"})
    assert "silhouette 0.899" in line and "continuum" not in line


def test_train_over_an_older_model_table_says_how_to_migrate(spark, tmp_path):
    from gridpersona.lake import Lake, SchemaMismatchError

    settings = _settings(tmp_path / "lake")
    lake = Lake(settings, spark)
    _write_small_lake(spark, lake)
    new_columns = {"stability", "stability_by_k", "weak_structure"}
    old_schema = T.StructType([f for f in C.SEGMENT_MODEL.schema.fields if f.name not in new_columns])
    lake.write(spark.createDataFrame([], old_schema), C.SEGMENT_MODEL.name, partition_by=["model_version"])
    with pytest.raises(SchemaMismatchError, match="older segment-train.*move the table aside"):
        run_segment_train(_ctx(settings, spark, lake))


def test_run_cache_computes_once_per_key_and_unpersists_what_it_drops():
    from gridpersona.stages.runner import RunCache

    class Frame:
        def __init__(self, n):
            self.n, self.persisted = n, True

        def unpersist(self):
            self.persisted = False

    made = []

    def compute():
        made.append(Frame(len(made)))
        return made[-1]

    cache = RunCache()
    first = cache.get("shapes", ("v1",), compute)
    assert cache.get("shapes", ("v1",), compute) is first and len(made) == 1
    second = cache.get("shapes", ("v2",), compute)  # the input changed: recomputed, the old frame let go
    assert second is not first and not first.persisted and second.persisted
    assert RunCache().get("shapes", ("v2",), compute) is not second  # another run sees none of this one's entries
    cache.release()
    assert not second.persisted
