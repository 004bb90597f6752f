"""The synthetic lake: contracts, determinism, time grid, planted faults and planted behaviour."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from gridpersona.config import ConfigError
from gridpersona.synthetic.generate import TABLES, build_time_grid, generate_lake
from pyspark.sql.pandas.types import to_arrow_schema
from gridpersona.lake import Lake, check_schema
from gridpersona.contracts import all_specs
from gridpersona.contracts.bronze import BRONZE
from gridpersona.contracts.truth import FAULT_CODES, TRUTH

NO_FAULTS = (
    "generate.faults.short_gap_meter_share=0", "generate.faults.long_gap_meter_share=0",
    "generate.faults.duplicate_reading_share=0", "generate.faults.spike_reading_share=0",
    "generate.faults.negative_reading_share=0", "generate.faults.null_reading_share=0",
    "generate.faults.unknown_meter_share=0",
)
# Enough of every fault kind in a 40-meter, 4-day lake.
MANY_FAULTS = (
    "generate.faults.short_gap_meter_share=0.3", "generate.faults.long_gap_meter_share=0.2",
    "generate.faults.duplicate_reading_share=0.01", "generate.faults.spike_reading_share=0.01",
    "generate.faults.negative_reading_share=0.01", "generate.faults.null_reading_share=0.01",
    "generate.faults.unknown_meter_share=0.05",
)


def _generate(make_settings, spark, root, *overrides, **kw):
    settings = make_settings(f"lake.root={root}", *overrides)
    lake = Lake(settings, spark)
    counts = generate_lake(settings, lake, **{"meters": 40, "days": 4, **kw})
    return lake, counts


def _arrow(lake, table, sort_by=None):
    data = lake.read_arrow(table)
    return data.sort_by([(c, "ascending") for c in sort_by]) if sort_by else data


def _local_hours(ts: pa.ChunkedArray, offset_h: int = 8) -> np.ndarray:
    seconds = ts.cast(pa.int64()).to_numpy() // 1_000_000 + offset_h * 3600
    return (seconds % 86400) / 3600.0


def _fault_rows(lake):
    faults = lake.read_arrow("truth.faults").to_pylist()
    by_kind = defaultdict(set)
    for row in faults:
        by_kind[row["fault"]].add((row["meter_id"], row["ts"]))
    return faults, by_kind


@pytest.fixture
def faulty_lake(make_settings, spark, tmp_path):
    lake, counts = _generate(make_settings, spark, tmp_path / "faulty", *MANY_FAULTS)
    return lake, counts


# ------------------------------------------------------------------ contracts and determinism

def test_every_table_matches_its_contract(faulty_lake):
    lake, counts = faulty_lake
    assert set(counts) == set(TABLES) == set(BRONZE) | set(TRUTH)
    for table in TABLES:
        spec = all_specs()[table]
        df = lake.read(table)
        check_schema(table, spec.schema, df.schema)
        assert df.columns == spec.column_names, table
        # Spark's own Spark -> Arrow mapping of the contract (UTC timestamps keep the table at reader 1), not the
        # generator's: the files must carry exactly the contract's types and nullability.
        assert lake.read_arrow(table).schema == to_arrow_schema(spec.schema, timezone="UTC"), table
        assert lake.info(table).rows == counts[table], table
        assert lake.info(table).partition_by == (("date",) if table == "bronze.ami_interval" else ()), table
    assert DeltaTable(lake.path("bronze.ami_interval")).protocol().min_reader_version == 1


def test_same_seed_gives_identical_tables_and_another_seed_differs(make_settings, spark, tmp_path):
    keys = {t: [c for c in all_specs()[t].column_names] for t in TABLES}
    a, _ = _generate(make_settings, spark, tmp_path / "a", *MANY_FAULTS, seed=7)
    b, _ = _generate(make_settings, spark, tmp_path / "b", *MANY_FAULTS, seed=7)
    c, _ = _generate(make_settings, spark, tmp_path / "c", *MANY_FAULTS, seed=8)
    for table in TABLES:
        assert _arrow(a, table, keys[table]).equals(_arrow(b, table, keys[table])), table
    for table in ("bronze.ami_interval", "truth.faults", "truth.meters", "bronze.billing_payment"):
        assert not _arrow(a, table, keys[table]).equals(_arrow(c, table, keys[table])), table


def test_arguments_fall_back_to_settings_and_progress_is_reported(make_settings, lake):
    settings = make_settings("generate.meters=12", "generate.days=2", "ami.interval_minutes=60", *NO_FAULTS)
    messages = []
    counts = generate_lake(settings, lake, progress=messages.append)
    assert counts["bronze.customer_archive"] == 12
    assert counts["bronze.ami_interval"] == 12 * 2 * 24
    assert "bronze.ami_interval: 2/2 days" in messages
    assert lake.info("bronze.ami_interval").rows == 12 * 2 * 24
    with pytest.raises(ValueError, match="interval_minutes"):
        generate_lake(settings, lake, interval_minutes=20)


# ------------------------------------------------------------------ time grid

@pytest.mark.parametrize("start, slots", [("2026-03-29", 92), ("2026-10-25", 100), ("2026-06-01", 96)])
def test_dst_days_in_berlin_have_92_and_100_quarter_hours(make_settings, spark, tmp_path, start, slots):
    lake, counts = _generate(make_settings, spark, tmp_path / "dst", "ami.time_zone=Europe/Berlin", *NO_FAULTS,
                             meters=5, days=1, start=start)
    ami = lake.read_arrow("bronze.ami_interval")
    assert counts["bronze.ami_interval"] == 5 * slots
    assert Counter(ami["meter_id"].to_pylist()) == {m: slots for m in set(ami["meter_id"].to_pylist())}
    assert set(ami["date"].to_pylist()) == {dt.date.fromisoformat(start)}
    ts = sorted(set(ami["ts"].to_pylist()))
    assert len(ts) == slots and all(b - a == dt.timedelta(minutes=15) for a, b in zip(ts, ts[1:]))
    # ts is the interval start in UTC: the first one is local midnight (UTC+1 or UTC+2 in Berlin).
    assert ts[0] == dt.datetime.fromisoformat(start).replace(tzinfo=ZoneInfo("Europe/Berlin"))


def test_time_grid_follows_local_wall_clock():
    grid = build_time_grid(dt.date(2026, 3, 28), 3, 60, "Europe/Berlin")
    assert [grid.n_slots(d) for d in range(3)] == [24, 23, 24]
    assert list(grid.wall_hours[1][:4]) == [0.0, 1.0, 3.0, 4.0]
    shanghai = build_time_grid(dt.date(2026, 6, 1), 2, 30, "Asia/Shanghai")
    assert shanghai.total_slots == 96
    assert shanghai.slot_ts_us(0)[0] == int(dt.datetime(2026, 5, 31, 16, tzinfo=dt.timezone.utc).timestamp() * 1e6)


# ------------------------------------------------------------------ planted faults

@pytest.mark.parametrize("interval, per_day", [(15, 96), (30, 48), (60, 24)])
def test_readings_per_meter_day_equal_slots_minus_gaps_plus_duplicates(make_settings, spark, tmp_path, interval, per_day):
    lake, _ = _generate(make_settings, spark, tmp_path / f"i{interval}", *MANY_FAULTS,
                        f"ami.interval_minutes={interval}", days=6)
    ami = lake.read_arrow("bronze.ami_interval", columns=["meter_id", "date"])
    got = Counter(zip(ami["meter_id"].to_pylist(), ami["date"].to_pylist()))
    expected = {(m, d): per_day for m, d in got}
    tz = ZoneInfo("Asia/Shanghai")
    faults, _ = _fault_rows(lake)
    kinds = Counter()
    for row in faults:
        key = (row["meter_id"], row["ts"].astimezone(tz).date())
        kinds[row["fault"]] += 1
        if row["fault"] in ("short_gap", "long_gap"):
            expected[key] = expected.get(key, per_day) - 1
        elif row["fault"] == "duplicate":
            expected[key] += 1
    assert got == {k: n for k, n in expected.items() if n}  # a long gap may swallow a whole day
    assert all(kinds[k] for k in FAULT_CODES), kinds


def test_gaps_are_absent_and_value_faults_are_visible(faulty_lake):
    lake, _ = faulty_lake
    _, by_kind = _fault_rows(lake)
    rows = lake.read_arrow("bronze.ami_interval").to_pylist()
    readings = defaultdict(list)
    for r in rows:
        readings[(r["meter_id"], r["ts"])].append(r["kwh"])
    gaps = by_kind["short_gap"] | by_kind["long_gap"]
    assert gaps and not gaps & set(readings)
    assert by_kind["negative"] and all(readings[k] and readings[k][0] < 0 for k in by_kind["negative"])
    assert by_kind["null_value"] and all(readings[k] == [None] for k in by_kind["null_value"])
    assert by_kind["duplicate"] and all(len(readings[k]) == 2 and readings[k][0] == readings[k][1]
                                        for k in by_kind["duplicate"])
    medians = defaultdict(list)
    for (meter, _), values in readings.items():
        medians[meter] += [v for v in values if v is not None and v >= 0]
    median = {m: float(np.median(v)) for m, v in medians.items()}
    assert by_kind["spike"] and all(readings[k][0] >= max(10 * median[k[0]], 5.0) for k in by_kind["spike"])
    # Every reading not planted as a fault is a single, non-null, non-negative value.
    planted = set().union(*by_kind.values())
    clean = [v for k, v in readings.items() if k not in planted]
    assert all(len(v) == 1 and v[0] is not None and v[0] >= 0 for v in clean)


def test_faults_never_overlap_and_avoid_window_edges(faulty_lake):
    lake, _ = faulty_lake
    faults, by_kind = _fault_rows(lake)
    keys = [(r["meter_id"], r["ts"]) for r in faults]
    assert len(keys) == len(set(keys)), "an interval got more than one fault"
    all_ts = sorted({r["ts"] for r in faults} | set(lake.read_arrow("bronze.ami_interval")["ts"].to_pylist()))
    first, last = all_ts[0], all_ts[-1]
    known_fault_ts = {ts for meter, ts in keys if (meter, ts) not in by_kind["unknown_meter"]}
    assert known_fault_ts and not known_fault_ts & {first, last}
    step = dt.timedelta(minutes=15)
    fault_at = {(m, ts): f for m, ts, f in ((r["meter_id"], r["ts"], r["fault"]) for r in faults)}
    for kind in ("short_gap", "long_gap"):
        for meter, ts in by_kind[kind]:
            for neighbour in (ts - step, ts + step):
                other = fault_at.get((meter, neighbour))
                assert other in (None, kind), f"{kind} at {meter} {ts} touches {other}"
    # Runs of gap intervals have the planted lengths.
    for kind, (lo, hi) in (("short_gap", (1, 4)), ("long_gap", (8, 96))):
        runs = Counter()
        for meter, ts in sorted(by_kind[kind]):
            if (meter, ts - step) not in by_kind[kind]:
                start = ts
            runs[(meter, start)] += 1
        assert runs and all(lo <= n <= hi for n in runs.values()), (kind, runs)


def test_fault_counts_follow_the_configured_rates(faulty_lake):
    lake, _ = faulty_lake
    _, by_kind = _fault_rows(lake)
    known_readings = 40 * 4 * 96
    for kind in ("duplicate", "spike", "negative", "null_value"):
        assert len(by_kind[kind]) == round(0.01 * known_readings), kind
    assert len({m for m, _ in by_kind["long_gap"]}) == 8
    assert len({m for m, _ in by_kind["short_gap"]}) == 12
    assert len({m for m, _ in by_kind["unknown_meter"]}) == 2


def test_unknown_meters_report_but_are_not_in_the_archive(faulty_lake):
    lake, _ = faulty_lake
    archive = lake.read_arrow("bronze.customer_archive").to_pylist()
    truth = lake.read_arrow("truth.meters").to_pylist()
    ami = lake.read_arrow("bronze.ami_interval", columns=["meter_id", "ts"]).to_pylist()
    _, by_kind = _fault_rows(lake)
    archived = {r["meter_id"] for r in archive}
    known = {r["meter_id"] for r in truth if r["in_archive"]}
    unknown = {r["meter_id"] for r in truth if not r["in_archive"]}
    assert archived == known and len(unknown) == 2 and not archived & unknown
    assert all(r["customer_id"] is None for r in truth if not r["in_archive"])
    assert {r["meter_id"] for r in ami} == known | unknown
    unknown_readings = {(r["meter_id"], r["ts"]) for r in ami if r["meter_id"] in unknown}
    assert unknown_readings == by_kind["unknown_meter"]
    assert {r["customer_id"] for r in truth if r["in_archive"]} == {r["customer_id"] for r in archive}


# ------------------------------------------------------------------ planted behaviour

def test_archetype_shapes_differ_as_designed(make_settings, spark, tmp_path):
    lake, _ = _generate(make_settings, spark, tmp_path / "shapes", *NO_FAULTS, meters=100, days=7, start="2026-06-01")
    truth = {r["meter_id"]: r for r in lake.read_arrow("truth.meters").to_pylist()}
    ami = lake.read_arrow("bronze.ami_interval")
    hours = _local_hours(ami["ts"])
    weekend = np.array([d.weekday() >= 5 for d in ami["date"].to_pylist()])
    kwh = ami["kwh"].to_numpy()
    meter = np.array(ami["meter_id"].to_pylist())
    arch = np.array([truth[m]["archetype"] for m in meter])

    def share(archetype, lo, hi, day_mask=None):
        sel = (arch == archetype) & (True if day_mask is None else day_mask)
        in_window = (hours >= lo) & (hours < hi) if lo < hi else (hours >= lo) | (hours < hi)
        per_meter = [kwh[sel & in_window & (meter == m)].sum() / kwh[sel & (meter == m)].sum()
                     for m in np.unique(meter[sel])]
        return float(np.mean(per_meter))

    assert share("ev_night", 23, 2) > 0.2 > 2 * share("evening_peak", 23, 2)
    assert share("evening_peak", 18, 23) > 0.4
    assert share("double_peak", 7, 9, ~weekend) > 2 * share("evening_peak", 7, 9, ~weekend)
    assert share("night", 23, 7) > 0.6
    assert share("electric_heating", 1, 7) > 1.5 * share("evening_peak", 1, 7)  # heating / AC until morning
    assert share("commercial_day", 8, 18, ~weekend) > 0.7
    assert share("vacant", 19, 5) > 0.6
    assert abs(share("flat", 0, 12) - 0.5) < 0.08
    daily = defaultdict(float)
    for m, d, v in zip(meter, ami["date"].to_pylist(), kwh):
        daily[(m, d)] += v
    by_arch = defaultdict(list)
    for (m, d), total in daily.items():
        by_arch[(truth[m]["archetype"], d.weekday() >= 5)].append(total)
    assert max(by_arch[("vacant", False)] + by_arch[("vacant", True)]) < 1.5
    assert np.mean(by_arch[("commercial_day", True)]) < 0.6 * np.mean(by_arch[("commercial_day", False)])
    assert np.mean(by_arch[("commercial_day", False)]) > 5 * np.mean(by_arch[("evening_peak", False)])
    # mean_daily_kwh is the meter's scale: it matches the observed mean within noise.
    # (A household away on a trip uses far less that week, so this holds per archetype, not per meter.)
    ratios = defaultdict(list)
    for m, row in truth.items():
        observed = np.mean([t for (mm, _), t in daily.items() if mm == m])
        ratios[row["archetype"]].append(observed / row["mean_daily_kwh"])
    for archetype, values in ratios.items():
        assert 0.8 < np.median(values) < 1.25, (archetype, values)
    assert np.mean([0.6 < r < 1.6 for v in ratios.values() for r in v]) > 0.85
    assert all(r["ev_owner"] == (r["archetype"] == "ev_night") and r["vacant"] == (r["archetype"] == "vacant")
               for r in truth.values())


def test_archive_is_plausible_and_holds_the_planted_segments(make_settings, spark, tmp_path):
    lake, _ = _generate(make_settings, spark, tmp_path / "archive", *NO_FAULTS, "generate.archive_attribute_null_share=0",
                        meters=400, days=1)
    truth = {r["meter_id"]: r for r in lake.read_arrow("truth.meters").to_pylist()}
    archive = lake.read_arrow("bronze.customer_archive").to_pylist()
    assert len({r["customer_id"] for r in archive}) == 400
    for r in archive:
        assert re.fullmatch(r"C\d{8}", r["customer_id"]) and re.fullmatch(r"M\d{10}", r["meter_id"])
        assert re.fullmatch(r"13\d{9}", r["phone"]) and r["customer_name"] and r["address"]
        assert r["region"] in {"SA01", "SA02", "SA03", "SA04"}
        commercial = truth[r["meter_id"]]["archetype"] == "commercial_day"
        assert r["customer_type"] == ("commercial" if commercial else "residential")
        assert r["housing_type"] in ({"shop", "office"} if commercial else {"apartment", "house", "villa"})
        assert r["tariff_type"] in {"flat_rate", "tou", "tiered"}
        assert (r["tariff_type"] == "tou") == ("tou" in (r["products_held"] or "").split(";"))
        assert set((r["products_held"] or "tou").split(";")) <= {"tou", "green_power", "smart_home", "ev_charger"}
        assert r["contracted_capacity_kva"] > 0 and r["account_open_date"] < dt.date(2025, 8, 1)
    ev_products = [r["products_held"] or "" for r in archive if truth[r["meter_id"]]["ev_owner"]]
    assert any("ev_charger" in p for p in ev_products) and any("tou" in p for p in ev_products)
    assert not any("ev_charger" in (r["products_held"] or "") for r in archive if not truth[r["meter_id"]]["ev_owner"])
    assert 0.01 < np.mean([r["do_not_contact"] for r in archive]) < 0.12
    assert 0.005 < np.mean([r["vip"] for r in archive]) < 0.08
    ratings = Counter(r["credit_rating"] for r in truth.values() if r["in_archive"])
    assert ratings["good"] > ratings["medium"] > ratings["poor"] > 0


def test_billing_reflects_credit_rating(make_settings, spark, tmp_path):
    lake, _ = _generate(make_settings, spark, tmp_path / "bills", *NO_FAULTS, meters=300, days=3, start="2026-06-01")
    truth = {r["customer_id"]: r for r in lake.read_arrow("truth.meters").to_pylist() if r["in_archive"]}
    bills = defaultdict(list)
    for b in lake.read_arrow("bronze.billing_payment").to_pylist():
        bills[b["customer_id"]].append(b)
    snapshot = dt.date(2026, 6, 3)
    for customer, rows in bills.items():
        rating = truth[customer]["credit_rating"]
        assert len(rows) == 24
        # 24 months ending with the latest month already due on the snapshot day (April, due 15 May).
        assert sorted(r["bill_month"] for r in rows)[-1] == dt.date(2026, 4, 1)
        assert all(r["due_date"] == (r["bill_month"] + dt.timedelta(days=32)).replace(day=15) for r in rows)
        unpaid = [r for r in rows if r["paid_date"] is None]
        late = [r for r in rows if r["paid_date"] is not None and r["paid_date"] > r["due_date"]]
        assert all(r["paid_date"] <= snapshot for r in rows if r["paid_date"])
        assert all(r["payment_channel"] is None and r["paid_amount_cny"] < r["bill_amount_cny"] for r in unpaid)
        if rating == "good":
            assert not unpaid and not late
        last_12 = [r for r in late if r["bill_month"] > dt.date(2025, 4, 1)]  # what credit_rating reads
        if rating == "medium":
            assert not unpaid and 1 <= len(last_12) <= 3 and 2 <= len(late) <= 6  # 1-3 a year
        elif rating != "good":
            assert len(last_12) >= 4 or 1 <= len(unpaid) <= 3
            if unpaid:  # the latest bills are the unpaid ones
                latest = sorted(rows, key=lambda r: r["bill_month"])[-len(unpaid):]
                assert all(r["paid_date"] is None for r in latest)
        ratio = sum(r["bill_kwh"] for r in rows) / (truth[customer]["mean_daily_kwh"] * 365 * 2)
        if truth[customer]["archetype"] == "electric_heating":
            # A year of bills holds the winter's heating, far above the June window's mean.
            month = {r["bill_month"].month: r["bill_kwh"] for r in rows}
            assert ratio > 1.0 and month[1] > 1.5 * month[5]
        else:  # the year's climate against a 3-day window's weather, times each home's sensitivity
            assert 0.6 < ratio < 1.6


def test_planted_channel_preferences_are_observable(make_settings, spark, tmp_path):
    lake, _ = _generate(make_settings, spark, tmp_path / "channels", *NO_FAULTS, meters=300, days=1)
    truth = {r["customer_id"]: r for r in lake.read_arrow("truth.meters").to_pylist() if r["in_archive"]}
    families = {"online": {"app", "wechat", "alipay"}, "offline": {"bank_counter", "service_hall"},
                "auto_debit": {"auto_debit"}}
    payments = defaultdict(list)
    for b in lake.read_arrow("bronze.billing_payment").to_pylist():
        if b["payment_channel"] is not None:
            payments[b["customer_id"]].append(b["payment_channel"])
    for customer, channels in payments.items():
        preferred = families[truth[customer]["payment_channel_pref"]]
        assert sum(c in preferred for c in channels) >= 0.9 * len(channels)
    prefs = Counter(r["payment_channel_pref"] for r in truth.values())
    assert prefs["online"] > prefs["offline"] > 0 and prefs["auto_debit"] > 0

    interactions = defaultdict(list)
    for row in lake.read_arrow("bronze.service_interaction").to_pylist():
        interactions[row["customer_id"]].append(row)
    assert set(interactions) == set(truth)
    for customer, rows in interactions.items():
        assert len(rows) >= 2
        preferred = truth[customer]["interaction_channel_pref"]
        assert sum(r["channel"] == preferred for r in rows) >= 0.85 * len(rows)
    types = Counter(r["interaction_type"] for rows in interactions.values() for r in rows)
    assert set(types) == {"inquiry", "repair", "complaint", "suggestion"}


def test_past_campaign_contacts_and_responses(make_settings, spark, tmp_path):
    lake, _ = _generate(make_settings, spark, tmp_path / "campaigns", *NO_FAULTS, meters=600, days=1, start="2026-06-01")
    archive = {r["customer_id"]: r for r in lake.read_arrow("bronze.customer_archive").to_pylist()}
    contacts = lake.read_arrow("bronze.contact_history").to_pylist()
    # Past cycles only: the cycle of the snapshot day (2026-06-01 here) has outcomes still to come.
    responses = [r for r in lake.read_arrow("bronze.campaign_response").to_pylist()
                 if r["cycle_as_of"] < dt.date(2026, 6, 1)]
    start = dt.datetime(2026, 5, 31, 16, tzinfo=dt.timezone.utc)  # local midnight of 2026-06-01
    assert 0.1 < len({c["customer_id"] for c in contacts}) / len(archive) < 0.3
    assert all(start - dt.timedelta(days=180) <= c["ts"] < start for c in contacts)
    assert not any(archive[c["customer_id"]]["do_not_contact"] for c in contacts)
    assert {c["channel"] for c in contacts} <= {"app", "sms", "service_hall", "account_manager"}
    contacted = {(c["campaign_id"], c["customer_id"]) for c in contacts}
    treated = [r for r in responses if (r["campaign_id"], r["customer_id"]) in contacted]
    assert len(treated) == len(contacts) and len(responses) > len(treated)  # plus a holdout
    assert 0.05 <= np.mean([r["responded"] for r in treated]) <= 0.2
    assert all((r["response_ts"] is not None) == r["responded"] for r in responses)
    assert all(r["response_ts"] is None or r["response_ts"] < start for r in responses)


# ------------------------------------------------------------------ a world as hard as the real one

ONLY = ("evening_peak", "flat", "night", "double_peak", "ev_night", "electric_heating", "vacant", "commercial_day")


def _mix(**shares):
    return tuple(f"generate.archetype_mix.{a}={shares.get(a, 0)}" for a in ONLY)


def _daily(lake):
    ami = lake.read_arrow("bronze.ami_interval", columns=["meter_id", "date", "kwh"]).to_pylist()
    daily = defaultdict(float)
    for r in ami:
        daily[(r["meter_id"], r["date"])] += r["kwh"] or 0.0
    return daily


def test_households_vary_day_to_day(make_settings, spark, tmp_path):
    lake, _ = _generate(make_settings, spark, tmp_path / "vary", *NO_FAULTS, *_mix(evening_peak=1),
                        meters=30, days=14)
    ami = lake.read_arrow("bronze.ami_interval")
    hours = _local_hours(ami["ts"])
    meter, date, kwh = np.array(ami["meter_id"].to_pylist()), np.array(ami["date"].to_pylist()), ami["kwh"].to_numpy()
    cvs, peak_spread = [], []
    for m in np.unique(meter):
        days = sorted(set(date[meter == m]))
        totals = [kwh[(meter == m) & (date == d)].sum() for d in days]
        cvs.append(np.std(totals) / np.mean(totals))
        # Hour by which half of the evening's (15-24 h) energy is used: the routine's timing.
        halves = []
        for d in days:
            sel = (meter == m) & (date == d) & (hours >= 15)
            order = np.argsort(hours[sel])
            cum = np.cumsum(kwh[sel][order])
            halves.append(hours[sel][order][np.searchsorted(cum, cum[-1] / 2)])
        peak_spread.append(np.std(halves))
    assert np.median(cvs) > 0.2  # levels vary (a fixed shape with day noise alone gives about 0.17)
    assert np.median(peak_spread) > 0.4  # the evening routine shifts by the better part of an hour


def test_ambiguous_households_mix_in_a_second_pattern(make_settings, spark, tmp_path):
    night_share = {}
    for share in (0, 1):
        lake, _ = _generate(make_settings, spark, tmp_path / f"amb{share}", *NO_FAULTS, *_mix(night=1),
                            f"generate.ambiguous_meter_share={share}", meters=30, days=3)
        ami = lake.read_arrow("bronze.ami_interval")
        hours, kwh = _local_hours(ami["ts"]), ami["kwh"].to_numpy()
        night_share[share] = kwh[(hours >= 23) | (hours < 7)].sum() / kwh.sum()
    # Clear night homes keep most of their load at night; ambiguous ones carry 25-45% of another pattern.
    assert night_share[0] > 0.6 and night_share[0] - night_share[1] > 0.1


def test_appliance_bursts_are_real_load_and_never_faults(make_settings, spark, tmp_path):
    lake, _ = _generate(make_settings, spark, tmp_path / "bursts", *MANY_FAULTS,
                        *_mix(evening_peak=1, flat=1, night=1, double_peak=1), meters=120, days=10)
    truth = {r["meter_id"]: r for r in lake.read_arrow("truth.meters").to_pylist()}
    _, by_kind = _fault_rows(lake)
    faulted = set().union(*by_kind.values())
    ami = lake.read_arrow("bronze.ami_interval").to_pylist()
    small = {m for m, r in truth.items() if r["mean_daily_kwh"] <= 6.0 and r["in_archive"]}
    # On a home using <= 6 kWh a day (0.06 kWh per quarter-hour), 1 kWh in a quarter-hour is a 4+ kW appliance.
    bursts = [r for r in ami if r["meter_id"] in small and (r["meter_id"], r["ts"]) not in faulted
              and r["kwh"] is not None and r["kwh"] >= 1.0]
    assert len({r["meter_id"] for r in bursts}) >= 0.3 * len(small)
    # Real: never more than a 9 kW appliance plus the household draws in 15 minutes, far below any spike.
    assert max(r["kwh"] for r in bursts) < 3.0
    spikes = {(r["meter_id"], r["ts"]): r["kwh"] for r in ami if (r["meter_id"], r["ts"]) in by_kind["spike"]}
    assert spikes and min(spikes.values()) >= 4.5


def test_electric_heating_block_follows_the_temperature(make_settings, spark, tmp_path):
    mix = _mix(electric_heating=1, evening_peak=1)
    ratio = {}
    per_day = {}
    for start in ("2026-01-12", "2026-04-13"):
        lake, _ = _generate(make_settings, spark, tmp_path / start, *NO_FAULTS, *mix, "generate.holiday_calendar=none",
                            meters=60, days=7, start=start)
        truth = {r["meter_id"]: r["archetype"] for r in lake.read_arrow("truth.meters").to_pylist()}
        per_day[start] = defaultdict(list)
        for (m, _), total in _daily(lake).items():
            per_day[start][truth[m]].append(total)
    for archetype in ("electric_heating", "evening_peak"):
        ratio[archetype] = np.mean(per_day["2026-01-12"][archetype]) / np.mean(per_day["2026-04-13"][archetype])
    # January (about 5 C) heats; mid-April (about 15 C) hardly does. Ordinary homes change far less.
    assert ratio["electric_heating"] > 1.8
    assert ratio["evening_peak"] < 1.5
    assert ratio["electric_heating"] > ratio["evening_peak"] + 0.5


def test_public_holidays_are_lived_like_weekends(make_settings, spark, tmp_path):
    # 2026-06-19 (a Friday) is the Dragon Boat Festival; offices and shops work at weekend level.
    level = {}
    for calendar_name in ("cn", "none"):
        lake, _ = _generate(make_settings, spark, tmp_path / calendar_name, *NO_FAULTS, *_mix(commercial_day=1),
                            f"generate.holiday_calendar={calendar_name}", meters=30, days=7, start="2026-06-15")
        by_day = defaultdict(list)
        for (_, d), total in _daily(lake).items():
            by_day[d].append(total)
        weekday = np.mean([np.mean(v) for d, v in by_day.items() if d.weekday() < 4])
        weekend = np.mean([np.mean(v) for d, v in by_day.items() if d.weekday() >= 5])
        level[calendar_name] = np.mean(by_day[dt.date(2026, 6, 19)]) / weekday
        assert weekend / weekday < 0.6
    assert level["cn"] < 0.6 < 0.8 < level["none"]


def test_ev_owners_charge_on_some_nights_only(make_settings, spark, tmp_path):
    lake, _ = _generate(make_settings, spark, tmp_path / "ev", *NO_FAULTS, *_mix(ev_night=1),
                        "generate.holiday_calendar=none", meters=30, days=14)
    ami = lake.read_arrow("bronze.ami_interval")
    hours = _local_hours(ami["ts"])
    meter, date, kwh = np.array(ami["meter_id"].to_pylist()), np.array(ami["date"].to_pylist()), ami["kwh"].to_numpy()
    small_hours = (hours < 5)
    shares = []
    for m in np.unique(meter):
        days = sorted(set(date[meter == m]))
        # A charging night: a quarter-hour of >= 2.5 kW (0.625 kWh) between 00:00 and 05:00.
        charged = [kwh[(meter == m) & (date == d) & small_hours].max() >= 0.625 for d in days]
        shares.append(np.mean(charged))
    assert 0.15 < np.mean(shares) < 0.8 and min(shares) < 0.9 and max(shares) > 0


def test_omitted_tables_are_absent(make_settings, spark, tmp_path):
    omit = "generate.omit_tables=[bronze.billing_payment,bronze.contact_history]"
    lake, counts = _generate(make_settings, spark, tmp_path / "minimal", *NO_FAULTS, omit, meters=10, days=1)
    assert not lake.exists("bronze.billing_payment") and not lake.exists("bronze.contact_history")
    assert set(counts) == set(TABLES) - {"bronze.billing_payment", "bronze.contact_history"}
    assert all(lake.exists(t) for t in counts)
    full, _ = _generate(make_settings, spark, tmp_path / "full", *NO_FAULTS, meters=10, days=1)
    with pytest.raises(ValueError, match="already holds"):
        generate_lake(make_settings(f"lake.root={tmp_path / 'full'}", omit), full, meters=10, days=1)
    with pytest.raises(ConfigError, match="only optional bronze tables"):
        make_settings("generate.omit_tables=[bronze.ami_interval]")


def test_archive_attribute_null_share_is_honoured(make_settings, spark, tmp_path):
    from gridpersona.synthetic.generate import ARCHIVE_OPTIONAL_ATTRIBUTES

    lake, _ = _generate(make_settings, spark, tmp_path / "nulls", *NO_FAULTS,
                        "generate.archive_attribute_null_share=0.3", meters=400, days=1)
    archive = lake.read_arrow("bronze.customer_archive")
    residential = np.array([t == "residential" for t in archive["customer_type"].to_pylist()])
    for name in ARCHIVE_OPTIONAL_ATTRIBUTES:
        null = np.array([v is None for v in archive[name].to_pylist()])
        share = null[residential].mean()  # commercial rows have no age band or household size anyway
        assert 0.22 < share < 0.38, (name, share)
    for name in ("customer_id", "meter_id", "region", "customer_type"):
        assert archive[name].null_count == 0
    none, _ = _generate(make_settings, spark, tmp_path / "none", *NO_FAULTS,
                        "generate.archive_attribute_null_share=0", meters=400, days=1)
    assert none.read_arrow("bronze.customer_archive")["housing_type"].null_count == 0
