"""Campaigns end to end on the session's synthetic lake: the real tags stage -> campaigns -> evaluate (the one
`run all` of tests/conftest.py), then campaigns -> evaluate again on a copy."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from gridpersona.synthetic.truth_checks import uplift_truth_check
from gridpersona.transform.holdout import is_control
from gridpersona.lake import Lake
from gridpersona.stages.pipeline import run_pipeline
from gridpersona.contracts import pii_columns
from gridpersona.contracts.campaigns import CAMPAIGN_EVALUATION, CAMPAIGN_TARGETS

pytestmark = pytest.mark.e2e

from conftest import SYNTHETIC_DAYS as DAYS, SYNTHETIC_METERS as METERS, SYNTHETIC_START as START  # noqa: E402

AS_OF = START + dt.timedelta(days=DAYS - 1)


def _rows(lake: Lake, table: str) -> list[tuple]:
    df = lake.read(table).filter(F.col("as_of") == F.lit(AS_OF))
    return sorted(tuple(r) for r in df.collect())


@pytest.fixture(scope="module")
def campaign_lake(synthetic_lake, tmp_path_factory):
    """(settings, shared lake, its campaigns+evaluate results, (rerun results, rerun lake), the shared snapshot).

    The rerun writes to a copy: the shared lake stays read-only.
    """
    settings, lake = synthetic_lake.settings, synthetic_lake.lake
    first = [(name, r) for name, r in synthetic_lake.results if name in ("campaigns", "evaluate")]
    snapshot = {t: _rows(lake, t) for t in ("gold.campaign_targets", "gold.campaign_evaluation")}
    copy_settings, copy = synthetic_lake.copy(tmp_path_factory.mktemp("campaigns-rerun") / "lake")
    spark = synthetic_lake.spark
    second = run_pipeline(copy_settings, spark, copy, "campaigns", AS_OF) + run_pipeline(copy_settings, spark, copy, "evaluate", AS_OF)
    return settings, lake, first, (second, copy), snapshot


def test_targets_respect_exclusions_arbitration_and_the_holdout_hash(campaign_lake):
    settings, lake, first, _, _ = campaign_lake
    targets = lake.read("gold.campaign_targets").filter(F.col("as_of") == F.lit(AS_OF))
    assert targets.columns == CAMPAIGN_TARGETS.column_names
    rows = targets.collect()
    conf = {c.id: c for c in settings.campaigns.active}
    targeted = {r["campaign_id"] for r in rows}
    assert len(targeted) >= len(conf) - 2, targeted
    # Real tags on a 14-day lake: a campaign without targets is one that no customer qualifies for.
    tagged = lake.read("gold.customer_tags").filter(F.col("as_of") == F.lit(AS_OF))
    for cid in set(conf) - targeted:
        qualifies = " OR ".join(f"({q})" for q in conf[cid].qualifiers.values())
        rule = f"({conf[cid].eligibility}) AND ({qualifies})" if conf[cid].eligibility else qualifies
        assert tagged.filter(F.expr(rule)).count() == 0, cid
    assert dict(first)["campaigns"].outputs["gold.campaign_targets"] == len(rows)

    tags = {r["customer_id"]: r for r in lake.read("gold.customer_tags").collect()}
    per_customer: dict[str, int] = {}
    for r in rows:
        per_customer[r["customer_id"]] = per_customer.get(r["customer_id"], 0) + 1
        t, c = tags[r["customer_id"]], conf[r["campaign_id"]]
        assert t["do_not_contact"] is False
        assert not (c.exclusions.arrears and t["has_arrears"])
        assert not (c.offered_product and c.offered_product in t["products_held"])
        assert r["qualifying_tags"] and r["offer_code"] == c.offer_code and r["priority"] == c.priority
        assert (r["ab_group"] == "control") == is_control(r["customer_id"], r["campaign_id"], c.holdout_share)
        assert r["channel"] == "account_manager" if (t["vip"] or c.channel == "account_manager") else \
            r["channel"] in ("app", "sms", "service_hall")
    assert max(per_customer.values()) <= settings.campaigns.max_per_customer
    for cid, c in conf.items():
        if c.capacity:
            assert sum(1 for r in rows if r["campaign_id"] == cid) <= c.capacity

    # Contacted in the last 30 days (the generator's app_promotion cycle): never a target of a 30-day campaign.
    contacts = lake.read("bronze.contact_history").filter(F.col("campaign_id") == "app_promotion") \
        .select("customer_id").distinct().collect()
    recent = {r["customer_id"] for r in contacts}
    assert recent
    thirty = {cid for cid, c in conf.items() if (c.exclusions.contacted_within_days or 0) >= 30}
    assert not [r for r in rows if r["customer_id"] in recent and r["campaign_id"] in thirty]


def test_evaluation_reconciles_with_targets_and_responses(campaign_lake):
    settings, lake, _, _, _ = campaign_lake
    ev = lake.read("gold.campaign_evaluation").filter(F.col("as_of") == F.lit(AS_OF))
    assert ev.columns == CAMPAIGN_EVALUATION.column_names
    targets = lake.read("gold.campaign_targets").filter(F.col("as_of") == F.lit(AS_OF))
    expected = {(r["campaign_id"], r["ab_group"]): r["count"] for r in
                targets.groupBy("campaign_id", "ab_group").count().collect()}
    top = {r["campaign_id"]: r for r in ev.filter(F.col("level") == "campaign").collect()}
    assert set(top) == {c for c, _ in expected}
    for cid, r in top.items():
        # The generator writes a response for every customer and campaign of the cycle.
        assert r["targets_without_response"] == 0
        assert (r["n_treatment"], r["n_control"]) == (expected.get((cid, "treatment"), 0),
                                                      expected.get((cid, "control"), 0))
        if r["n_control"]:
            assert r["uplift_ci_low"] <= r["uplift"] <= r["uplift_ci_high"]
    segs = ev.filter(F.col("level") == "segment").groupBy("campaign_id").agg(
        F.sum("n_treatment").alias("t"), F.sum("n_control").alias("c")).collect()
    assert {r["campaign_id"]: (r["t"], r["c"]) for r in segs} == \
        {cid: (r["n_treatment"], r["n_control"]) for cid, r in top.items()}
    check = uplift_truth_check(lake, AS_OF)
    assert {r["campaign_id"] for r in check} == {c.id for c in settings.campaigns.active}


def test_generator_plants_the_uplift_by_the_same_hash(campaign_lake):
    settings, lake, _, _, _ = campaign_lake
    truth = {r["campaign_id"]: r for r in lake.read_arrow("truth.campaigns").to_pylist()}
    responses = [r for r in lake.read_arrow("bronze.campaign_response").to_pylist() if r["cycle_as_of"] == AS_OF]
    assert len(responses) == METERS * len(truth)
    treated = [r["responded"] for r in responses
               if not is_control(r["customer_id"], r["campaign_id"], truth[r["campaign_id"]]["holdout_share"])]
    control = [r["responded"] for r in responses
               if is_control(r["customer_id"], r["campaign_id"], truth[r["campaign_id"]]["holdout_share"])]
    planted_t = sum((t["base_rate"] + t["true_uplift"]) * (1 - t["holdout_share"]) for t in truth.values()) / \
        sum(1 - t["holdout_share"] for t in truth.values())
    # Pooled over campaigns: ~2,000 treated rows, so the rate is within ~2 points of the planted mean.
    assert abs(sum(treated) / len(treated) - planted_t) < 0.03
    assert sum(control) / len(control) < sum(treated) / len(treated)
    assert all(r["response_ts"] is None or r["response_ts"].date() > AS_OF - dt.timedelta(days=1) for r in responses)


def test_rerun_replaces_the_as_of_partition_identically(campaign_lake):
    _, _, _, (second, copy), snapshot = campaign_lake
    assert snapshot["gold.campaign_targets"] and snapshot["gold.campaign_evaluation"]
    for table, before in snapshot.items():
        assert _rows(copy, table) == before, table
    assert dict(second)["campaigns"].outputs["gold.campaign_targets"] == len(snapshot["gold.campaign_targets"])
    runs = (copy.read("ops.job_runs").filter(F.col("stage").isin("campaigns", "evaluate"))
            .filter(F.col("status") != "running").collect())
    assert len(runs) == 4 and {r["status"] for r in runs} == {"succeeded"}  # the shared run's two, the rerun's two


def test_no_pii_in_campaign_tables(campaign_lake):
    _, lake, first, _, _ = campaign_lake
    # The tags were written by the real tags stage of the same run, not by a stand-in.
    assert lake.read("ops.job_runs").filter((F.col("stage") == "tags") & (F.col("status") == "succeeded")).count() == 1
    assert dict(first)["campaigns"].outputs["gold.campaign_targets"] > 0
    for table in ("gold.customer_tags", "gold.campaign_targets", "gold.campaign_evaluation"):
        assert not set(lake.read(table).columns) & pii_columns(), table
