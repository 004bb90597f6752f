"""gold.campaign_outcomes and gold.campaign_power: per-target outcome values on hand-made frames (values known by
hand), the interval rows from per-arm sums, and what the shared synthetic lake's run wrote."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from pyspark.sql import functions as F

from gridpersona.contracts.bronze import BILLING_PAYMENT, CAMPAIGN_RESPONSE, SERVICE_INTERACTION
from gridpersona.contracts.campaigns import CAMPAIGN_OUTCOMES, CAMPAIGN_POWER
from gridpersona.transform import campaign_outcomes as E
from gridpersona.transform import power as PW

CYCLE = dt.date(2026, 6, 10)
LAST = dt.date(2026, 6, 14)


def _sum(cid, level, channel, outcome, arm, values):
    known = [v for v in values if v is not None]
    return {"campaign_id": cid, "level": level, "channel": channel, "outcome": outcome, "ab_group": arm,
            "n": len(known), "missing": len(values) - len(known), "total": float(sum(known)) if known else None,
            "total_sq": float(sum(v * v for v in known)) if known else None}


def _rows(sums, unavailable=None):
    return E.outcome_rows(sums, as_of=CYCLE, window_first=CYCLE + dt.timedelta(days=1), window_last=LAST,
                          window_complete=False, confidence=0.95, power=0.8, unavailable=unavailable)


def test_proportion_row_is_the_newcombe_interval():
    t = [1.0] * 12 + [0.0] * 88 + [None] * 5
    c = [1.0] * 2 + [0.0] * 38
    rows = _rows([_sum("a", "campaign", None, "response", "treatment", t),
                  _sum("a", "campaign", None, "response", "control", c)])
    (r,) = rows
    assert list(r) == CAMPAIGN_OUTCOMES.column_names
    assert (r["n_treatment"], r["n_control"], r["missing_treatment"], r["missing_control"]) == (100, 40, 5, 0)
    assert r["value_treatment"] == pytest.approx(0.12) and r["value_control"] == pytest.approx(0.05)
    assert r["effect"] == pytest.approx(0.07)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(E.newcombe_interval(12, 100, 2, 40, 0.95))
    assert r["method"] == "newcombe_hybrid_score" and r["family_size"] == 1 and r["reason"] is None
    # A family of one: the family interval is the row's own.
    assert (r["family_low"], r["family_high"]) == pytest.approx((r["ci_low"], r["ci_high"]))
    assert r["mde"] == pytest.approx(PW.mde_proportion_exact(0.05, 100, 40))


def test_mean_row_is_the_welch_interval_and_families_are_per_level_and_outcome():
    t = [-0.10, -0.02, -0.07, 0.01, -0.05, -0.08]
    c = [0.03, -0.01, 0.02, 0.00]
    t2, c2 = [0.1, 0.2, 0.3], [0.0, 0.1]
    rows = _rows([_sum("a", "campaign", None, "kwh_log_change", "treatment", t),
                  _sum("a", "campaign", None, "kwh_log_change", "control", c),
                  _sum("b", "campaign", None, "kwh_log_change", "treatment", t2),
                  _sum("b", "campaign", None, "kwh_log_change", "control", c2),
                  _sum("a", "channel", "sms", "kwh_log_change", "treatment", t)])
    by = {(r["campaign_id"], r["level"]): r for r in rows}
    a = by[("a", "campaign")]
    mean_t, mean_c = sum(t) / 6, sum(c) / 4
    var_t = sum((x - mean_t) ** 2 for x in t) / 5
    var_c = sum((x - mean_c) ** 2 for x in c) / 3
    se = math.sqrt(var_t / 6 + var_c / 4)
    df = (var_t / 6 + var_c / 4) ** 2 / ((var_t / 6) ** 2 / 5 + (var_c / 4) ** 2 / 3)
    half = PW.t_quantile(0.975, df) * se
    assert a["effect"] == pytest.approx(mean_t - mean_c)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((mean_t - mean_c - half, mean_t - mean_c + half))
    assert a["method"] == "welch_t" and a["kind"] == "mean" and a["unit"] == "log_ratio"
    # Two campaign rows measured: each family interval at 97.5 %, wider than the row's own.
    assert a["family_size"] == 2 and a["family_confidence"] == pytest.approx(0.975)
    assert a["family_low"] < a["ci_low"] and a["family_high"] > a["ci_high"]
    # The channel row has no control: no effect, reason empty_arm, a family of 0.
    ch = by[("a", "channel")]
    assert ch["effect"] is None and ch["reason"] == "empty_arm" and ch["family_size"] == 0
    assert ch["value_treatment"] == pytest.approx(mean_t) and ch["value_control"] is None


def test_unavailable_outcome_is_not_written_as_zero():
    sums = [_sum("a", "campaign", None, "churn", "treatment", [0.0] * 30),
            _sum("a", "campaign", None, "churn", "control", [0.0] * 10)]
    (r,) = _rows(sums, unavailable={"churn": "close_date_unknown"})
    assert r["reason"] == "close_date_unknown"
    assert r["effect"] is None and r["value_treatment"] is None and r["value_control"] is None
    assert (r["n_treatment"], r["n_control"], r["missing_treatment"], r["missing_control"]) == (0, 0, 30, 10)


@pytest.fixture(scope="module")
def outcome_values(spark):
    """Three targets of campaign `c` (two treatment, one control) over a 3-day pre and 4-day post period."""
    targets = spark.createDataFrame(
        [("c", "C1", "treatment", "sms"), ("c", "C2", "treatment", "app"), ("c", "C3", "control", "sms")],
        "campaign_id string, customer_id string, ab_group string, channel string")
    archive = spark.createDataFrame(
        [("C1", "M1", None), ("C2", "M2", dt.date(2026, 6, 12)), ("C3", "M3", None)],
        "customer_id string, meter_id string, account_close_date date")
    daily = []
    for m, pre, post in (("M1", 10.0, 8.0), ("M2", 5.0, 5.0), ("M3", 4.0, 6.0)):
        for k in range(8, 15):  # June 8-10 pre, 11-14 post
            day = dt.date(2026, 6, k)
            kwh = pre if day <= CYCLE else post
            daily.append((m, day, kwh, kwh / 10 if day <= CYCLE else kwh / 8, kwh / 40, 1.0))
    daily = spark.createDataFrame(daily, "meter_id string, date date, daily_kwh double, max_kwh double, "
                                         "min_kwh double, completeness double")
    responses = spark.createDataFrame(
        [("c", CYCLE, "C1", True, None), ("c", CYCLE, "C3", False, None), ("c", dt.date(2026, 5, 1), "C2", True, None)],
        CAMPAIGN_RESPONSE.schema)
    d = lambda k: dt.date(2026, 6, k)  # noqa: E731
    billing = spark.createDataFrame(
        [("C1", d(1), 100.0, 50.0, d(12), d(11), 50.0, "app"),     # due in the period, paid on time
         ("C3", d(1), 100.0, 80.0, d(13), d(14), 80.0, "app"),     # paid late
         ("C2", d(1), 100.0, 30.0, d(5), d(5), 30.0, "app")],      # due before the period: no value
        "customer_id string, bill_month date, bill_kwh double, bill_amount_cny double, due_date date, "
        "paid_date date, paid_amount_cny double, payment_channel string")
    billing = billing.select(*[F.col(c.name).cast(c.dtype) for c in BILLING_PAYMENT.columns])
    utc = lambda k, h: dt.datetime(2026, 6, k, h)  # noqa: E731
    interactions = spark.createDataFrame(
        [("i1", "C3", utc(12, 3), "hotline", "complaint", "bill"),
         ("i2", "C1", utc(9, 3), "hotline", "complaint", "bill"),    # before the period
         ("i3", "C2", utc(12, 3), "hotline", "inquiry", "bill")],
        SERVICE_INTERACTION.schema)
    rows = E.customer_outcome_values(targets, responses=responses, daily=daily, archive=archive, billing=billing,
                                     interactions=interactions, cycle=CYCLE, window_last=LAST, pre_days=3,
                                     min_days=3, min_completeness=0.9, min_pre_kwh_per_day=0.1,
                                     time_zone="Asia/Shanghai").collect()
    return {r["customer_id"]: r for r in rows}


def test_customer_outcome_values_by_hand(outcome_values):
    v = outcome_values
    assert v["C1"]["kwh_log_change"] == pytest.approx(math.log(8.0 / 10.0))
    assert v["C3"]["kwh_log_change"] == pytest.approx(math.log(6.0 / 4.0))
    # Peak-valley rate (max - min)/max: pre 1 - (kwh/40)/(kwh/10) = 0.75, post 1 - 8/40 = 0.8.
    assert v["C1"]["peak_valley_rate_change"] == pytest.approx(0.05)
    # C2 closed on June 12: churned, and no kWh value (its post period is cut short by the closure).
    assert v["C2"]["churn"] == 1.0 and v["C1"]["churn"] == 0.0
    assert v["C2"]["kwh_log_change"] is None and v["C2"]["peak_valley_rate_change"] is None
    assert (v["C1"]["response"], v["C3"]["response"], v["C2"]["response"]) == (1.0, 0.0, None)
    assert (v["C1"]["complaint"], v["C2"]["complaint"], v["C3"]["complaint"]) == (0.0, 0.0, 1.0)
    assert (v["C1"]["paid_on_time"], v["C3"]["paid_on_time"], v["C2"]["paid_on_time"]) == (1.0, 0.0, None)
    # No bill month starts after the cycle: no ARPU for anyone.
    assert all(r["arpu_cny"] is None for r in v.values())


@pytest.mark.e2e
def test_shared_lake_outcomes_match_the_evaluation_and_say_why_the_rest_is_missing(synthetic_lake):
    """The shared 14-day lake's cycle is its last day: response rows equal gold.campaign_evaluation's, every
    outcome after the cycle has a reason (no data after it), and churn is unknown (no closures planted)."""
    lake, as_of = synthetic_lake.lake, synthetic_lake.as_of
    out = lake.read(CAMPAIGN_OUTCOMES.name).filter(F.col("as_of") == F.lit(as_of)).collect()
    ev = {r["campaign_id"]: r for r in lake.read("gold.campaign_evaluation")
          .filter((F.col("as_of") == F.lit(as_of)) & (F.col("level") == "campaign")).collect()}
    response = {r["campaign_id"]: r for r in out if r["outcome"] == "response" and r["level"] == "campaign"}
    assert set(response) == set(ev)
    for cid, r in response.items():
        e = ev[cid]
        assert (r["n_treatment"], r["n_control"]) == (e["n_treatment"], e["n_control"])
        if e["uplift_ci_low"] is not None:
            assert (r["effect"], r["ci_low"], r["ci_high"]) == pytest.approx(
                (e["uplift"], e["uplift_ci_low"], e["uplift_ci_high"]))
    later = [r for r in out if r["outcome"] != "response"]
    assert later and all(r["effect"] is None and r["reason"] for r in later)
    assert {r["reason"] for r in later if r["outcome"] == "churn"} == {"close_date_unknown"}
    assert {r["reason"] for r in later if r["outcome"] == "kwh_log_change"} == {"no_data_after_cycle"}


@pytest.mark.e2e
def test_shared_lake_campaign_power_is_the_exact_mde_of_the_targets(synthetic_lake):
    lake, as_of, settings = synthetic_lake.lake, synthetic_lake.as_of, synthetic_lake.settings
    power = lake.read(CAMPAIGN_POWER.name).filter(F.col("as_of") == F.lit(as_of)).collect()
    targets = lake.read("gold.campaign_targets").filter(F.col("as_of") == F.lit(as_of))
    counts = {(r["campaign_id"], r["ab_group"]): r["count"]
              for r in targets.groupBy("campaign_id", "ab_group").count().collect()}
    active = {c.id for c in settings.campaigns.active}
    assert {(r["campaign_id"], r["outcome"]) for r in power} == {
        (c, o) for c in active for o in settings.campaigns.power.outcomes}
    for r in power:
        assert (r["n_treatment"], r["n_control"]) == (counts.get((r["campaign_id"], "treatment"), 0),
                                                      counts.get((r["campaign_id"], "control"), 0))
        if r["outcome"] == "kwh_log_change":
            # 14 days hold no placebo pair of 30-day periods: spread unknown, so no MDE rather than a guess.
            assert r["baseline"] is None and r["mde"] is None and r["mde_method"] == "welch_t"
            continue
        expected = PW.mde_proportion_exact(r["baseline"], r["n_treatment"], r["n_control"],
                                           confidence=1 - r["alpha"], power=r["power"],
                                           decrease=r["outcome"] == "churn")
        assert r["mde"] == (None if expected is None else pytest.approx(expected))
        assert r["baseline_source"] == "config_default"  # the lake holds no earlier cycle


@pytest.mark.e2e
def test_size_holdout_uses_the_share_for_the_target(synthetic_lake, tmp_path):
    """A campaign with size_holdout holds out holdout_share_for_target of its targets (by the same hash), and
    gold.campaign_power stores that share; the other campaigns keep theirs."""
    from gridpersona.stages.pipeline import run_pipeline
    from gridpersona.transform.holdout import holdout_bucket

    tables = ("gold.customer_tags", "bronze.contact_history", "bronze.campaign_response", "gold.campaign_targets")
    settings, lake = synthetic_lake.copy(tmp_path / "lake", tables)
    by_id = {c.id: c for c in settings.campaigns.definitions}
    before = lake.read("gold.campaign_targets").filter(F.col("as_of") == F.lit(synthetic_lake.as_of))
    sizes = {r["campaign_id"]: r["count"] for r in before.groupBy("campaign_id").count().collect()}
    cid = max(sizes, key=sizes.get)  # the largest campaign, so a target effect is feasible
    campaign = by_id[cid]
    campaign.target_effect = 0.3
    campaign.size_holdout = True
    run_pipeline(settings, synthetic_lake.spark, lake, "campaigns", synthetic_lake.as_of)
    power = {r["outcome"]: r for r in lake.read(CAMPAIGN_POWER.name)
             .filter((F.col("as_of") == F.lit(synthetic_lake.as_of)) & (F.col("campaign_id") == cid)).collect()}
    share = power["response"]["holdout_share_for_target"]
    expected = PW.holdout_share_for_target(sizes[cid], 0.3, PW.proportion_sigma(power["response"]["baseline"], 0.3),
                                           max_share=settings.campaigns.power.max_holdout_share)
    assert power["response"]["feasible"] and share == pytest.approx(expected.share)
    assert power["response"]["holdout_share"] == pytest.approx(share) != campaign.holdout_share
    after = lake.read("gold.campaign_targets").filter((F.col("as_of") == F.lit(synthetic_lake.as_of))
                                                      & (F.col("campaign_id") == cid)).collect()
    assert len(after) == sizes[cid]  # the same targets; only who is control changed
    assert all((r["ab_group"] == "control") == (holdout_bucket(r["customer_id"], cid) < share) for r in after)
