"""Campaigns: config validation, eligibility, exclusions, channels, capacity, arbitration, holdout, uplift CI."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import yaml
from chispa import assert_df_equality
from pyspark.sql import functions as F

from gridpersona.config import (DEFAULT_CONF_DIR, Campaign, CampaignsConfig, ChannelRule, ConfigError,
                                load_settings)
from gridpersona.contracts.campaigns import CAMPAIGN_EVALUATION, CAMPAIGN_TARGETS
from gridpersona.contracts.tags import customer_tags_columns, customer_tags_spec
from gridpersona.stages.campaigns import check_rules_against
from gridpersona.transform.holdout import ab_group_col, holdout_bucket, holdout_bucket_col, is_control
from gridpersona.transform import campaign_outcomes as E
from gridpersona.transform import campaigns as C

AS_OF = dt.date(2026, 7, 5)
TZ = "Asia/Shanghai"


# ------------------------------------------------------------------ helpers

def tags_frame(spark, rows: list[dict], tag_definitions=None):
    """A gold.customer_tags frame with the contract columns for ``tag_definitions`` (default: the shipped
    conf/tags.yaml); unspecified columns take bland defaults (a tag without one: null)."""
    spec = customer_tags_spec(tag_definitions if tag_definitions is not None else load_settings("test").tags.definitions)
    defaults = dict(as_of=AS_OF, region="SA01", customer_type="residential", segment_id=1,
                    segment_label="flat", vip=False, do_not_contact=False, account_closed=False, products_held=[],
                    has_arrears=False,
                    tariff_type="flat_rate", age_band="35-49", household_size=3, housing_type="apartment",
                    consumption_level="medium", usage_pattern="flat", price_sensitivity="medium",
                    payment_channel_pref="auto_debit", credit_rating="good", interaction_channel_pref="hotline",
                    campaign_participation="never", ev_owner=False, vacancy=False, bill_shock_risk=False,
                    high_value_stable=False, green_eco=False, smart_tech=False, churn_risk="low",
                    electrification_potential="low", tag_catalog_version="t1")
    data = []
    for r in rows:
        full = {"meter_id": f"M-{r['customer_id']}", **defaults, **r}
        data.append(tuple(full.get(c) for c in spec.column_names))
    return spark.createDataFrame(data, spec.schema)


def campaign(**kw) -> Campaign:
    base = dict(id="c1", name_zh="活动", name_en="Campaign", offer_code="OFR-1", qualifiers={"ev_owner": "ev_owner"},
                priority=1, score="0", holdout_share=0.0)
    return Campaign(**{**base, **kw})


def contacts_frame(spark, rows: list[tuple[str, dt.datetime]]):
    schema = "contact_id string, customer_id string, campaign_id string, ts timestamp, channel string"
    return spark.createDataFrame([(f"CT{i}", c, "past", ts, "sms") for i, (c, ts) in enumerate(rows)], schema)


def local_noon(day: dt.date) -> dt.datetime:
    # 12:00 in Asia/Shanghai is 04:00 UTC the same day.
    return dt.datetime(day.year, day.month, day.day, 4, tzinfo=dt.timezone.utc)


def no_contacts(spark):
    return contacts_frame(spark, [])


RULES = CampaignsConfig().channel_rules


def targets(spark, tags, campaigns, contacts=None, m=2):
    out = C.campaign_targets(tags, contacts if contacts is not None else no_contacts(spark), campaigns, as_of=AS_OF,
                             time_zone=TZ, max_per_customer=m, channel_rules=RULES, fallback_channel="sms")
    return out


def picked(df) -> set[tuple[str, str]]:
    return {(r["campaign_id"], r["customer_id"]) for r in df.select("campaign_id", "customer_id").collect()}


# ------------------------------------------------------------------ config validation

def _conf_dir(tmp_path: Path, campaigns_yaml: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("base.yaml", "test.yaml", "tags.yaml"):
        shutil.copy(DEFAULT_CONF_DIR / name, tmp_path / name)
    (tmp_path / "campaigns.yaml").write_text(campaigns_yaml, encoding="utf-8")
    return tmp_path


GOOD = """
campaigns:
  max_per_customer: 1
  definitions:
    - id: tou_ev
      name_zh: 分时
      name_en: TOU
      offer_code: OFR-TOU
      offered_product: tou
      eligibility: "customer_type = 'residential'"
      qualifiers: {ev_owner: "ev_owner"}
      priority: 1
      score: "CASE WHEN ev_owner THEN 1 ELSE 0 END"
"""


def test_project_campaigns_yaml_loads_with_the_required_strategies():
    s = load_settings("test")
    ids = {c.id for c in s.campaigns.active}
    assert {"tou_rate_advice", "energy_report", "green_power_package", "smart_home_bundle", "vip_service", "bill_shock_alert",
            "vacancy_safety_check", "demand_response", "churn_risk_care"} <= ids
    assert s.campaigns.max_per_customer >= 1
    assert next(c for c in s.campaigns.active if c.id == "vip_service").channel == "account_manager"


def test_valid_campaign_file_and_override(tmp_path):
    conf = _conf_dir(tmp_path, GOOD)
    s = load_settings("test", ["campaigns.max_per_customer=3"], conf_dir=conf)
    assert s.campaigns.max_per_customer == 3
    assert [c.id for c in s.campaigns.active] == ["tou_ev"]


@pytest.mark.parametrize("old, new, expected", [
    ('eligibility: "customer_type = \'residential\'"', 'eligibility: "customer_typo = 1"',
     "unknown column(s) 'customer_typo'"),
    ('score: "CASE WHEN ev_owner THEN 1 ELSE 0 END"', 'score: "CASE WHEN ev_owner THEN"', "does not parse"),
    ('qualifiers: {ev_owner: "ev_owner"}', 'qualifiers: {ev_owner: "(SELECT 1)"}', "subquery"),
    ('qualifiers: {ev_owner: "ev_owner"}', 'qualifiers: {ev_owner: "ev_owner; DROP TABLE x"}', "one expression"),
    ('qualifiers: {ev_owner: "ev_owner"}', 'qualifiers: {ev_owner: "DROP TABLE x"}', "statement"),
    ('score: "CASE WHEN ev_owner THEN 1 ELSE 0 END"', 'score: "sum(mean_daily_kwh)"', "aggregate"),
    ("priority: 1", "priority: 0", "campaigns.definitions.0.priority' (campaign 'tou_ev')"),
    ("      priority: 1\n", "      priority: 1\n      holdout_share: 1.5\n", "holdout_share' (campaign 'tou_ev')"),
    ("      priority: 1\n", "      priority: 1\n      channel: fax\n", "channel' (campaign 'tou_ev')"),
    ('qualifiers: {ev_owner: "ev_owner"}', "qualifiers: {}", "qualifiers' (campaign 'tou_ev')"),
])
def test_bad_campaign_fails_at_load_naming_file_and_campaign(tmp_path, old, new, expected):
    assert old in GOOD
    conf = _conf_dir(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_settings("test", conf_dir=conf)
    text = str(err.value)
    assert str(conf / "campaigns.yaml") in text and "tou_ev" in text and expected in text, text


def test_duplicate_ids_bad_channel_rule_and_stray_keys_fail_at_load(tmp_path):
    twice = GOOD + GOOD.split("definitions:\n", 1)[1]
    with pytest.raises(ConfigError, match=r"campaign id\(s\) \['tou_ev'\] defined more than once"):
        load_settings("test", conf_dir=_conf_dir(tmp_path, twice))
    rule = GOOD.replace("  definitions:", "  channel_rules: [{channel: app, when: \"app_user\"}]\n  definitions:")
    with pytest.raises(ConfigError, match=r"channel_rules\[0\] \(app\) when 'app_user': names unknown column"):
        load_settings("test", conf_dir=_conf_dir(tmp_path, rule))
    with pytest.raises(ConfigError, match="unknown top-level key"):
        load_settings("test", conf_dir=_conf_dir(tmp_path, GOOD + "lake: {root: /x}\n"))


NIGHT_OWL_CAMPAIGN = """
campaigns:
  definitions:
    - id: night_owl_offer
      name_zh: 夜间套餐
      name_en: Night plan
      offer_code: OFR-NIGHT
      eligibility: "customer_type = 'residential'"
      qualifiers: {night_owl: "night_owl"}
      priority: 1
      holdout_share: 0.0
      score: "CASE WHEN night_owl THEN 1 ELSE 0 END"
"""


def _with_night_owl_tag(conf: Path) -> None:
    """Add a tag to conf/tags.yaml only: no code knows its name."""
    data = yaml.safe_load((conf / "tags.yaml").read_text(encoding="utf-8"))
    data["definitions"].append(dict(code="night_owl", zh="夜猫子", en="Night owl", level1="usage_behaviour",
                                    level2="usage_pattern", type="boolean", expr="valley_share >= 0.5",
                                    definition="Half or more of the energy in the valley periods."))
    (conf / "tags.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def test_a_tag_added_to_tags_yaml_is_usable_in_a_campaign_rule_with_no_code_change(spark, tmp_path):
    # Before the tag exists, the rule naming it is refused at load.
    with pytest.raises(ConfigError, match=r"campaign 'night_owl_offer'.*unknown column\(s\) 'night_owl'"):
        load_settings("test", conf_dir=_conf_dir(tmp_path / "without", NIGHT_OWL_CAMPAIGN))
    conf = _conf_dir(tmp_path / "with", NIGHT_OWL_CAMPAIGN)
    _with_night_owl_tag(conf)
    settings = load_settings("test", conf_dir=conf)
    assert "night_owl" in customer_tags_columns(settings.tags.definitions)

    tags = tags_frame(spark, [dict(customer_id="A", night_owl=True), dict(customer_id="B", night_owl=False),
                              dict(customer_id="C", night_owl=None)], settings.tags.definitions)
    assert dict(tags.dtypes)["night_owl"] == "boolean"
    conf_c = settings.campaigns
    check_rules_against(tags, conf_c.active, conf_c.channel_rules)  # Spark's analysis, as the stage runs it
    out = C.campaign_targets(tags, no_contacts(spark), conf_c.active, as_of=AS_OF, time_zone=TZ,
                             max_per_customer=conf_c.max_per_customer, channel_rules=conf_c.channel_rules,
                             fallback_channel=conf_c.fallback_channel)
    expected = spark.createDataFrame([("night_owl_offer", "A", ["night_owl"], 1.0)],
                                     "campaign_id string, customer_id string, qualifying_tags array<string>, "
                                     "score double")
    assert_df_equality(out.targets.select("campaign_id", "customer_id", "qualifying_tags", "score"), expected,
                       ignore_nullable=True, ignore_row_order=True)


# ------------------------------------------------------------------ eligibility, exclusions, channels

def test_eligibility_needs_the_rule_and_a_qualifier_and_records_qualifying_tags(spark):
    tags = tags_frame(spark, [
        dict(customer_id="A", ev_owner=True, usage_pattern="night"),
        dict(customer_id="B", ev_owner=False, usage_pattern="night"),
        dict(customer_id="C", ev_owner=True, customer_type="commercial"),  # fails eligibility
        dict(customer_id="D", ev_owner=None, usage_pattern="flat"),  # unknown tag: not a qualifier
        dict(customer_id="E", ev_owner=True, usage_pattern="evening_peak"),
    ])
    c = campaign(eligibility="customer_type = 'residential'",
                 qualifiers={"ev_owner": "ev_owner", "usage_pattern:night": "usage_pattern = 'night'"},
                 score="CASE WHEN ev_owner THEN 2 ELSE 0 END + CASE WHEN usage_pattern = 'night' THEN 1 ELSE 0 END")
    got = C.campaign_candidates(tags, [c], RULES, "sms").select("customer_id", "qualifying_tags", "score")
    expected = spark.createDataFrame([("A", ["ev_owner", "usage_pattern:night"], 3.0), ("B", ["usage_pattern:night"], 1.0),
                                      ("E", ["ev_owner"], 2.0)], "customer_id string, qualifying_tags array<string>, score double")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_exclusions_first_reason_wins_and_each_can_be_switched_off(spark):
    tags = tags_frame(spark, [
        dict(customer_id="ok", ev_owner=True),
        dict(customer_id="dnc", ev_owner=True, do_not_contact=True, has_arrears=True),
        dict(customer_id="dnc_unknown", ev_owner=True, do_not_contact=None),
        dict(customer_id="arrears", ev_owner=True, has_arrears=True),
        dict(customer_id="arrears_unknown", ev_owner=True, has_arrears=None),
        dict(customer_id="recent", ev_owner=True, products_held=["tou"]),
        dict(customer_id="boundary", ev_owner=True),  # contacted exactly N days ago: allowed again
        dict(customer_id="future", ev_owner=True),  # contacted after the as-of: not seen by this cycle
        dict(customer_id="holder", ev_owner=True, products_held=["green_power", "tou"]),
        dict(customer_id="closed", ev_owner=True, account_closed=True, do_not_contact=None),
    ])
    contacts = contacts_frame(spark, [("recent", local_noon(AS_OF - dt.timedelta(days=29))),
                                      ("boundary", local_noon(AS_OF - dt.timedelta(days=30))),
                                      ("future", local_noon(AS_OF + dt.timedelta(days=1)))])
    c = campaign(offered_product="tou")
    cands = C.campaign_candidates(tags, [c], RULES, "sms")
    screened = C.screen_candidates(cands, C.last_contact_dates(contacts, AS_OF, TZ), AS_OF)
    expected = spark.createDataFrame(
        [("ok", None), ("dnc", "do_not_contact"), ("dnc_unknown", "do_not_contact"), ("arrears", "arrears"),
         ("arrears_unknown", "arrears"), ("recent", "recently_contacted"), ("boundary", None), ("future", None),
         ("holder", "holds_product"), ("closed", "account_closed")], "customer_id string, exclusion string")
    assert_df_equality(screened.select("customer_id", "exclusion"), expected, ignore_row_order=True, ignore_nullable=True)

    off = campaign(offered_product="tou", exclusions=dict(do_not_contact=False, arrears=False,
                                                          contacted_within_days=None, holds_offered_product=False))
    cands = C.campaign_candidates(tags, [off], RULES, "sms")
    screened = C.screen_candidates(cands, C.last_contact_dates(contacts, AS_OF, TZ), AS_OF)
    # Switched off, explicit opt-outs and arrears pass; unknown consent and a closed account never do.
    reasons = {r["customer_id"]: r["exclusion"] for r in screened.collect()}
    assert reasons.pop("dnc_unknown") == "do_not_contact"
    assert reasons.pop("closed") == "account_closed"
    assert set(reasons.values()) == {None}


def test_channel_rule_vip_online_offline_and_fixed_channel(spark):
    tags = tags_frame(spark, [
        dict(customer_id="vip", vip=True, interaction_channel_pref="app", ev_owner=True),
        dict(customer_id="app", interaction_channel_pref="app", payment_channel_pref="offline", ev_owner=True),
        dict(customer_id="pays_online", interaction_channel_pref="hotline", payment_channel_pref="online",
             ev_owner=True),
        dict(customer_id="offline", interaction_channel_pref="hotline", payment_channel_pref="offline",
             ev_owner=True),
        dict(customer_id="hall", interaction_channel_pref="service_hall", payment_channel_pref="auto_debit",
             ev_owner=True),
        dict(customer_id="other", interaction_channel_pref="hotline", payment_channel_pref="auto_debit",
             ev_owner=True),
        dict(customer_id="unknown", interaction_channel_pref=None, payment_channel_pref=None, ev_owner=True),
    ])
    got = C.campaign_candidates(tags, [campaign()], RULES, "sms").select("customer_id", "channel")
    expected = spark.createDataFrame([("vip", "account_manager"), ("app", "app"), ("pays_online", "app"),
                                      ("offline", "service_hall"), ("hall", "service_hall"), ("other", "sms"),
                                      ("unknown", "sms")], "customer_id string, channel string")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    fixed = C.campaign_candidates(tags, [campaign(channel="account_manager")], RULES, "sms")
    assert {r["channel"] for r in fixed.collect()} == {"account_manager"}
    custom = [ChannelRule(channel="sms", when="vip")]
    assert {r["customer_id"]: r["channel"] for r in C.campaign_candidates(tags, [campaign()], custom, "app")
            .collect()}["vip"] == "sms"


# ------------------------------------------------------------------ capacity, arbitration

def test_capacity_keeps_top_scores_with_customer_id_tie_break(spark):
    tags = tags_frame(spark, [dict(customer_id=cid, ev_owner=True, household_size=size)
                              for cid, size in [("C5", 2), ("C1", 2), ("C3", 2), ("C2", 2), ("C4", 5), ("C6", None)]])
    c = campaign(score="household_size", capacity=3)
    got = targets(spark, tags, [c]).targets
    # C4 has the top score; the 2-person ties go to the smallest ids; the unknown score ranks last.
    assert picked(got) == {("c1", "C4"), ("c1", "C1"), ("c1", "C2")}
    uncapped = targets(spark, tags, [campaign(score="household_size")]).targets
    assert len(picked(uncapped)) == 6


def test_arbitration_caps_campaigns_per_customer_by_priority_then_score(spark):
    tags = tags_frame(spark, [dict(customer_id="A", ev_owner=True, vip=True, green_eco=True, smart_tech=True),
                              dict(customer_id="B", ev_owner=True, green_eco=True)])
    cs = [campaign(id="p1", priority=1, qualifiers={"vip": "vip"}),
          campaign(id="p2_low", priority=2, qualifiers={"green_eco": "green_eco"}, score="1"),
          campaign(id="p2_high", priority=2, qualifiers={"smart_tech": "smart_tech"}, score="5"),
          campaign(id="p3", priority=3)]
    got = targets(spark, tags, cs, m=2).targets
    assert picked(got) == {("p1", "A"), ("p2_high", "A"), ("p2_low", "B"), ("p3", "B")}
    assert picked(targets(spark, tags, cs, m=1).targets) == {("p1", "A"), ("p2_low", "B")}
    assert len(picked(targets(spark, tags, cs, m=4).targets)) == 6


def test_a_customer_cut_by_capacity_keeps_the_slot_for_a_lower_priority_campaign(spark):
    tags = tags_frame(spark, [dict(customer_id="A", ev_owner=True, household_size=5),
                              dict(customer_id="B", ev_owner=True, household_size=1)])
    cs = [campaign(id="first", priority=1, score="household_size", capacity=1), campaign(id="second", priority=2)]
    assert picked(targets(spark, tags, cs, m=1).targets) == {("first", "A"), ("second", "B")}


def test_uncapped_levels_share_a_step_and_a_capped_level_closes_it():
    priorities = {"a": 1, "b": 2, "c": 2, "d": 3, "e": 4, "f": 5}
    assert C.arbitration_blocks(priorities, {k: None for k in priorities}) == [[1, 2, 3, 4, 5]]
    assert C.arbitration_blocks(priorities, {"a": 10, "c": 5, "f": 1}) == [[1], [2], [3, 4, 5]]


def test_rules_are_analysed_by_spark_against_the_real_tags_before_targeting(spark):
    from gridpersona.stages.campaigns import check_rules_against

    tags = tags_frame(spark, [dict(customer_id="A")])
    check_rules_against(tags, [campaign(score="household_size * 2")], RULES)
    with pytest.raises(ValueError, match=r"campaign 'c1': score 'no_such_function\(vip\)' does not analyse"):
        check_rules_against(tags, [campaign(score="no_such_function(vip)")], RULES)
    with pytest.raises(ValueError, match=r"campaign 'c1': score 'region' must be numeric, got string"):
        check_rules_against(tags, [campaign(score="region")], RULES)
    with pytest.raises(ValueError, match=r"campaign 'c1': eligibility 'smart_tech': .*has no column\(s\) \['smart_tech'\]"):
        check_rules_against(tags.drop("smart_tech"), [campaign(eligibility="smart_tech")], RULES)


def test_targets_columns_groups_and_checkpointed_levels(spark):
    tags = tags_frame(spark, [dict(customer_id=f"C{i:04d}", ev_owner=True, segment_label="ev_night")
                              for i in range(400)])
    cs = [campaign(id="a", priority=1, holdout_share=0.25, capacity=300), campaign(id="b", priority=2),
          campaign(id="c", priority=3, holdout_share=0.5)]
    out = C.campaign_targets(tags, no_contacts(spark), cs, as_of=AS_OF, time_zone=TZ, max_per_customer=2,
                             channel_rules=RULES, fallback_channel="sms", checkpoint=lambda df: df.localCheckpoint())
    rows = out.targets.collect()
    assert out.targets.columns == CAMPAIGN_TARGETS.column_names
    assert [f.dataType for f in out.targets.schema] == [f.dataType for f in CAMPAIGN_TARGETS.schema]
    counts = {k: sum(1 for r in rows if r["campaign_id"] == k) for k in "abc"}
    assert counts == {"a": 300, "b": 400, "c": 100}
    shares = {"a": 0.25, "b": 0.0, "c": 0.5}
    assert all((r["ab_group"] == "control") == is_control(r["customer_id"], r["campaign_id"], shares[r["campaign_id"]])
               for r in rows)
    assert all(r["as_of"] == AS_OF and r["offer_code"] == "OFR-1" and r["segment_label"] == "ev_night" for r in rows)


def test_unknown_opt_out_is_never_targeted_from_the_archive_through_tags_to_targets(spark):
    """The whole path: an archive do_not_contact null -> view -> tags -> targets: no target row, no treatment."""
    from gridpersona.contracts.tags import FEATURE_VIEW
    from gridpersona.transform import features as FV
    from gridpersona.transform import tags as TG

    settings = load_settings("test")
    archive = spark.createDataFrame(
        [(f"C{i:03d}", f"M{i:03d}", "SA01", "residential", [None, False, True][i % 3]) for i in range(60)],
        "customer_id string, meter_id string, region string, customer_type string, do_not_contact boolean")
    for c in ("customer_name", "phone", "address", "tariff_type", "age_band", "housing_type", "products_held"):
        archive = archive.withColumn(c, F.lit(None).cast("string"))
    archive = (archive.withColumn("household_size", F.lit(None).cast("int"))
               .withColumn("contracted_capacity_kva", F.lit(None).cast("double"))
               .withColumn("vip", F.lit(None).cast("boolean"))
               .withColumn("account_open_date", F.lit(None).cast("date"))
               .withColumn("account_close_date", F.lit(None).cast("date")))
    daily_schema = ("meter_id string, date date, slot_kwh array<double>, daily_kwh double, completeness double, "
                    "peak_share double, flat_share double, valley_share double, load_factor double, "
                    "max_kwh double, is_weekend boolean")
    daily = spark.createDataFrame([(f"M{i:03d}", AS_OF, [0.4] * 24, 9.6, 1.0, 0.5, 0.3, 0.2, 0.5, 0.4, False)
                                   for i in range(60)], daily_schema)
    segments = spark.createDataFrame([(f"M{i:03d}", 1, "flat") for i in range(60)],
                                     "meter_id string, segment_id int, segment_label string")
    empty = {"billing": "customer_id string", "interactions": "customer_id string",
             "contacts": "customer_id string", "responses": "customer_id string"}
    frames = {k: spark.createDataFrame([], v) for k, v in empty.items()}
    view = FV.customer_feature_view(
        archive, segments, daily, frames["billing"], frames["interactions"], frames["contacts"], frames["responses"],
        as_of=AS_OF, interval_minutes=60, time_zone=TZ, params=settings.tags.features,
        absent=set(FV.OPTIONAL_SOURCES))
    assert [f.name for f in view.schema] == FEATURE_VIEW.column_names
    tags = TG.compile_tags(view, settings.tags).select(*customer_tags_columns(settings.tags.definitions))
    dnc = {r["customer_id"]: r["do_not_contact"] for r in tags.select("customer_id", "do_not_contact").collect()}
    assert sum(v is None for v in dnc.values()) == 20  # unknown stays unknown in the tags
    # A campaign every customer qualifies for, half held out: the unknown-consent customers are in neither group.
    # (No bills here, so arrears are unknown too: that exclusion is off to isolate consent.)
    everyone = campaign(qualifiers={"all": "customer_type = 'residential'"}, holdout_share=0.5,
                        exclusions=dict(do_not_contact=True, arrears=False, contacted_within_days=None,
                                        holds_offered_product=False))
    out = targets(spark, tags, [everyone])
    got = {r["customer_id"]: r["ab_group"] for r in out.targets.collect()}
    reasons = {r["customer_id"]: r["exclusion"] for r in out.screened.collect()}
    assert set(got) == {c for c, v in dnc.items() if v is False}
    assert {"treatment", "control"} <= set(got.values())
    assert all(reasons[c] == "do_not_contact" for c, v in dnc.items() if v is not False)


# ------------------------------------------------------------------ holdout hash

def test_holdout_hash_is_the_same_in_python_and_spark_and_stable(spark):
    ids = [f"C{20001 + i:08d}" for i in range(3000)]
    df = spark.createDataFrame([(c, "tou_ev_night") for c in ids], "customer_id string, campaign_id string")
    spark_buckets = {r["customer_id"]: r["b"] for r in df.select("customer_id", holdout_bucket_col(
        "customer_id", "campaign_id").alias("b")).collect()}
    assert all(spark_buckets[c] == holdout_bucket(c, "tou_ev_night") for c in ids)
    # Another order, partitioning and extra columns (a retrain's new score) change nothing.
    shuffled = df.withColumn("score", F.rand(3)).repartition(7, "score").orderBy(F.col("score").desc())
    again = {r["customer_id"]: r["g"] for r in shuffled.select("customer_id", ab_group_col(
        "customer_id", "campaign_id", 0.2).alias("g")).collect()}
    assert all(again[c] == ("control" if is_control(c, "tou_ev_night", 0.2) else "treatment") for c in ids)
    assert holdout_bucket("C00020001", "a") != holdout_bucket("C00020001", "b")  # campaigns draw independently


@pytest.mark.parametrize("share", [0.1, 0.25])
def test_holdout_share_within_one_point_on_20000_eligible_customers(spark, share):
    df = spark.range(20000).select(F.format_string("C%08d", F.col("id") + 20001).alias("customer_id"),
                                   F.lit("green_power_package").alias("campaign_id"))
    control = df.filter(ab_group_col("customer_id", "campaign_id", share) == "control").count()
    assert abs(control / 20000 - share) <= 0.01


# ------------------------------------------------------------------ uplift and its interval

def test_newcombe_interval_matches_the_published_examples():
    # Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10.
    for (x1, n1, x2, n2), (lo, hi) in [((56, 70, 48, 80), (0.0524, 0.3339)), ((9, 10, 3, 10), (0.1705, 0.8090)),
                                       ((6, 7, 2, 7), (0.0582, 0.8062)), ((5, 56, 0, 29), (-0.0381, 0.1926)),
                                       ((0, 10, 0, 20), (-0.1611, 0.2775)), ((10, 10, 0, 20), (0.6791, 1.0))]:
        got = E.newcombe_interval(x1, n1, x2, n2, 0.95)
        assert got == pytest.approx((lo, hi), abs=6e-5)


def _outcomes(spark, groups: list[tuple[str, str, int, int, int, int]]):
    """Per (campaign, segment, x_t, n_t, x_c, n_c): target rows with ab_group and responded, built in Spark."""
    g = spark.createDataFrame(groups, "campaign_id string, segment_label string, x_t int, n_t int, x_c int, n_c int")
    rows = (g.withColumn("i", F.explode(F.sequence(F.lit(0), F.col("n_t") + F.col("n_c") - 1)))
            .withColumn("ab_group", F.when(F.col("i") < F.col("n_t"), "treatment").otherwise("control"))
            .withColumn("responded", F.when(F.col("i") < F.col("n_t"), F.col("i") < F.col("x_t"))
                        .otherwise(F.col("i") - F.col("n_t") < F.col("x_c"))))
    return rows.select("campaign_id", "segment_label", F.format_string("C%06d", "i").alias("customer_id"), "ab_group",
                       "responded")


def test_spark_uplift_table_equals_the_closed_form_and_handles_empty_groups(spark):
    groups = [("a", "s", 30, 200, 5, 50), ("b", "s", 0, 40, 0, 10), ("c", "s", 4, 20, 0, 0)]
    rows = {r["campaign_id"]: r for r in E.uplift_table(_outcomes(spark, groups), by=["campaign_id"], confidence=0.95)
            .collect()}
    for cid, _, x_t, n_t, x_c, n_c in groups[:2]:
        r = rows[cid]
        assert (r["n_treatment"], r["responders_treatment"], r["n_control"], r["responders_control"]) == \
            (n_t, x_t, n_c, x_c)
        assert r["uplift"] == pytest.approx(x_t / n_t - x_c / n_c)
        assert (r["uplift_ci_low"], r["uplift_ci_high"]) == pytest.approx(E.newcombe_interval(x_t, n_t, x_c, n_c))
    assert rows["b"]["uplift_ci_low"] < 0 < rows["b"]["uplift_ci_high"]  # no responders: still a real interval
    assert rows["c"]["rate_control"] is None and rows["c"]["uplift"] is None and rows["c"]["uplift_ci_low"] is None


def test_interval_covers_the_true_uplift_about_95_percent_of_simulated_campaigns(spark):
    rng = np.random.default_rng(20240501)
    reps, n_t, n_c, base, uplift = 600, 400, 60, 0.06, 0.04
    x_t = rng.binomial(n_t, base + uplift, reps)
    x_c = rng.binomial(n_c, base, reps)
    groups = [(f"r{i:04d}", "s", int(a), n_t, int(b), n_c) for i, (a, b) in enumerate(zip(x_t, x_c))]
    out = E.uplift_table(_outcomes(spark, groups), by=["campaign_id"], confidence=0.95)
    covered = out.select(((F.col("uplift_ci_low") <= uplift) & (uplift <= F.col("uplift_ci_high"))).cast("int")
                         .alias("c")).agg(F.avg("c")).first()[0]
    # Binomial sd of the coverage over 600 replicates is ~0.9 points.
    assert 0.92 <= covered <= 0.98, covered


def test_campaign_evaluation_joins_responses_of_the_cycle_per_campaign_and_segment(spark):
    targets_schema = "as_of date, campaign_id string, customer_id string, ab_group string, segment_label string"
    tg = spark.createDataFrame([
        (AS_OF, "a", "C1", "treatment", "ev_night"), (AS_OF, "a", "C2", "treatment", "flat"),
        (AS_OF, "a", "C3", "control", "ev_night"), (AS_OF, "a", "C4", "control", "flat"),
        (AS_OF, "a", "C5", "treatment", "flat"),  # no response row
    ], targets_schema)
    rs = spark.createDataFrame([
        ("a", AS_OF, "C1", True, None), ("a", AS_OF, "C2", False, None), ("a", AS_OF, "C3", False, None),
        ("a", AS_OF, "C4", True, None),
        ("a", AS_OF - dt.timedelta(days=30), "C5", True, None),  # another cycle's response
        ("b", AS_OF, "C1", True, None),  # another campaign's response
    ], "campaign_id string, cycle_as_of date, customer_id string, responded boolean, response_ts timestamp")
    ev = E.campaign_evaluation(tg, rs, confidence=0.95)
    assert ev.columns == CAMPAIGN_EVALUATION.column_names
    rows = {(r["level"], r["segment_label"]): r for r in ev.collect()}
    assert set(rows) == {("campaign", None), ("segment", "ev_night"), ("segment", "flat")}
    top = rows[("campaign", None)]
    assert (top["targets"], top["targets_without_response"], top["n_treatment"], top["responders_treatment"],
            top["n_control"], top["responders_control"]) == (5, 1, 2, 1, 2, 1)
    assert top["uplift"] == 0.0 and top["ci_method"] == E.CI_METHOD and top["significant"] is False
    ev_night = rows[("segment", "ev_night")]
    assert (ev_night["rate_treatment"], ev_night["rate_control"], ev_night["uplift"]) == (1.0, 0.0, 1.0)
    # Families: the cycle's campaign rows (here 1) and its campaign x segment rows (here 2), each with both arms.
    assert (top["family_size"], top["family_confidence"]) == (1, pytest.approx(0.95))
    assert (top["uplift_family_low"], top["uplift_family_high"]) == pytest.approx((top["uplift_ci_low"],
                                                                                   top["uplift_ci_high"]), abs=1e-9)
    assert {(r["family_size"], round(r["family_confidence"], 12)) for k, r in rows.items() if k[0] == "segment"} == \
        {(2, 0.975)}
    assert ev_night["uplift_family_low"] < ev_night["uplift_ci_low"] and \
        ev_night["uplift_family_high"] >= ev_night["uplift_ci_high"]


# ------------------------------------------------------------------ simultaneous (family) intervals

def test_bonferroni_level_splits_the_error_over_the_family():
    assert E.bonferroni_confidence(0.95, 1) == pytest.approx(0.95)
    assert E.bonferroni_confidence(0.95, 8) == pytest.approx(1 - 0.05 / 8)
    assert E.bonferroni_confidence(0.90, 40) == pytest.approx(1 - 0.10 / 40)
    with pytest.raises(ValueError, match="family_size"):
        E.bonferroni_confidence(0.95, 0)
    # The family interval is the Newcombe interval at that level: wider than the row's own.
    groups = [(30, 200, 5, 50), (12, 90, 1, 20), (0, 15, 0, 4)]
    fam = E.family_intervals(groups + [(3, 10, 0, 0)], 0.95)
    assert fam[3] is None  # empty control arm: no interval, and not counted in the family
    for g, f in zip(groups, fam):
        assert f == pytest.approx(E.newcombe_interval(*g, confidence=1 - 0.05 / 3))
        own = E.newcombe_interval(*g, confidence=0.95)
        assert f[0] < own[0] and own[1] < f[1] or f[1] == own[1] == 1.0


def test_normal_quantile_column_matches_the_exact_quantile(spark):
    ps = [1e-9, 1e-6, 0.001, 0.02, 0.02425, 0.1, 0.3, 0.5, 0.7, 0.975, 0.97575, 0.99, 0.999375, 1 - 1e-7]
    got = [r["z"] for r in spark.createDataFrame([(p,) for p in ps], "p double")
           .select(E.normal_quantile_col(F.col("p")).alias("z")).collect()]
    for p, z in zip(ps, got):
        exact = NormalDist().inv_cdf(p)
        assert z == pytest.approx(exact, rel=2e-9, abs=1e-12), p
    bounds = spark.createDataFrame([(0.0,), (1.0,)], "p double").select(E.normal_quantile_col(F.col("p")).alias("z"))
    assert [r["z"] for r in bounds.collect()] == [None, None]


def _counts(spark, rows: list[tuple[str, str, int, int, int, int]]):
    """A per-row counts frame (cycle, level, x_t, n_t, x_c, n_c) as response_counts returns it."""
    return spark.createDataFrame(rows, "as_of string, level string, responders_treatment long, n_treatment long, "
                                       "responders_control long, n_control long")


def test_spark_family_intervals_equal_the_python_twin_per_cycle_and_level(spark):
    rows = [("c1", "campaign", 30, 200, 5, 50), ("c1", "campaign", 0, 40, 0, 10), ("c1", "campaign", 4, 20, 0, 0),
            ("c1", "campaign", 12, 300, 2, 60),
            ("c1", "segment", 10, 60, 1, 12), ("c1", "segment", 20, 140, 4, 38), ("c1", "segment", 0, 40, 0, 10),
            ("c1", "segment", 7, 150, 1, 30), ("c1", "segment", 5, 150, 1, 30),
            ("c2", "campaign", 9, 30, 2, 8), ("c2", "campaign", 3, 0, 0, 5)]
    out = E.with_family_interval(_counts(spark, rows), family_by=["as_of", "level"], confidence=0.95).collect()
    by_family: dict[tuple, list] = {}
    for r in rows:
        by_family.setdefault(r[:2], []).append(r[2:])
    expected = {}
    for key, groups in by_family.items():
        m = sum(1 for _, n_t, _, n_c in groups if n_t and n_c)
        for g, interval in zip(groups, E.family_intervals(groups, 0.95)):
            expected[(*key, *g)] = (m, interval)
    assert len(out) == len(rows)
    for r in out:
        m, interval = expected[(r["as_of"], r["level"], r["responders_treatment"], r["n_treatment"],
                                r["responders_control"], r["n_control"])]
        assert r["family_size"] == m  # c1 campaign: 3 of 4 have both arms; c1 segment: 5; c2: 1
        assert r["family_confidence"] == pytest.approx(E.bonferroni_confidence(0.95, m))
        if interval is None:
            assert r["uplift_family_low"] is None and r["uplift_family_high"] is None and r["significant_family"] is None
        else:
            assert (r["uplift_family_low"], r["uplift_family_high"]) == pytest.approx(interval, abs=1e-9)
            assert r["significant_family"] == (interval[0] > 0 or interval[1] < 0)


def test_family_intervals_cover_all_true_uplifts_together_in_about_95_percent_of_simulated_cycles(spark):
    # Eight campaigns of one cycle sized like the default lake's (treatment n, control n, base rate, true uplift).
    campaigns = [(150, 38, 0.08, 0.10), (1200, 130, 0.03, 0.02), (400, 45, 0.05, 0.04), (900, 160, 0.10, 0.05),
                 (250, 28, 0.04, 0.06), (600, 110, 0.12, 0.03), (300, 55, 0.06, 0.08), (1800, 200, 0.02, 0.015)]
    rng = np.random.default_rng(20240502)
    cycles = 600
    rows = [(f"cycle{k:04d}", "campaign", int(rng.binomial(n_t, base + up)), n_t, int(rng.binomial(n_c, base)), n_c,
             up) for k in range(cycles) for n_t, n_c, base, up in campaigns]
    counts = spark.createDataFrame(rows, "as_of string, level string, responders_treatment long, n_treatment long, "
                                         "responders_control long, n_control long, true_uplift double")
    out = E.with_family_interval(E.with_uplift_interval(counts, confidence=0.95), family_by=["as_of", "level"],
                                 confidence=0.95)

    def inside(lo: str, hi: str):
        return ((F.col(lo) <= F.col("true_uplift")) & (F.col("true_uplift") <= F.col(hi))).cast("int")

    per_cycle = out.groupBy("as_of").agg(F.min(inside("uplift_family_low", "uplift_family_high")).alias("family"),
                                         F.min(inside("uplift_ci_low", "uplift_ci_high")).alias("own"),
                                         F.max("family_size").alias("m"))
    res = per_cycle.agg(F.avg("family").alias("family"), F.avg("own").alias("own"), F.max("m").alias("m")).first()
    assert res["m"] == len(campaigns)
    # All eight family intervals cover together in ~95 % of cycles (binomial sd over 600 cycles ~0.9 points) ...
    assert res["family"] >= 0.93, res
    # ... while all eight per-campaign 95 % intervals cover together only ~0.95^8 = 66 % of the time.
    assert res["own"] <= 0.80, res
