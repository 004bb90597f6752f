"""The generator's past campaign cycle (generate.plant_outcomes): kWh effect, closures, truth.campaign_outcomes,
and the lake without it."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow.compute as pc
import pytest

from gridpersona.lake import Lake
from gridpersona.synthetic.generate import generate_lake
from gridpersona.transform.holdout import is_control

# A 14-day lake holds a 7-day cycle (2 x outcome_days); a high closure rate so that a 40-meter lake has some.
PLANT = ("generate.outcome_days=7", "generate.outcome_closure_rate=0.5", "generate.outcome_churn_effect=0.1",
         "generate.outcome_kwh_effect=0.2", "generate.faults.spike_reading_share=0.01",
         "generate.faults.negative_reading_share=0.01")
START, DAYS = dt.date(2026, 6, 1), 14
CYCLE = START + dt.timedelta(days=DAYS - 1 - 7)


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    """(planted lake, the same lake with plant_outcomes false, settings of the planted one)."""
    from gridpersona.config import load_settings

    out = []
    for plant in ("true", "false"):
        root = tmp_path_factory.mktemp(f"outcomes-{plant}") / "lake"
        settings = load_settings("test", [f"lake.root={root}", *PLANT, f"generate.plant_outcomes={plant}"])
        lake = Lake(settings, None)
        generate_lake(settings, lake, meters=40, days=DAYS, start=START)
        out.append((lake, settings))
    return out[0][0], out[1][0], out[0][1]


def _readings(lake) -> dict[tuple[str, object], float]:
    t = lake.read_arrow("bronze.ami_interval")
    return {(m, ts): k for m, ts, k in zip(t["meter_id"].to_pylist(), t["ts"].to_pylist(), t["kwh"].to_pylist())}


def test_truth_names_the_cycle_and_the_planted_effects(lakes):
    planted, _, settings = lakes
    truth = {r["outcome"]: r for r in planted.read_arrow("truth.campaign_outcomes").to_pylist()}
    assert set(truth) == {"kwh_log_change", "churn"}
    assert truth["kwh_log_change"]["campaign_id"] == settings.generate.outcome_kwh_campaign
    assert truth["kwh_log_change"]["planted_effect"] == pytest.approx(math.log(0.8))
    assert truth["churn"]["planted_effect"] == pytest.approx(-0.1) and truth["churn"]["base_rate"] == 0.5
    assert all(r["cycle_as_of"] == CYCLE and r["window_first"] == CYCLE + dt.timedelta(days=1)
               and r["window_last"] == START + dt.timedelta(days=DAYS - 1) for r in truth.values())


def test_treated_kwh_scaled_after_the_cycle_and_closed_accounts_stop_reading(lakes):
    planted, plain, settings = lakes
    kwh_campaign = next(c for c in settings.campaigns.active if c.id == settings.generate.outcome_kwh_campaign)
    archive = planted.read_arrow("bronze.customer_archive").to_pylist()
    meter_of = {a["meter_id"]: a for a in archive}
    closed = {a["meter_id"]: a["account_close_date"] for a in archive if a["account_close_date"]}
    assert closed and all(CYCLE < d <= START + dt.timedelta(days=DAYS - 1) for d in closed.values())
    a, b = _readings(planted), _readings(plain)
    tz_offset = dt.timedelta(hours=8)  # Asia/Shanghai, the test config's zone
    for (meter, ts), before in b.items():
        day = (ts + tz_offset).date()
        after = a.get((meter, ts), "absent")
        if meter in closed and day > closed[meter]:
            assert after == "absent", (meter, ts)
            continue
        if before is None:
            assert after is None
            continue
        treated = meter in meter_of and not is_control(meter_of[meter]["customer_id"], kwh_campaign.id,
                                                       kwh_campaign.holdout_share)
        factor = 0.8 if treated and day > CYCLE else 1.0
        assert after == pytest.approx(round(before * factor, 3), abs=1.5e-3), (meter, ts)
    # The planted faults of readings that no longer exist are not in the truth either.
    faults = planted.read_arrow("truth.faults").to_pylist()
    assert not [f for f in faults if f["meter_id"] in closed and (f["ts"] + tz_offset).date() > closed[f["meter_id"]]]


def test_plant_outcomes_false_leaves_the_lake_as_before(lakes):
    _, plain, _ = lakes
    assert plain.read_arrow("truth.campaign_outcomes").num_rows == 0
    closes = plain.read_arrow("bronze.customer_archive")["account_close_date"]
    assert pc.all(pc.is_null(closes)).as_py()


def test_churn_treatment_lowers_the_closure_probability(lakes):
    planted, _, settings = lakes
    churn = next(c for c in settings.campaigns.active if c.id == settings.generate.outcome_churn_campaign)
    archive = planted.read_arrow("bronze.customer_archive").to_pylist()
    treated = np.array([not is_control(a["customer_id"], churn.id, churn.holdout_share) for a in archive])
    closed = np.array([a["account_close_date"] is not None for a in archive])
    # 40 customers at 0.5 (control) and 0.4 (treated): far from all or none closed in either group.
    assert 0.15 < closed[treated].mean() < 0.7
