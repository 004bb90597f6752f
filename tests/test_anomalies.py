"""Abnormal-use flags (stage anomalies): each detector on small hand-made series, the negative cases (vacancy,
a dip every peer shares, big appliance days, a trip), the Spark wiring on a hand-made frame, and the shared lake."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from gridpersona.config import AnomaliesConfig
from gridpersona.transform import anomalies as AN

START = dt.date(2026, 6, 1)
DAYS = 60
PARAMS = AnomaliesConfig()
SLOTS = 96
HOURS = np.arange(24) + 0.5


def _shape(kind: str) -> np.ndarray:
    """A normalised hourly shape: evening peak, night block, or a flat line."""
    if kind == "evening":
        s = 0.3 + 2.6 * np.exp(-0.5 * ((HOURS - 20.5) / 1.5) ** 2) + 0.3 * np.exp(-0.5 * ((HOURS - 7.5) / 1.0) ** 2)
    elif kind == "night":
        s = 0.15 + 2.5 * ((HOURS >= 23) | (HOURS < 7))
    else:
        s = np.ones(24)
    return s / s.sum()


def meter(kwh: np.ndarray | None = None, *, shapes: list[np.ndarray] | None = None, peer: np.ndarray | None = None,
          seed: int = 1, level: float = 10.0, **marks) -> pd.DataFrame:
    """One meter's rows as detect_meter takes them: DAYS days of ``level`` kWh with day noise (or ``kwh``),
    an evening-peak shape with hourly noise (or ``shapes``), peers at 1 (or ``peer``). ``marks``:
    zero_days / flat_days / negative_days as (first, last) day indexes; has_pv."""
    rng = np.random.default_rng(seed)
    kwh = level * rng.lognormal(0.0, 0.12, DAYS) if kwh is None else np.asarray(kwh, dtype=float)
    shapes = shapes or [_shape("evening")] * DAYS
    rows = []
    for i in range(DAYS):
        hourly = kwh[i] * shapes[i] * rng.lognormal(0.0, 0.15, 24)
        hourly = hourly * kwh[i] / hourly.sum()
        rows.append({"meter_id": "M1", "customer_id": "C1", "has_pv": marks.get("has_pv"),
                     "date": START + dt.timedelta(days=i), "daily_kwh": float(kwh[i]), "usable": True,
                     "zero_day": False, "flat_day": False, "flat_kwh": float(hourly.max() / 4),
                     "hourly": hourly.tolist(), "peer_index": 1.0 if peer is None else float(peer[i]),
                     "negative_readings": None, "negative_kwh": None})
    frame = pd.DataFrame(rows)
    for key, column in (("zero_days", "zero_day"), ("flat_days", "flat_day")):
        if key in marks:
            a, b = marks[key]
            frame.loc[a:b, column] = True
            frame.loc[a:b, "daily_kwh"] = 0.0 if column == "zero_day" else 0.3 * SLOTS
            frame.loc[a:b, "flat_kwh"] = 0.0 if column == "zero_day" else 0.3
    if "negative_days" in marks:  # a reversed CT: no clean reading, the negatives come in rows of their own
        a, b = marks["negative_days"]
        frame = frame.drop(index=range(a, b + 1))
        neg = [{"meter_id": "M1", "customer_id": "C1", "has_pv": marks.get("has_pv"),
                "date": START + dt.timedelta(days=i), "negative_readings": SLOTS, "negative_kwh": -level}
               for i in range(a, b + 1)]
        frame = pd.DataFrame(frame.to_dict("records") + neg)
    return frame


def detect(frame: pd.DataFrame, window_first: dt.date = START, **params) -> dict[str, dict]:
    found = AN.detect_meter(frame, PARAMS.model_copy(update=params), window_first=window_first, slots_per_day=SLOTS)
    return {f["flag"]: f for f in found}


def day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


# ------------------------------------------------------------------ sustained drop

def test_a_drop_to_40_percent_of_the_meters_own_level_with_its_shape_kept_is_a_sustained_drop():
    kwh = 10.0 * np.random.default_rng(3).lognormal(0.0, 0.12, DAYS)
    kwh[35:] *= 0.4
    flags = detect(meter(kwh))
    assert set(flags) == {"sustained_drop"}
    f = flags["sustained_drop"]
    assert f["start_date"] == day(35) and f["days"] == DAYS - 35
    assert 0.3 < f["own_ratio"] < 0.5 and f["peer_ratio"] == pytest.approx(1.0) and f["shape_shift"] < 0.05
    assert "of own baseline" in f["reason"] and "peers 100%" in f["reason"]


def test_a_drop_every_peer_shares_is_not_a_sustained_drop():
    kwh = 10.0 * np.random.default_rng(3).lognormal(0.0, 0.12, DAYS)
    kwh[35:] *= 0.4
    peer = np.ones(DAYS)
    peer[35:] = 0.42  # a holiday season or mild weather: everyone uses less
    assert detect(meter(kwh, peer=peer)) == {}


def test_a_move_out_that_flattens_the_shape_is_vacancy_not_a_sustained_drop():
    kwh = 10.0 * np.random.default_rng(3).lognormal(0.0, 0.12, DAYS)
    kwh[35:] = 0.9
    shapes = [_shape("evening")] * 35 + [_shape("flat")] * (DAYS - 35)
    assert "sustained_drop" not in detect(meter(kwh, shapes=shapes))


def test_big_appliance_days_and_a_week_away_are_not_flagged():
    rng = np.random.default_rng(5)
    kwh = 10.0 * rng.lognormal(0.0, 0.12, DAYS)
    kwh[rng.choice(DAYS, 8, replace=False)] *= 2.5  # heater, oven, guests
    kwh[40:47] = 2.0  # a trip
    assert detect(meter(kwh)) == {}


# ------------------------------------------------------------------ runs: flatline, zero run

def test_days_of_one_constant_reading_are_a_flatline():
    flags = detect(meter(flat_days=(30, 34)))
    assert set(flags) == {"flatline"}
    f = flags["flatline"]
    assert (f["start_date"], f["end_date"], f["days"]) == (day(30), day(34), 5)
    assert "0.300 kWh" in f["reason"] and f["score"] == pytest.approx(5 / 7)


def test_exact_zeros_after_occupied_days_are_a_zero_run_and_one_day_is_not():
    flags = detect(meter(zero_days=(30, 35)))
    assert set(flags) == {"zero_run"} and flags["zero_run"]["start_date"] == day(30)
    assert flags["zero_run"]["baseline_kwh"] > 8
    assert detect(meter(zero_days=(30, 30))) == {}


def test_a_vacant_premise_is_not_a_zero_run():
    # A vacant home keeps a small base load (no zero day at all), and zeros after such days are no anomaly either.
    assert detect(meter(level=0.5)) == {}
    assert detect(meter(level=0.5, zero_days=(30, 40))) == {}


# ------------------------------------------------------------------ reverse flow

def test_negative_days_are_reverse_flow_with_unknown_pv_said_and_none_with_pv():
    f = detect(meter(negative_days=(40, 59)))["reverse_flow"]
    assert (f["start_date"], f["days"], f["has_pv"], f["score"]) == (day(40), 20, "unknown", 1.0)
    assert "PV unknown" in f["reason"] and f["recent_kwh"] < 0
    assert detect(meter(negative_days=(40, 59), has_pv=False))["reverse_flow"]["has_pv"] == "no"
    assert "reverse_flow" not in detect(meter(negative_days=(40, 59), has_pv=True))


# ------------------------------------------------------------------ pattern change

def test_a_switch_to_another_shape_with_the_same_energy_is_a_pattern_change_not_a_drop():
    shapes = [_shape("evening")] * 38 + [_shape("night")] * (DAYS - 38)
    flags = detect(meter(shapes=shapes))
    assert set(flags) == {"pattern_change"}
    f = flags["pattern_change"]
    assert f["start_date"] == day(38) and f["shape_shift"] > 0.4 and 0.8 < f["own_ratio"] < 1.25
    assert "peak hour 20h -> " in f["reason"]


def test_an_ev_charging_a_little_less_often_is_no_pattern_change_against_its_own_day_to_day_spread():
    # Charged on 60 % of the first 30 nights, 30 % after: the mean shape moves, but less than its days scatter.
    rng = np.random.default_rng(2)
    charged = rng.random(DAYS) < np.where(np.arange(DAYS) < 30, 0.6, 0.3)
    kwh = 10.0 * rng.lognormal(0.0, 0.12, DAYS) + np.where(charged, 14.0, 0.0)
    shapes = [(10.0 * _shape("evening") + 14.0 * _shape("night")) / 24.0 if c else _shape("evening") for c in charged]
    frame = meter(kwh, shapes=shapes, seed=2)
    assert detect(frame) == {}
    assert set(detect(frame, pattern_min_contrast=0.0)) == {"pattern_change"}  # the spread guard is what holds


def test_a_move_in_after_vacant_days_is_no_pattern_change():
    kwh = 10.0 * np.random.default_rng(4).lognormal(0.0, 0.12, DAYS)
    kwh[:12] = 0.3  # standby only until the tenants move in
    shapes = [_shape("flat")] * 12 + [_shape("evening")] * (DAYS - 12)
    frame = meter(kwh, shapes=shapes, seed=4)
    assert detect(frame) == {}
    assert set(detect(frame, occupied_min_daily_kwh=0.0)) == {"pattern_change"}


def test_flags_whose_evidence_ends_before_the_window_are_not_written():
    assert detect(meter(flat_days=(10, 14)), window_first=day(20)) == {}
    assert set(detect(meter(flat_days=(10, 14)), window_first=day(14))) == {"flatline"}


# ------------------------------------------------------------------ Spark: evidence, peers, quarantine

def test_anomaly_flags_on_spark_frames_sees_peers_and_the_quarantined_negatives(spark):
    """8 hourly meters of one region over 30 days: all dip 60 % on days 18-29 (shared: nothing), except M00 whose
    own drop from day 12 comes on top, and M01 whose readings turn negative from day 22 (clean quarantined them)."""
    rng = np.random.default_rng(11)
    shape = _shape("evening")
    daily, quarantine = [], []
    for m in range(8):
        for i in range(30):
            date = START + dt.timedelta(days=i)
            level = 8.0 * rng.lognormal(0.0, 0.1) * (0.4 if i >= 18 else 1.0) * (0.35 if m == 0 and i >= 12 else 1.0)
            slots = level * shape * rng.lognormal(0.0, 0.1, 24)
            if m == 1 and i >= 22:
                quarantine += [(f"M{m:02d}", date, date, -float(v), "negative") for v in slots]
                continue
            daily.append((f"M{m:02d}", date, slots.tolist(), float(slots.sum()), float(slots.max()),
                          float(slots.min()), 1.0))
    daily_df = spark.createDataFrame(daily, "meter_id string, date date, slot_kwh array<double>, daily_kwh double, "
                                            "max_kwh double, min_kwh double, completeness double")
    quarantine_df = spark.createDataFrame(quarantine, "meter_id string, date date, local_date date, kwh double, "
                                                      "reason string")
    archive = spark.createDataFrame([(f"M{m:02d}", f"C{m:02d}", "SA01", "residential") for m in range(8)],
                                    "meter_id string, customer_id string, region string, customer_type string")
    params = PARAMS.model_copy(update={"baseline_days": 8, "drop_min_days": 8, "pattern_min_days": 8,
                                       "min_peers": 5})
    days = AN.day_evidence(daily_df, params=params, interval_minutes=60)
    rows = (AN.anomaly_flags(days, quarantine_df, archive, params=params, window_first=START, interval_minutes=60)
            .orderBy("meter_id", "flag").collect())
    got = [(r["meter_id"], r["flag"], r["start_date"]) for r in rows]
    assert got == [("M00", "sustained_drop", START + dt.timedelta(days=12)),
                   ("M01", "reverse_flow", START + dt.timedelta(days=22))]
    assert rows[0]["peer_ratio"] == pytest.approx(0.4, abs=0.1) and rows[0]["own_ratio"] < 0.25
    assert rows[1]["has_pv"] == "unknown" and rows[1]["days"] == 8 and rows[1]["score"] == pytest.approx(1.0)


def test_the_shared_lake_has_no_planted_case_and_gets_no_flag(synthetic_lake):
    """The 14-day test lake plants no abnormal use (windows of 28 days or more only): every flag would be false."""
    lake = synthetic_lake.lake
    assert lake.read("truth.anomalies").count() == 0
    flags = lake.read("gold.anomaly_flags").filter(F.col("as_of") == synthetic_lake.as_of)
    assert flags.count() == 0
    assert any(name == "anomalies" for name, _ in synthetic_lake.results)
