"""Clean and shapes transformations on tiny hand-made frames (hand-computed expectations)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import pyarrow as pa
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import functions as F

from gridpersona.config import TariffConfig
from gridpersona.contracts.silver import QUARANTINE_REASONS
from gridpersona.transform import clean as C
from gridpersona.transform import clean_kernel as K
from gridpersona.transform import shapes as S

UTC = dt.timezone.utc
RAW = "meter_id string, ts timestamp, kwh double, date date"
SH = "Asia/Shanghai"


def _ts(day: dt.date, minutes: int, zone: str = SH) -> dt.datetime:
    return (dt.datetime.combine(day, dt.time(), ZoneInfo(zone)) + dt.timedelta(minutes=minutes)).astimezone(UTC)


def _calendar_frame(spark, first, last, zone=SH, interval=15):
    return spark.createDataFrame(C.local_calendar(first, last, zone, interval), C.calendar_rows_schema())


D = dt.date(2026, 6, 1)
CLEAN_COLS = "meter_id string, ts timestamp, kwh double, kwh_raw double, quality string"


def _clean_frames(spark, rows, first=D, last=D, rule=C.OutlierRule(), max_gap=4, known=("m1", "m2")):
    """Run the whole clean chain on hand-made rows; ``known``: meter ids or (meter id, capacity kVA) pairs."""
    archive = [m if isinstance(m, tuple) else (m, None) for m in known]
    return C.clean_interval_readings(
        spark.createDataFrame(rows, RAW), spark.createDataFrame(archive, "meter_id string, contracted_capacity_kva double"),
        _calendar_frame(spark, first, last), time_zone=SH, interval_minutes=15, first_date=first, last_date=last,
        max_interval_kwh=100.0, max_gap=max_gap, rule=rule, cache=lambda df: df.cache())


# ------------------------------------------------------------------ one clean run over every scenario
# Each scenario has its own meters in one hand-made frame over a four-day window, run through the clean chain
# once (the `cleaned` fixture, default outlier rule); each test asserts its meters' rows. Only the scenario
# that needs another outlier rule (no scale floor) runs clean on its own.

DAYS4 = [D + dt.timedelta(days=k) for k in range(4)]
FIRST, LAST = DAYS4[0], DAYS4[-1]

REASON_ROWS = [
    ("r1", _ts(D, 0), 1.0, D),              # ok
    ("r1", _ts(D, 15), None, D),            # null_value
    ("rX", _ts(D, 0), 1.0, D),              # unknown_meter
    ("r1", _ts(D, 7), 1.0, D),              # misaligned_ts
    ("r1", _ts(FIRST, -15), 1.0, FIRST),    # out_of_window (local day before the window)
    ("r1", _ts(LAST, 1440), 1.0, LAST),     # future_ts (local day after as-of)
    ("r1", _ts(D, 30), -0.5, D),            # negative
    ("r1", _ts(D, 45), 500.0, D),           # out_of_range
]

DUPLICATE_ROWS = [("dup", _ts(D, 15 * i), 1.0 + (i % 3) * 0.1, D) for i in range(96)]
DUPLICATE_ROWS += [("dup", _ts(D, 30), 1.1, D), ("dup", _ts(D, 30), 1.1, D),  # an instant read three times
                   ("dup", _ts(D, 45), 0.9, D),                                 # a conflicting second reading
                   ("dup", _ts(D, 60), None, D), ("dupX", _ts(D, 0), 2.0, D)]

# Four days of readings (the P99 scale needs more than a handful of readings).
SPIKE_VALUES = [1.0, 1.2, 1.1, 1.3, 1.0, 1.2, 1.1, 1.3] * 48
SPIKE_VALUES[10] = 60.0  # neighbours 1.2 (slot 9) and 1.3 (slot 11)
SPIKE_ROWS = [("spike4", _ts(D, 15 * i), v, D + dt.timedelta(days=i // 96)) for i, v in enumerate(SPIKE_VALUES)]

GAP_SLOTS = [i for i in range(96) if i not in (3, 4) and not 8 <= i <= 13]  # gap of 2 and gap of 6
GAP_ROWS = [("gaps", _ts(D, 15 * i), float(i), D) for i in GAP_SLOTS]

D2 = D + dt.timedelta(days=1)
MIDNIGHT_ROWS = [("midnight", _ts(D, 15 * i), 1.0, D) for i in range(95)]           # 23:45 missing on day 1
MIDNIGHT_ROWS += [("midnight", _ts(D2, 15 * i), 3.0, D2) for i in range(1, 96)]     # 00:00 missing on day 2

# Four days of 15-minute readings per meter: (base cycle, {(day, slot): kWh}, contracted kVA).
PLAUSIBILITY = {
    "shower": ([0.1, 0.2, 0.3], {(1, 30): 2.0, (1, 31): 2.0}, 20.0),       # 8 kW for 30 min on a small meter
    "lowuse": ([0.05, 0.04, 0.06, 0.05], {(2, 50): 0.2}, 4.0),             # a kettle on a near-empty home
    "spike": ([0.2, 0.3, 0.4, 0.25], {(1, 40): 16.0}, None),               # 40x P99 (0.4), normal neighbours
    "overcap": ([0.5], {(2, 60): 2.5}, 4.0),                                # 10 kW on a 4 kVA contract
    "nocap": ([0.5], {(2, 60): 2.5}, None),                                 # the same reading, capacity unknown
    "night": ([0.3], {(0, 95): 8.0, (1, 0): 8.0}, None),                    # two high readings across midnight
}


def _series(meter, base, overrides):
    return [(meter, _ts(day, 15 * slot), overrides.get((k, slot), base[(96 * k + slot) % len(base)]), day)
            for k, day in enumerate(DAYS4) for slot in range(96)]


PLAUSIBILITY_ROWS = [r for m, (base, over, _) in PLAUSIBILITY.items() for r in _series(m, base, over)]
KNOWN = [("r1", None), ("dup", None), ("spike4", None), ("gaps", None), ("midnight", None),
         *[(m, kva) for m, (_, _, kva) in PLAUSIBILITY.items()]]


@pytest.fixture(scope="module")
def cleaned(spark):
    """(silver.ami_clean rows, silver.ami_quarantine rows) of one clean run over every scenario's meters."""
    rows = REASON_ROWS + DUPLICATE_ROWS + SPIKE_ROWS + GAP_ROWS + MIDNIGHT_ROWS + PLAUSIBILITY_ROWS
    out = _clean_frames(spark, rows, first=FIRST, last=LAST, known=KNOWN)
    return out.clean.collect(), out.quarantine.collect()


def _of(rows, *meters):
    return [r for r in rows if r["meter_id"] in meters]


def test_each_quarantine_reason_is_assigned(cleaned):
    clean, quarantine = cleaned
    assert sorted((r["meter_id"], r["reason"]) for r in _of(quarantine, "r1", "rX")) == sorted([
        ("r1", "null_value"), ("rX", "unknown_meter"), ("r1", "misaligned_ts"), ("r1", "out_of_window"),
        ("r1", "future_ts"), ("r1", "negative"), ("r1", "out_of_range")])
    assert [(r["date"], r["slot"], r["kwh"], r["quality"]) for r in _of(clean, "r1")] == [(D, 0, 1.0, "measured")]


def test_every_raw_row_lands_in_clean_or_quarantine_exactly_once(cleaned):
    clean, quarantine = _of(cleaned[0], "dup"), _of(cleaned[1], "dup", "dupX")
    measured = [r for r in clean if r["quality"] in ("measured", "outlier_replaced")]
    assert len(measured) + len(quarantine) == len(DUPLICATE_ROWS)
    assert sorted(r["reason"] for r in quarantine) == ["duplicate", "duplicate", "duplicate", "null_value", "unknown_meter"]
    kept_45 = next(r for r in clean if r["slot"] == 3)
    assert kept_45["kwh"] == pytest.approx(1.0)  # the larger of the two conflicting readings is kept
    assert len({(r["meter_id"], r["ts"]) for r in clean}) == len(clean) == 96


def test_spike_is_flagged_and_replaced_by_interpolation(cleaned):
    clean, quarantine = _of(cleaned[0], "spike4"), _of(cleaned[1], "spike4")
    spike = next(r for r in clean if r["kwh_raw"] == 60.0)
    assert spike["quality"] == "outlier_replaced"
    assert spike["kwh"] == pytest.approx((1.2 + 1.3) / 2)
    assert sum(1 for r in clean if r["quality"] == "outlier_replaced") == 1
    assert not quarantine and len(clean) == len(SPIKE_VALUES)


def _expected(spark, meter, replaced=None):
    """The meter's input rows as measured, except ``replaced``: {(day, slot): replacement kWh}."""
    base, overrides, _ = PLAUSIBILITY[meter]
    rows = []
    for m, ts, kwh, _day in _series(meter, base, overrides):
        key = next(((k, s) for (k, s), v in overrides.items() if _ts(DAYS4[k], 15 * s) == ts), None)
        if replaced and key in replaced:
            rows.append((m, ts, replaced[key], kwh, "outlier_replaced"))
        else:
            rows.append((m, ts, kwh, kwh, "measured"))
    return spark.createDataFrame(rows, CLEAN_COLS)


@pytest.fixture(scope="module")
def plausibility(spark, cleaned):
    """silver.ami_clean rows of the PLAUSIBILITY meters (default rule), as a frame."""
    rows = [(r["meter_id"], r["ts"], r["kwh"], r["kwh_raw"], r["quality"]) for r in _of(cleaned[0], *PLAUSIBILITY)]
    return spark.createDataFrame(rows, CLEAN_COLS)


def _meter(df, meter):
    return df.filter(F.col("meter_id") == meter)


def test_two_interval_shower_burst_on_a_small_meter_is_kept(spark, plausibility):
    assert_df_equality(_meter(plausibility, "shower"), _expected(spark, "shower"), ignore_row_order=True, ignore_nullable=True)


def test_burst_is_kept_by_its_high_neighbour_even_without_the_floor(spark):
    # No floor: 2.0 kWh is far above 3x this meter's P99, but its neighbour is as high: a sustained load.
    # Its own clean run: the outlier rule is one for the whole run.
    out = _clean_frames(spark, _series("shower", *PLAUSIBILITY["shower"][:2]), first=FIRST, last=LAST,
                        known=("shower",), rule=C.OutlierRule(scale_floor_kw=0.0))
    assert_df_equality(out.clean.select("meter_id", "ts", "kwh", "kwh_raw", "quality"), _expected(spark, "shower"),
                       ignore_row_order=True, ignore_nullable=True)


def test_ordinary_reading_on_a_low_use_meter_is_kept(spark, plausibility):
    # 0.2 kWh is 4x this meter's P99 and neighbours, but far below the floor (3 x 5 kW x 0.25 h).
    assert_df_equality(_meter(plausibility, "lowuse"), _expected(spark, "lowuse"), ignore_row_order=True, ignore_nullable=True)


def test_isolated_reading_far_above_p99_is_replaced(spark, plausibility):
    # Neighbours: slot 39 (0.25) and slot 41 (0.3) of the second day.
    assert_approx_df_equality(_meter(plausibility, "spike"), _expected(spark, "spike", {(1, 40): 0.275}), 1e-9,
                              ignore_row_order=True, ignore_nullable=True)


def test_reading_above_contracted_capacity_is_replaced(spark, plausibility):
    # 2.5 kWh in 15 min = 10 kW on a 4 kVA contract (bound: 2 x 4 kVA x 0.25 h = 2 kWh); not high by the floor.
    assert_approx_df_equality(_meter(plausibility, "overcap"), _expected(spark, "overcap", {(2, 60): 0.5}), 1e-9,
                              ignore_row_order=True, ignore_nullable=True)


def test_unknown_capacity_applies_no_bound(spark, plausibility):
    assert_df_equality(_meter(plausibility, "nocap"), _expected(spark, "nocap"), ignore_row_order=True, ignore_nullable=True)


def test_high_neighbours_across_midnight_keep_each_other(spark, plausibility):
    assert_df_equality(_meter(plausibility, "night"), _expected(spark, "night"), ignore_row_order=True, ignore_nullable=True)


def test_short_gaps_are_interpolated_long_gaps_left_missing(cleaned):
    clean = _of(cleaned[0], "gaps")
    # The ramp's readings are all measured: no outlier replacement muddles the interpolated values.
    assert {r["quality"] for r in clean} == {"measured", "interpolated"}
    filled = sorted((r["slot"], r["kwh"], r["kwh_raw"]) for r in clean if r["quality"] == "interpolated")
    # Linear between slot 2 (2.0) and slot 5 (5.0); the 6-interval gap stays missing.
    assert filled == [(3, pytest.approx(3.0), None), (4, pytest.approx(4.0), None)]
    assert not {r["slot"] for r in clean} & set(range(8, 14))


def test_gap_across_midnight_is_interpolated_from_both_days(cleaned):
    clean = _of(cleaned[0], "midnight")
    filled = sorted((r["date"], r["slot"], r["kwh"]) for r in clean if r["quality"] == "interpolated")
    assert filled == [(D, 95, pytest.approx(1 + 2 / 3)), (D2, 0, pytest.approx(1 + 4 / 3))]


def _kernel_params(days: int, *, out=None, lookback=3, expected=4, **rule):
    first = (D - dt.date(1970, 1, 1)).days
    levels = dict(scale_multiple=3.0, floor_kwh=0.0, neighbour_multiple=3.0, capacity_factor=0.5, max_gap=1,
                  step_seconds=900) | rule
    return K.KernelParams(first_day=first, day_start=tuple(1000 * i for i in range(days)),
                          expected=(expected,) * days, out=tuple(out or (True,) * days), lookback_days=lookback,
                          **levels)


def _kernel_rows(rows, quarantined=()):
    """(day offset from D, pos, kwh) readings, pos < 0 rows being the marked extra rows; ``quarantined``:
    (day offset, ts in microseconds, kwh, reason code) rows the row checks quarantined."""
    first = (D - dt.date(1970, 1, 1)).days
    q = [(d, K.QUARANTINED, k, first + d, r, us) for d, us, k, r in quarantined]
    rows = [(d, p, k, None if d is None or p < 0 else first + d, None, None) for d, p, k in rows] + q
    return pa.table({"meter_id": ["m1"] * len(rows),
                     "d": pa.array([None if d is None else first + d for d, *_ in rows], pa.int32()),
                     "pos": pa.array([r[1] for r in rows], pa.int32()),
                     "kwh": pa.array([r[2] for r in rows], pa.float64()),
                     "bd": pa.array([r[3] for r in rows], pa.int32()),
                     "r": pa.array([r[4] for r in rows], pa.int8()),
                     "us": pa.array([r[5] for r in rows], pa.int64())})


def _by_day(table):
    return {(r["date"] - D).days: r for r in table.to_pylist() if r["out"]}


def _set_aside(table):
    return sorted((r["local_date"], r["ts_us"], r["reading_kwh"], QUARANTINE_REASONS[r["reason"]], r["date"])
                  for r in table.to_pylist() if r["reason"] is not None)


def test_scale_is_the_median_daily_maximum_of_the_lookback_days_before_the_day():
    # Daily maxima 1, 5, 2, (no readings), 9 on days 0..4: a day without readings is skipped.
    rows = [(d, 0, mx) for d, mx in ((0, 1.0), (1, 5.0), (2, 2.0), (4, 9.0))]
    got = _by_day(K.clean_meters(_kernel_rows(rows), _kernel_params(5)))
    assert got[0]["outlier_scale_kwh"] is None                     # nothing before the first day
    assert got[1]["outlier_scale_kwh"] == 1.0                      # [1]
    assert got[2]["outlier_scale_kwh"] == 3.0                      # [1, 5]: mean of the middle two
    # Day 4 looks back at days 1..3: [5, 2] (day 0 is out of reach; the day itself never counts).
    assert got[4]["outlier_scale_kwh"] == 3.5
    # The fill level is the same median over the days' mean readings (one reading of four positions each).
    assert got[4]["fill_level_kwh"] == pytest.approx((5.0 + 2.0) / 2)


def test_stored_lookback_statistics_count_like_days_read():
    # Day 2 is read; days 0 and 1 come only as stored statistics (max 4 and 8, mean 1 and 2).
    rows = [(2, 0, 1.0), (0, K.STAT_MAX, 4.0), (0, K.STAT_MEAN, 1.0), (1, K.STAT_MAX, 8.0), (1, K.STAT_MEAN, 2.0)]
    got = _by_day(K.clean_meters(_kernel_rows(rows), _kernel_params(3)))
    assert set(got) == {2}                                         # stored days are context, never output
    assert (got[2]["outlier_scale_kwh"], got[2]["fill_level_kwh"]) == (6.0, 1.5)


def test_second_reading_of_an_instant_is_set_aside_keeping_the_plausible_one():
    # Capacity 10 kVA x 0.5 h factor: above 5 kWh is implausible (the high level, 3 x the 10 kWh floor, is out of
    # reach). Position 1 is read as 7.0 (over capacity) and 2.0: the plausible 2.0 is kept although it is
    # smaller; position 2 read twice as 1.5 and 1.0 keeps the larger.
    rows = [(0, 0, 1.0), (0, 1, 7.0), (0, 1, 2.0), (0, 2, 1.5), (0, 2, 1.0), (0, 3, 1.0), (None, K.CAPACITY, 10.0)]
    out = K.clean_meters(_kernel_rows(rows), _kernel_params(1, floor_kwh=10.0))
    day = _by_day(out)[0]
    assert day["kwh"] == [1.0, 2.0, 1.5, 1.0]
    # Set aside as duplicates at their instants (day start 0 + position x 900 s), bronze date kept.
    assert _set_aside(out) == [(D, 900_000_000, 7.0, "duplicate", D), (D, 1_800_000_000, 1.0, "duplicate", D)]
    # The day's largest reading counts every reading read, the set-aside ones too.
    assert day["day_max_kwh"] == 7.0
    assert (day["measured_intervals"], day["outlier_intervals"], day["interpolated_intervals"]) == (4, 0, 0)


def test_quarantined_rows_pass_through_and_context_days_are_not_written():
    rows = [(0, 0, 1.0), (0, 0, 0.5), (1, 0, 1.0), (1, 1, 1.0)]
    negative = (1, 1_000_123_456, -0.5, QUARANTINE_REASONS.index("negative"))
    out = K.clean_meters(_kernel_rows(rows, [negative]), _kernel_params(2, out=(False, True)))
    assert set(_by_day(out)) == {1}
    assert _by_day(out)[1]["kwh"] == [1.0, 1.0, None, None]
    # The context day's second reading is still set aside (its bronze date decides whether it is written).
    d1 = D + dt.timedelta(days=1)
    assert _set_aside(out) == [(D, 0, 0.5, "duplicate", D), (d1, 1_000_123_456, -0.5, "negative", d1)]


def test_a_meter_with_only_quarantined_rows_returns_them():
    unknown = (0, 5, 1.0, QUARANTINE_REASONS.index("unknown_meter"))
    out = K.clean_meters(_kernel_rows([], [unknown]), _kernel_params(1))
    assert _set_aside(out) == [(D, 5, 1.0, "unknown_meter", D)]


def test_meters_cleaned_together_give_what_each_gives_alone():
    # m1: a spike mid-day and a gap at the end of its last day; m2: a gap at the start of its first day and a
    # reading twice. Cleaned in one cube, neither meter's edges or scales may leak into the other's days.
    m1 = [(0, 0, 1.0), (0, 1, 9.0), (0, 2, 1.0), (0, 3, 1.0), (1, 0, 1.0), (1, 1, 1.0), (1, 2, 1.0)]
    m2 = [(0, 1, 2.0), (0, 2, 2.0), (0, 3, 2.0), (1, 0, 2.0), (1, 0, 1.0), (1, 1, 2.0), (1, 2, 2.0), (1, 3, 2.0)]
    params = _kernel_params(2, floor_kwh=0.5, max_gap=2)
    one = _kernel_rows(m1)
    two = _kernel_rows(m2).set_column(0, "meter_id", pa.array(["m2"] * (len(m2)), pa.string()))
    both = pa.concat_tables([two, one])
    alone = K.clean_meters(one, params).to_pylist() + K.clean_meters(two, params).to_pylist()
    key = lambda r: (r["meter_id"], r["date"], r["reason"] is not None, r["ts_us"] or 0)
    assert sorted(K.clean_meters(both, params).to_pylist(), key=key) == sorted(alone, key=key)
    # And the cases are real: m1's spike is replaced, m2's second reading set aside.
    assert any(r["outlier_intervals"] for r in alone if r["meter_id"] == "m1")
    assert any(r["reason"] is not None for r in alone if r["meter_id"] == "m2")


def test_local_calendar_knows_dst_days():
    cal = {d: n for d, _, n in C.local_calendar(dt.date(2026, 3, 28), dt.date(2026, 3, 30), "Europe/Berlin", 15)}
    assert cal == {dt.date(2026, 3, 28): 96, dt.date(2026, 3, 29): 92, dt.date(2026, 3, 30): 96}
    fall = C.local_calendar(dt.date(2026, 10, 25), dt.date(2026, 10, 25), "Europe/Berlin", 15)
    assert fall[0][2] == 100
    assert C.local_calendar(D, D, SH, 60)[0][2] == 24


def _day_readings(spark, day, zone, intervals, interval=15, kwh=lambda i: 1.0, skip=()):
    start = dt.datetime.combine(day, dt.time(), ZoneInfo(zone)).astimezone(UTC)
    rows = [("m1", start + dt.timedelta(minutes=interval * i), kwh(i), day) for i in range(intervals) if i not in skip]
    df = C.with_local_time(spark.createDataFrame(rows, RAW), zone, interval)
    return df.select("meter_id", "ts", F.col("local_date").alias("date"), "slot", "kwh",
                     F.col("kwh").alias("kwh_raw"), F.lit("measured").alias("quality"))


def _calendar(spark, day, zone, interval=15):
    return spark.createDataFrame([(d, n) for d, _, n in C.local_calendar(day, day, zone, interval)],
                                 "date date, expected_intervals int")


HOURLY_TARIFF = TariffConfig(peak=["08:00-11:00", "18:00-23:00"], flat=["07:00-08:00", "11:00-18:00"], valley=["23:00-07:00"])


def test_hourly_day_hand_computed(spark):
    day = dt.date(2026, 6, 3)  # a Wednesday
    kwh = lambda i: 2.0 if 18 <= i < 23 else 1.0  # 5 evening hours at 2 kWh, 19 others at 1 kWh
    clean = _day_readings(spark, day, SH, 24, interval=60, kwh=kwh)
    row = S.daily_load_shapes(clean, _calendar(spark, day, SH, 60), interval_minutes=60, tariff=HOURLY_TARIFF).collect()[0]
    assert row["slot_kwh"] == [kwh(i) for i in range(24)]
    assert row["daily_kwh"] == pytest.approx(29.0)
    assert sum(row["shape"]) == pytest.approx(1.0)
    assert row["shape"][18] == pytest.approx(2.0 / 29.0)
    assert row["peak_share"] == pytest.approx((3 * 1.0 + 5 * 2.0) / 29.0)    # 08-11 and 18-23
    assert row["valley_share"] == pytest.approx(8 * 1.0 / 29.0)              # 23-07
    assert row["flat_share"] == pytest.approx(8 * 1.0 / 29.0)                # 07-08 and 11-18
    assert (row["max_kwh"], row["min_kwh"]) == (2.0, 1.0)
    assert row["load_factor"] == pytest.approx(29.0 / 24 / 2.0)
    assert row["completeness"] == 1.0 and row["imputed_slots"] == 0
    assert (row["day_of_week"], row["is_weekend"]) == (3, False)


def test_gap_day_has_zero_slots_and_lower_completeness(spark):
    day = dt.date(2026, 6, 6)  # a Saturday
    clean = _day_readings(spark, day, SH, 96, skip=range(40, 52))
    row = S.daily_load_shapes(clean, _calendar(spark, day, SH), interval_minutes=15, tariff=TariffConfig()).collect()[0]
    assert len(row["slot_kwh"]) == 96
    assert row["slot_kwh"][40:52] == [0.0] * 12 and row["slot_kwh"][39] == 1.0
    assert row["daily_kwh"] == pytest.approx(84.0)
    assert row["completeness"] == pytest.approx(84 / 96)
    assert row["is_weekend"] is True and row["day_of_week"] == 6


def test_dst_days_follow_the_energy_conserving_rule(spark):
    berlin = "Europe/Berlin"
    spring, fall = dt.date(2026, 3, 29), dt.date(2026, 10, 25)
    clean = _day_readings(spark, spring, berlin, 92).unionByName(_day_readings(spark, fall, berlin, 100))
    cal = _calendar(spark, spring, berlin).unionByName(_calendar(spark, fall, berlin))
    rows = {r["date"]: r for r in S.daily_load_shapes(clean, cal, interval_minutes=15, tariff=TariffConfig()).collect()}
    # Spring forward: 02:00-02:45 do not exist: slots 8-11 hold 0 kWh; the day is complete with 92 readings.
    assert rows[spring]["slot_kwh"][8:12] == [0.0] * 4
    assert rows[spring]["daily_kwh"] == pytest.approx(92.0) and rows[spring]["completeness"] == 1.0
    # Fall back: 02:00-02:45 happen twice: both readings summed in their wall-clock slot.
    assert rows[fall]["slot_kwh"][8:12] == [2.0] * 4
    assert rows[fall]["daily_kwh"] == pytest.approx(100.0) and rows[fall]["completeness"] == 1.0
    assert len(rows[fall]["slot_kwh"]) == 96


def test_shapes_from_meter_day_arrays_equal_shapes_from_the_reading_rows(spark):
    # The same readings as silver.ami_clean rows and as silver.meter_day_readings arrays: a DST spring-forward
    # day (92 positions), a fall-back day (100: two readings share each repeated slot) and an ordinary day
    # with a gap and two imputed readings give the same shape rows either way.
    berlin = "Europe/Berlin"
    spring, fall, plain = dt.date(2026, 3, 29), dt.date(2026, 10, 25), dt.date(2026, 6, 3)
    kwh = lambda i: 0.25 + (i % 7) / 10
    days = [(spring, 92, ()), (fall, 100, ()), (plain, 96, (40, 41, 42))]
    clean = None
    arrays = []
    for day, n, skip in days:
        rows = _day_readings(spark, day, berlin, n, kwh=kwh, skip=skip)
        if day == plain:  # two readings not measured
            rows = rows.withColumn("quality", F.when(F.col("slot").isin(10, 11), "interpolated").otherwise("measured"))
        clean = rows if clean is None else clean.unionByName(rows)
        values = [None if i in skip else kwh(i) for i in range(n)]
        arrays.append(("m1", day, values, n - len(skip), 2 if day == plain else 0))
    readings = spark.createDataFrame(arrays, "meter_id string, date date, kwh_by_position array<double>, readings int, "
                                             "imputed int")
    cal = None
    for day, _, _ in days:
        one = spark.createDataFrame(C.local_calendar(day, day, berlin, 15), C.calendar_rows_schema())
        cal = one if cal is None else cal.unionByName(one)
    cal_rows = [r for day, _, _ in days for r in C.local_calendar(day, day, berlin, 15)]
    from_rows = S.daily_load_shapes(clean, cal, interval_minutes=15, tariff=TariffConfig())
    from_arrays = S.daily_load_shapes_from_positions(readings, cal_rows, interval_minutes=15, time_zone=berlin,
                                                     tariff=TariffConfig())
    # Exactly equal: the numpy kernel adds in the order of the column expressions.
    assert_df_equality(from_arrays, from_rows, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(
        S.daily_load_shapes_from_positions(readings, cal_rows, interval_minutes=15, time_zone=berlin,
                                           tariff=TariffConfig(), normalization="minmax"),
        S.daily_load_shapes(clean, cal, interval_minutes=15, tariff=TariffConfig(), normalization="minmax"),
        ignore_row_order=True, ignore_nullable=True)
    assert {r["date"]: r["imputed_slots"] for r in from_arrays.collect()} == {spring: 0, fall: 0, plain: 2}


def test_minmax_normalization(spark):
    day = dt.date(2026, 6, 3)
    clean = _day_readings(spark, day, SH, 24, interval=60, kwh=lambda i: float(i % 4))
    row = S.daily_load_shapes(clean, _calendar(spark, day, SH, 60), interval_minutes=60, tariff=HOURLY_TARIFF,
                              normalization="minmax").collect()[0]
    assert row["shape"][:4] == [0.0, pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]


def test_tariff_masks_cover_each_slot_once():
    masks = S.tariff_slot_masks(TariffConfig(), 15)
    assert all(sum(masks[p][i] for p in S.PERIODS) == 1.0 for i in range(96))
    assert masks["valley"][0] == 1.0 and masks["peak"][8 * 4] == 1.0 and masks["flat"][7 * 4] == 1.0


def _columns(schema) -> list[tuple[str, object]]:
    return [(f.name, f.dataType) for f in schema.fields]


def test_clean_and_shapes_outputs_have_the_silver_contracts_columns_types_and_order(spark):
    from gridpersona.contracts.silver import AMI_CLEAN, AMI_QUARANTINE, DAILY_LOAD_SHAPE, METER_DAY_QUALITY

    rows = [("m1", _ts(D, 15 * i), 1.0, D) for i in range(96) if i not in (10, 11)]  # a short gap: interpolated
    rows += [("m1", _ts(D, 0), 1.0, D), ("mX", _ts(D, 0), 2.0, D)]  # a duplicate, an unknown meter
    out = _clean_frames(spark, rows)
    quality = out.quality
    shapes = S.daily_load_shapes(out.clean, _calendar(spark, D, SH), interval_minutes=15, tariff=TariffConfig())
    for spec, df in ((AMI_CLEAN, out.clean), (AMI_QUARANTINE, out.quarantine), (METER_DAY_QUALITY, quality),
                     (DAILY_LOAD_SHAPE, shapes)):
        assert _columns(df.schema) == _columns(spec.schema), spec.name
    qualities = {r["quality"] for r in out.clean.collect()}
    assert qualities == {"measured", "interpolated"} and qualities <= set(AMI_CLEAN.allowed_values["quality"])
    assert {r["reason"] for r in out.quarantine.collect()} == {"duplicate", "unknown_meter"}


def test_clean_rows_explode_written_days_with_their_raw_quality_and_wall_clock_slots():
    """One plain day (no raw or quality lists: raw = kwh, all measured) with an empty position, one day
    with an interpolated (raw null) and an outlier position, on a day whose slots skip two (a spring DST day)."""
    start1, start2 = 1_000_000, 2_000_000  # any epochs: the rows carry them through
    days = pa.record_batch({
        "meter_id": ["a", "b"], "date": pa.array([D, D + dt.timedelta(days=1)], pa.date32()),
        "day_start_epoch": pa.array([start1, start2], pa.int64()),
        "kwh": pa.array([[1.0, None, 3.0], [4.0, 5.0, 6.0]], pa.list_(pa.float64())),
        "raw": pa.array([None, [4.0, None, 60.0]], pa.list_(pa.float64())),
        "q": pa.array([None, [K.MEASURED, K.INTERPOLATED, K.OUTLIER_REPLACED]], pa.list_(pa.int8())),
    })
    out = K.clean_rows(days, K.DayRowsParams(step_seconds=900, slots=((start2, (0, 3, 4)),)))
    assert out.schema == K.CLEAN_ROWS_SCHEMA
    ts = [v // 1_000_000 for v in out.column("ts").cast(pa.int64()).to_pylist()]
    assert list(zip(out.column("meter_id").to_pylist(), ts, out.column("slot").to_pylist(), out.column("kwh").to_pylist(),
                    out.column("kwh_raw").to_pylist(), out.column("quality").to_pylist())) == [
        ("a", start1, 0, 1.0, 1.0, "measured"),
        ("a", start1 + 1800, 2, 3.0, 3.0, "measured"),
        ("b", start2, 0, 4.0, 4.0, "measured"),
        ("b", start2 + 900, 3, 5.0, None, "interpolated"),
        ("b", start2 + 1800, 4, 6.0, 60.0, "outlier_replaced"),
    ]
    assert out.column("date").to_pylist() == [D, D, D + dt.timedelta(days=1)] + [D + dt.timedelta(days=1)] * 2


def test_day_slots_name_only_the_dst_change_days():
    cal = C.local_calendar(dt.date(2026, 3, 28), dt.date(2026, 3, 30), "Europe/London", 30)
    (start, slots), = C.day_slots(cal, "Europe/London", 30)
    assert start == cal[1][1] and len(slots) == 46  # 29 March: clocks go forward at 01:00
    assert slots[:3] == (0, 1, 4) and slots[-1] == 47
    assert C.day_slots(C.local_calendar(dt.date(2026, 3, 28), dt.date(2026, 3, 30), "Asia/Shanghai", 30),
                       "Asia/Shanghai", 30) == ()


def test_clean_rows_refuse_raw_lists_that_do_not_line_up_with_the_readings():
    days = pa.record_batch({
        "meter_id": ["a"], "date": pa.array([D], pa.date32()), "day_start_epoch": pa.array([0], pa.int64()),
        "kwh": pa.array([[1.0, 2.0]], pa.list_(pa.float64())), "raw": pa.array([[1.0]], pa.list_(pa.float64())),
        "q": pa.array([None], pa.list_(pa.int8()))})
    with pytest.raises(ValueError, match="'raw' list does not match"):
        K.clean_rows(days, K.DayRowsParams(step_seconds=900))
