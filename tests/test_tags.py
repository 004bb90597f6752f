"""The tag engine: config checks, one-select compile, each tag's rule, the catalog, the feature view, portraits."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from chispa import assert_df_equality
import yaml
from pyspark.sql import Row

from gridpersona.config import ConfigError, TagsConfig, load_settings
from gridpersona.config.tagdocs import render
from gridpersona.contracts.tags import CUSTOMER_TAGS_CONTEXT, FEATURE_VIEW
from gridpersona.transform import features as FV
from gridpersona.transform import tags as TG

ROOT = Path(__file__).resolve().parents[1]
AS_OF = dt.date(2026, 7, 5)


@pytest.fixture(scope="module")
def tags_config() -> TagsConfig:
    return load_settings("test").tags


def _conf_with(tmp_path: Path, edit) -> Path:
    """A copy of conf/ whose tags.yaml went through ``edit(data) -> data``."""
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    data = yaml.safe_load((conf / "tags.yaml").read_text(encoding="utf-8"))
    (conf / "tags.yaml").write_text(yaml.safe_dump(edit(data), allow_unicode=True), encoding="utf-8")
    return conf


def _set_expr(code: str, expr: str):
    def edit(data):
        next(t for t in data["definitions"] if t["code"] == code)["expr"] = expr
        return data
    return edit


# ------------------------------------------------------------------ config load (no Spark)


def test_shipped_tags_load_and_cover_issue_4(tags_config):
    codes = [t.code for t in tags_config.definitions]
    for code in ("consumption_level", "usage_pattern", "price_sensitivity", "payment_channel_pref", "credit_rating",
                 "interaction_channel_pref", "campaign_participation", "ev_owner", "vacancy", "bill_shock_risk",
                 "high_value_stable", "green_eco", "smart_tech", "churn_risk", "electrification_potential",
                 "age_band", "household_size", "housing_type"):
        assert code in codes
    for t in tags_config.definitions:
        assert t.zh and t.en and t.definition and t.expr
        assert t.level2 in tags_config.taxonomy[t.level1].level2
    assert [t.code for t in tags_config.definitions][:3] == ["age_band", "household_size", "housing_type"]


def test_expression_that_does_not_parse_fails_naming_file_and_tag(tmp_path):
    conf = _conf_with(tmp_path, _set_expr("credit_rating", "CASE WHEN late_payments_12m >= THEN 'poor' END"))
    with pytest.raises(ConfigError) as err:
        load_settings("test", conf_dir=conf)
    text = str(err.value)
    assert f"{conf / 'tags.yaml'}: key 'tags.definitions'" in text
    assert "tag 'credit_rating': expression does not parse as Spark SQL" in text


def test_unknown_column_fails_naming_the_tag_and_the_column(tmp_path):
    conf = _conf_with(tmp_path, _set_expr("vacancy", "current_near_zero_run_dayz >= 7"))
    with pytest.raises(ConfigError, match=r"tag 'vacancy': expression names unknown column\(s\) "
                                          r"'current_near_zero_run_dayz' \(did you mean current_near_zero_run_days"):
        load_settings("test", conf_dir=conf)


def test_a_tag_may_use_earlier_tags_but_not_later_ones(tmp_path):
    # high_value_stable (late in the file) uses credit_rating; the other way round is refused.
    conf = _conf_with(tmp_path, _set_expr("credit_rating", "CASE WHEN high_value_stable THEN 'good' END"))
    with pytest.raises(ConfigError, match=r"tag 'credit_rating': expression names unknown column\(s\) 'high_value_stable'"):
        load_settings("test", conf_dir=conf)


@pytest.mark.parametrize("expr, what", [
    ("avg(mean_daily_kwh) > 3", "aggregate"),
    ("percent_rank() OVER (ORDER BY mean_daily_kwh) > 0.7", "aggregate function|window"),
    ("mean_daily_kwh AS x", "alias"),
    ("", "empty"),
])
def test_non_row_level_expressions_are_refused(tmp_path, expr, what):
    conf = _conf_with(tmp_path, _set_expr("ev_owner", expr))
    with pytest.raises(ConfigError, match=rf"tag 'ev_owner': expression .*({what})"):
        load_settings("test", conf_dir=conf)


@pytest.mark.parametrize("expr", [
    "element_at(array('low', 'medium', 'high'), 1 + CAST(valley_share >= 0.4 AS INT))",
    "array('low', 'high')[CAST(valley_share >= 0.4 AS INT)]",
    "try_element_at(array('low', 'high'), complete_days)",
])
def test_computed_array_index_is_refused_naming_the_tag_and_suggesting_case_when(tmp_path, expr):
    # Spark 4.2 returns the LAST element for a NULL index: unknown inputs would read as the top category.
    conf = _conf_with(tmp_path, _set_expr("price_sensitivity", expr))
    with pytest.raises(ConfigError) as err:
        load_settings("test", conf_dir=conf)
    line = next(x for x in str(err.value).splitlines() if "price_sensitivity" in x)
    assert "tag 'price_sensitivity': expression uses element_at / a subscript with a computed index" in line
    assert "CASE WHEN" in line


def test_literal_array_index_is_accepted():
    from gridpersona.config.expressions import check_expression

    assert check_expression("element_at(array('a', 'b'), 2) = 'b' AND responded_campaigns[0] = 'x'",
                            {"responded_campaigns"}) == ["responded_campaigns"]


def test_computed_array_index_is_refused_in_campaign_rules_too(tmp_path):
    from gridpersona.config import Campaign

    with pytest.raises(ValueError, match=r"score .*computed index.*CASE WHEN"):
        Campaign(id="c1", name_zh="活动", name_en="Campaign", offer_code="OFR-1", qualifiers={"ev_owner": "ev_owner"},
                 priority=1, score="element_at(array(0, 1, 2), 1 + CAST(ev_owner AS INT))")


def test_needs_must_name_a_source_or_an_earlier_column(tmp_path):
    def edit(data):
        next(t for t in data["definitions"] if t["code"] == "credit_rating")["needs"] = ["bronze.billing", "high_value_stable"]
        return data

    with pytest.raises(ConfigError, match=r"tag 'credit_rating': needs 'bronze.billing', 'high_value_stable': neither a source"):
        load_settings("test", conf_dir=_conf_with(tmp_path, edit))


def test_taxonomy_values_and_codes_are_checked(tmp_path):
    def edit(data):
        data["definitions"].append(dict(next(t for t in data["definitions"] if t["code"] == "usage_pattern")))
        return data

    with pytest.raises(ConfigError) as err:
        load_settings("test", conf_dir=_conf_with(tmp_path, edit))
    assert "tag 'usage_pattern': defined twice" in str(err.value)

    def edit_level(data):
        data["definitions"][0]["level2"] = "nowhere"
        return data

    with pytest.raises(ConfigError, match="tag 'age_band': level2 'nowhere' is not under level1 'basic_attributes'"):
        load_settings("test", conf_dir=_conf_with(tmp_path / "b", edit_level))

    def edit_values(data):
        next(t for t in data["definitions"] if t["code"] == "ev_owner")["values"] = ["yes"]
        return data

    with pytest.raises(ConfigError, match=r"key 'tags.definitions.\d+\[ev_owner\]': tag 'ev_owner': values are for string tags"):
        load_settings("test", conf_dir=_conf_with(tmp_path / "c", edit_values))


def test_feature_parameters_are_validated_and_overridable():
    s = load_settings("test", ["tags.features.ev_surge_kw=3.0"])
    assert s.tags.features.ev_surge_kw == 3.0
    with pytest.raises(ConfigError, match="tags.features.ev_start_window.*shorter than one hour"):
        load_settings("test", ["tags.features.ev_start_window=23:00-23:30"])
    with pytest.raises(ConfigError, match="tags.features.ev_night_window.*must span midnight"):
        load_settings("test", ["tags.features.ev_night_window=08:00-20:00"])


# ------------------------------------------------------------------ Spark analysis without a job


def _job_ids(spark) -> set[int]:
    return set(spark.sparkContext.statusTracker().getJobIdsForGroup(None))


def test_spark_check_names_the_tag_and_runs_no_job(spark, tags_config):
    before = _job_ids(spark)
    TG.check_with_spark(spark, tags_config)  # the shipped definitions compile
    bad_fn = tags_config.model_copy(deep=True)
    bad_fn.definitions[6].expr = "no_such_function(night_surge_day_share) > 0.5"
    with pytest.raises(TG.TagDefinitionError, match=f"tag '{bad_fn.definitions[6].code}': Spark cannot compile"):
        TG.check_with_spark(spark, bad_fn)
    bad_type = tags_config.model_copy(deep=True)
    ev = next(t for t in bad_type.definitions if t.code == "ev_owner")
    ev.expr = "CASE WHEN night_surge_day_share >= 0.5 THEN 'yes' END"
    ev.needs = []
    with pytest.raises(TG.TagDefinitionError, match="tag 'ev_owner': expression gives string, declared type boolean"):
        TG.check_with_spark(spark, bad_type)
    assert _job_ids(spark) == before


# ------------------------------------------------------------------ each tag's rule on a hand-made view


def _view_row(**overrides) -> dict:
    """An ordinary residential customer; override any feature view column."""
    row = dict(
        as_of=AS_OF, customer_id="C1", meter_id="M1", region="SA01", customer_type="residential",
        tariff_type="flat_rate", age_band="35-49", household_size=3, housing_type="apartment",
        contracted_capacity_kva=8.0, products_held=[], vip=False, do_not_contact=False, account_tenure_years=10.0, account_closed=False,
        segment_id=5, segment_label="evening_peak", days_observed=30, complete_days=30, mean_daily_kwh=9.0,
        kwh_pct_in_group=0.5, peak_share=0.6, flat_share=0.25, valley_share=0.15, load_factor=0.2,
        weekend_ratio=1.1, daily_kwh_cv=0.2, peak_to_mean=3.0, peak_demand_kw=3.0,
        peak_valley_rate=0.8, weekday_curve=None, weekend_curve=None, complete_nights=29,
        night_surge_kw=0.2, night_surge_day_share=0.0, night_block_hours=None, night_block_start_sd_h=None, near_zero_days=0, current_near_zero_run_days=0, longest_near_zero_run_days=0,
        weather_days=30, heating_kwh_per_degree=None, cooling_kwh_per_degree=0.4, weather_reason=None,
        recent_daily_kwh=9.0, history_daily_kwh=9.0, recent_vs_history=1.0, bills_12m=12, late_payments_12m=0,
        unpaid_bills=0, has_arrears=False, arrears_cny=0.0, max_days_late=0, mean_bill_cny=150.0,
        mean_bill_kwh=270.0, bill_kwh_cv=0.1, same_month_last_year_kwh=280.0, projected_month_kwh=270.0,
        bill_shock_ratio=270.0 / 280.0, payments_online=12, payments_offline=0, payments_auto_debit=0,
        interactions_12m=3, interactions_app=3, interactions_hotline=0, interactions_service_hall=0,
        complaints_12m=0, repairs_12m=0, topic_bill_tariff_12m=0, topic_solar_12m=0, topic_ev_12m=0, topic_app_12m=0,
        campaign_contacts_12m=0, campaigns_contacted_12m=0, campaign_responses_12m=0, responded_campaigns=[],
        days_since_last_contact=None, rate_days_used=60, rate_reason="already_cheapest",
        recommended_plan_kind=None, tou_annual_saving_cny=-120.0, neighbour_complete_days=30,
        neighbour_state="good", neighbour_vs_median_pct=-0.1,
    )
    unknown = set(overrides) - set(row)
    assert not unknown, unknown
    row.update(overrides)
    return row


CASES = [
    ("consumption_level", {"kwh_pct_in_group": 0.7}, "high"),
    ("consumption_level", {"kwh_pct_in_group": 0.5}, "medium"),
    ("consumption_level", {"kwh_pct_in_group": 0.29}, "low"),
    ("consumption_level", {"kwh_pct_in_group": None, "mean_daily_kwh": None}, None),
    ("usage_pattern", {"segment_label": "ev_night"}, "ev_night"),
    ("usage_pattern", {"segment_label": "peak_19h"}, "peak_19h"),  # open value set: generated labels pass
    ("usage_pattern", {"segment_label": None, "segment_id": None}, None),
    ("price_sensitivity", {}, "low"),
    ("price_sensitivity", {"tariff_type": "tou"}, "medium"),
    ("price_sensitivity", {"tariff_type": "tou", "valley_share": 0.45}, "high"),
    ("price_sensitivity", {"topic_bill_tariff_12m": 2, "responded_campaigns": ["tou_switch"]}, "high"),
    # Unknown stays unknown (a null index used to pick the LAST value, 'high').
    ("price_sensitivity", {"interactions_12m": None, "topic_bill_tariff_12m": None}, None),
    ("price_sensitivity", {"tariff_type": None}, None),
    ("price_sensitivity", {"campaign_responses_12m": None, "responded_campaigns": None}, None),
    ("ev_owner", {"night_surge_day_share": 0.6, "night_block_hours": 3.0, "night_block_start_sd_h": 0.8}, True),
    ("ev_owner", {"night_surge_day_share": 0.95, "night_block_hours": 3.0, "night_block_start_sd_h": 0.9}, True),
    ("ev_owner", {"night_surge_day_share": 0.6, "night_block_hours": 3.0, "night_block_start_sd_h": 0.1}, False),
    ("ev_owner", {"night_surge_day_share": 0.2, "night_block_hours": 3.0, "night_block_start_sd_h": 0.9}, False),
    ("ev_owner", {"night_surge_day_share": 1.0, "night_block_hours": 3.5, "night_block_start_sd_h": 0.0}, False),
    ("ev_owner", {"night_surge_day_share": 0.6, "night_block_hours": 6.0, "night_block_start_sd_h": 0.9}, False),
    ("ev_owner", {"night_surge_day_share": 0.9, "night_block_hours": 3.0, "complete_nights": 5}, None),
    ("vacancy", {"current_near_zero_run_days": 7}, True),
    ("vacancy", {"current_near_zero_run_days": 6, "longest_near_zero_run_days": 20}, False),
    ("weather_sensitive", {"cooling_kwh_per_degree": 1.2}, True),
    ("weather_sensitive", {"heating_kwh_per_degree": 1.5, "cooling_kwh_per_degree": 0.2}, True),
    ("weather_sensitive", {}, False),
    ("weather_sensitive", {"cooling_kwh_per_degree": None, "weather_reason": "no_weather"}, None),
    ("bill_shock_risk", {"projected_month_kwh": 450.0, "bill_shock_ratio": 450.0 / 280.0}, True),
    ("bill_shock_risk", {"projected_month_kwh": 380.0, "bill_shock_ratio": 380.0 / 280.0}, False),
    ("bill_shock_risk", {"projected_month_kwh": 60.0, "same_month_last_year_kwh": 30.0, "bill_shock_ratio": 2.0}, False),
    ("bill_shock_risk", {"bill_shock_ratio": None}, None),
    ("payment_channel_pref", {"payments_online": 2, "payments_offline": 9, "payments_auto_debit": 1}, "offline"),
    ("payment_channel_pref", {"payments_online": 6, "payments_offline": 0, "payments_auto_debit": 6}, "auto_debit"),
    ("payment_channel_pref", {"payments_online": 0}, None),
    ("credit_rating", {}, "good"),
    ("credit_rating", {"late_payments_12m": 3}, "medium"),
    ("credit_rating", {"late_payments_12m": 4}, "poor"),
    ("credit_rating", {"has_arrears": True, "unpaid_bills": 1}, "poor"),
    ("credit_rating", {"bills_12m": 0}, None),
    ("credit_rating", {"bills_12m": None, "late_payments_12m": None, "has_arrears": None}, None),
    ("interaction_channel_pref", {"interactions_app": 1, "interactions_hotline": 4}, "hotline"),
    ("interaction_channel_pref", {"interactions_app": 1, "interactions_hotline": 1, "interactions_service_hall": 2},
     "service_hall"),
    ("interaction_channel_pref", {"interactions_app": 0}, None),
    ("campaign_participation", {}, None),
    ("campaign_participation", {"campaigns_contacted_12m": 2}, "never"),
    ("campaign_participation", {"campaigns_contacted_12m": 3, "campaign_responses_12m": 1}, "occasional"),
    ("campaign_participation", {"campaigns_contacted_12m": 1, "campaign_responses_12m": 1}, "active"),
    ("campaign_participation", {"campaigns_contacted_12m": 4, "campaign_responses_12m": 2}, "active"),
    ("high_value_stable", {"kwh_pct_in_group": 0.85}, True),
    ("high_value_stable", {"kwh_pct_in_group": 0.85, "late_payments_12m": 1}, False),
    ("high_value_stable", {"kwh_pct_in_group": 0.85, "account_tenure_years": 1.0}, False),
    ("high_value_stable", {"kwh_pct_in_group": 0.5}, False),
    ("high_value_stable", {"kwh_pct_in_group": 0.85, "bills_12m": None, "late_payments_12m": None}, None),
    ("high_value_stable", {"kwh_pct_in_group": 0.5, "bills_12m": None, "late_payments_12m": None}, False),
    ("green_eco", {}, False),
    ("green_eco", {"products_held": ["green_power"]}, True),
    ("green_eco", {"topic_solar_12m": 1}, True),
    ("green_eco", {"interactions_12m": None, "topic_solar_12m": None}, None),
    ("smart_tech", {"products_held": ["smart_home"]}, True),
    ("smart_tech", {"peak_to_mean": 4.5}, True),
    ("smart_tech", {"peak_to_mean": 4.5, "interactions_app": 0, "interactions_hotline": 3}, False),
    ("churn_risk", {}, "low"),
    ("churn_risk", {"complaints_12m": 2}, "medium"),
    ("churn_risk", {"complaints_12m": 2, "recent_vs_history": 0.5}, "high"),
    ("churn_risk", {"recent_vs_history": 0.1, "current_near_zero_run_days": 10}, "low"),
    ("churn_risk", {"bills_12m": None, "late_payments_12m": None, "has_arrears": None}, None),
    ("churn_risk", {"interactions_12m": None, "complaints_12m": None}, None),
    # Fewer than 7 complete days: vacancy unknown, so a drop in use cannot be told from an empty home.
    ("churn_risk", {"complete_days": 5, "recent_vs_history": 0.5}, None),
    ("electrification_potential", {"housing_type": "house", "kwh_pct_in_group": 0.8}, "high"),
    ("electrification_potential", {"kwh_pct_in_group": 0.2, "contracted_capacity_kva": 5.0}, "low"),
    ("electrification_potential", {}, "medium"),
    ("electrification_potential", {"customer_type": "commercial", "housing_type": "shop"}, "low"),
    # A null housing type used to pick the LAST value, 'high', for every customer of a minimal archive.
    ("electrification_potential", {"housing_type": None}, None),
    ("electrification_potential", {"products_held": None}, None),
    ("age_band", {"age_band": "65+"}, "65+"),
    ("household_size", {"household_size": 5}, 5),
    ("housing_type", {"housing_type": "villa"}, "villa"),
    ("tou_saver", {"recommended_plan_kind": "tou", "rate_reason": None, "tou_annual_saving_cny": 300.0}, True),
    ("tou_saver", {}, False),  # already on the cheapest plan
    ("tou_saver", {"rate_reason": "saving_below_min", "tou_annual_saving_cny": 40.0}, False),
    ("tou_saver", {"rate_reason": "current_plan_unknown", "tou_annual_saving_cny": None}, None),
    ("tou_saver", {"rate_reason": "insufficient_data", "rate_days_used": 10}, None),
    # The advice stage has no row for the customer: unknown, never "not a saver".
    ("tou_saver", {"rate_days_used": None, "rate_reason": None}, None),
    ("tou_annual_saving_cny", {"tou_annual_saving_cny": 250.5}, 250.5),
    ("tou_annual_saving_cny", {"rate_days_used": None, "tou_annual_saving_cny": None}, None),
    ("neighbour_state", {"neighbour_state": "above"}, "above"),
    ("neighbour_state", {"neighbour_complete_days": None, "neighbour_state": None}, None),
]


@pytest.fixture(scope="module")
def tagged_cases(spark, tags_config):
    rows = [_view_row(customer_id=f"C{i}", **over) for i, (_, over, _) in enumerate(CASES)]
    view = spark.createDataFrame([Row(**r) for r in rows], FEATURE_VIEW.schema)
    out = TG.compile_tags(view, tags_config)
    return {r["customer_id"]: r for r in out.collect()}, out


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_tag_rule_on_a_hand_made_feature_row(tagged_cases, i):
    tag, overrides, expected = CASES[i]
    rows, _ = tagged_cases
    assert rows[f"C{i}"][tag] == expected, (tag, overrides)


def test_every_tag_has_at_least_one_rule_case(tags_config):
    assert {t.code for t in tags_config.definitions} <= {c[0] for c in CASES}


def test_all_tags_compile_into_one_select_over_the_view(tagged_cases, tags_config):
    _, out = tagged_cases
    assert out.columns == [*CUSTOMER_TAGS_CONTEXT, *[t.code for t in tags_config.definitions], "tag_catalog_version"]
    assert [(f.name, f.dataType) for f in out.schema] == [(f.name, f.dataType) for f in TG.customer_tags_schema(tags_config)]
    plan = out._jdf.queryExecution().optimizedPlan()
    # Above the scan of the view: projections only (no join, aggregate, window or second pass over the view).
    nodes = []
    node = plan
    while node.children().size() > 0:
        nodes.append(node.nodeName())
        node = node.children().head()
    assert nodes and set(nodes) == {"Project"}, nodes
    assert node.nodeName() in ("LocalRelation", "LogicalRDD"), node.nodeName()


def test_a_value_outside_the_allowed_ones_fails_the_job_naming_the_tag(spark, tags_config):
    broken = tags_config.model_copy(deep=True)
    next(t for t in broken.definitions if t.code == "credit_rating").expr = "'excellent'"
    view = spark.createDataFrame([Row(**_view_row())], FEATURE_VIEW.schema)
    with pytest.raises(Exception, match="tag 'credit_rating': value 'excellent' is not one of its values"):
        TG.compile_tags(view, broken).collect()


# ------------------------------------------------------------------ catalog


def test_catalog_version_changes_when_any_definition_changes(tags_config):
    base = TG.catalog_version(tags_config)
    assert TG.catalog_version(tags_config.model_copy(deep=True)) == base
    assert TG.catalog_version(load_settings("test").tags) == base  # deterministic across loads
    changed_expr = tags_config.model_copy(deep=True)
    changed_expr.definitions[3].expr = changed_expr.definitions[3].expr.replace("0.7", "0.75")
    changed_text = tags_config.model_copy(deep=True)
    changed_text.definitions[0].definition += " (archive)"
    changed_param = load_settings("test", ["tags.features.near_zero_daily_kwh=1.0"]).tags
    versions = {TG.catalog_version(c) for c in (changed_expr, changed_text, changed_param)}
    assert base not in versions and len(versions) == 3


def test_catalog_rows_carry_names_taxonomy_and_hashes(tags_config):
    rows = TG.catalog_rows(tags_config, AS_OF)
    assert len(rows) == len(tags_config.definitions)
    by_code = {r[3]: r for r in rows}
    credit = by_code["credit_rating"]
    order = [d.code for d in tags_config.definitions].index("credit_rating") + 1  # the config's order, from 1
    assert credit[:3] == (AS_OF, TG.catalog_version(tags_config), order)
    assert credit[4:12] == ("信用等级", "Credit rating", "payment_behaviour", "缴费行为特征", "Payment behaviour",
                            "credit", "信用等级", "Credit rating")
    assert credit[12:14] == ("string", ["good", "medium", "poor"])
    assert len({r[-1] for r in rows}) == len(rows)


def test_docs_tags_md_matches_the_definitions():
    committed = (ROOT / "docs" / "tags.md").read_text(encoding="utf-8")
    assert committed == render(), "docs/tags.md is stale: run `make docs`"


# ------------------------------------------------------------------ the feature view


def test_night_window_slots_join_the_evening_before_and_the_morning():
    assert FV.window_ranges("23:00-05:00") == [(1380, 1440), (0, 300)]
    assert FV.night_slot_range("20:00-08:00", 60) == (20, 8)
    assert FV.night_slot_range("20:00-08:00", 30) == (40, 16)


def _night_blocks_by_loop(night, *, width, kw, surge_kw, surge_ratio):
    """The block of one night, written out element by element (the rule of FV.night_blocks' docstring)."""
    hours = []
    for s in range(len(night) - width + 1):
        total = 0.0
        for x in night[s:s + width]:
            total = total + x
        hours.append(total * (kw / width))
    base = min(hours)
    threshold = base + max(surge_kw, surge_ratio * base)
    cur = best = best_end = 0
    for i, x in enumerate(night):
        cur = cur + 1 if x * kw >= threshold else 0
        if cur > best:
            best, best_end = cur, i
    return {"base_kw": base, "best_kw": max(hours), "block_slots": best, "block_start": best_end - best + 1}


def test_night_blocks_find_the_first_longest_surge_run_of_each_night():
    import random

    import pyarrow as pa

    rng = random.Random(7)
    flat = [0.1] * 48
    block = [0.1] * 10 + [1.2] * 12 + [0.1] * 26            # one 3-hour block from interval 10
    tie = [0.1] * 5 + [1.0] * 4 + [0.1] * 5 + [1.0] * 4 + [0.1] * 30  # two 1-hour runs: the first wins
    noisy = [round(rng.uniform(0.05, 1.5), 3) for _ in range(48)]
    nights = [flat, block, None, tie, noisy, [0.2] * 24]    # a null night, and a shorter one
    got = FV.night_blocks(pa.array(nights, pa.list_(pa.float64())), width=4, kw=4.0, surge_kw=1.5,
                          surge_ratio=0.5).to_pylist()
    want = [None if n is None else _night_blocks_by_loop(n, width=4, kw=4.0, surge_kw=1.5, surge_ratio=0.5)
            for n in nights]
    assert got == want  # to the bit: the same sums in the same order
    assert got[1]["block_slots"] == 12 and got[1]["block_start"] == 10
    assert got[3]["block_slots"] == 4 and got[3]["block_start"] == 5
    assert got[0]["block_slots"] == 0 and got[2] is None


def _daily_rows(meter: str, kwh_by_day: list[list[float]], completeness=None) -> list[tuple]:
    rows = []
    for d, slots in enumerate(kwh_by_day):
        date = AS_OF - dt.timedelta(days=len(kwh_by_day) - 1 - d)
        total = sum(slots)
        comp = 1.0 if completeness is None else completeness[d]
        rows.append((meter, date, slots, total, comp, 0.5, 0.3, 0.2, 0.4, max(slots), date.weekday() >= 5))
    return rows


def test_feature_view_load_billing_interaction_and_campaign_columns(spark, tags_config):
    params = tags_config.features
    base = [0.1] * 24  # hourly meter: 0.1 kW all day, 2.4 kWh/day
    ev_day = list(base)
    ev_day[0] = ev_day[1] = 3.6  # 00:00-02:00 charging: a 3.5 kW surge over a 0.1 kW base (nights 2 and 3 of 3)
    vacant = [0.02] * 24
    daily = (_daily_rows("M_EV", [ev_day, base, ev_day, ev_day])
             + _daily_rows("M_VAC", [base, vacant, vacant, vacant], completeness=[1.0, 1.0, 0.5, 1.0])
             + _daily_rows("M_FLAT", [base] * 4))
    daily_df = spark.createDataFrame(daily, "meter_id string, date date, slot_kwh array<double>, daily_kwh double, "
                                            "completeness double, peak_share double, flat_share double, "
                                            "valley_share double, load_factor double, max_kwh double, is_weekend boolean")
    archive = spark.createDataFrame([
        ("C_EV", "M_EV", "N", "P", "A", "SA01", "residential", "tou", "18-34", 2, "house", 10.0, "tou;ev_charger", None, True,
         dt.date(2010, 7, 5)),
        ("C_VAC", "M_VAC", "N", "P", "A", "SA01", "residential", "flat_rate", "65+", 1, "apartment", 4.0, None, True, None,
         dt.date(2025, 7, 5)),
        ("C_FLAT", "M_FLAT", "N", "P", "A", "SA01", "residential", "tiered", "35-49", 3, "apartment", 6.0, "", False, False,
         None),
    ], "customer_id string, meter_id string, customer_name string, phone string, address string, region string, "
       "customer_type string, tariff_type string, age_band string, household_size int, housing_type string, "
       "contracted_capacity_kva double, products_held string, do_not_contact boolean, vip boolean, account_open_date date")
    segments = spark.createDataFrame([("M_EV", 2, "ev_night"), ("M_FLAT", 6, "flat")],
                                     "meter_id string, segment_id int, segment_label string")
    d = dt.date
    billing = spark.createDataFrame([
        # C_EV: on time (app), late (alipay), unpaid past due; an old bill outside the 12 months.
        ("C_EV", d(2026, 4, 1), 300.0, 160.0, d(2026, 5, 15), d(2026, 5, 10), 160.0, "app"),
        ("C_EV", d(2026, 3, 1), 280.0, 150.0, d(2026, 4, 15), d(2026, 4, 30), 150.0, "alipay"),
        ("C_EV", d(2026, 5, 1), 320.0, 170.0, d(2026, 6, 15), None, 20.0, None),
        ("C_EV", d(2025, 7, 1), 250.0, 140.0, d(2025, 8, 15), d(2025, 8, 1), 140.0, "bank_counter"),
        ("C_EV", d(2024, 5, 1), 250.0, 140.0, d(2024, 6, 15), d(2024, 7, 1), 140.0, "bank_counter"),
        # C_FLAT: paid after the as-of date: still owed on the as-of date.
        ("C_FLAT", d(2026, 5, 1), 100.0, 56.0, d(2026, 6, 15), d(2026, 7, 20), 56.0, "auto_debit"),
    ], "customer_id string, bill_month date, bill_kwh double, bill_amount_cny double, due_date date, paid_date date, "
       "paid_amount_cny double, payment_channel string")
    utc = dt.timezone.utc
    interactions = spark.createDataFrame([
        ("I1", "C_EV", dt.datetime(2026, 6, 1, 4, tzinfo=utc), "app", "inquiry", "ev"),
        ("I2", "C_EV", dt.datetime(2026, 5, 1, 4, tzinfo=utc), "wechat", "complaint", "bill"),
        ("I3", "C_EV", dt.datetime(2025, 6, 1, 4, tzinfo=utc), "hotline", "inquiry", "solar"),  # > 365 days back
        ("I4", "C_VAC", dt.datetime(2026, 6, 1, 4, tzinfo=utc), "service_hall", "repair", "outage"),
    ], "interaction_id string, customer_id string, ts timestamp, channel string, interaction_type string, topic string")
    contacts = spark.createDataFrame([
        ("K1", "C_EV", "tou_switch", dt.datetime(2026, 1, 10, 2, tzinfo=utc), "app"),
        ("K2", "C_EV", "green_power", dt.datetime(2026, 3, 1, 2, tzinfo=utc), "sms"),
    ], "contact_id string, customer_id string, campaign_id string, ts timestamp, channel string")
    responses = spark.createDataFrame([
        ("tou_switch", d(2026, 1, 8), "C_EV", True, dt.datetime(2026, 1, 20, 2, tzinfo=utc)),
        ("green_power", d(2026, 2, 28), "C_EV", False, None),
        ("ev_charging", d(2026, 6, 30), "C_EV", True, dt.datetime(2026, 7, 9, 2, tzinfo=utc)),  # after the as-of
    ], "campaign_id string, cycle_as_of date, customer_id string, responded boolean, response_ts timestamp")

    view = FV.customer_feature_view(archive, segments, daily_df, billing, interactions, contacts, responses,
                                    as_of=AS_OF, interval_minutes=60, time_zone="Asia/Shanghai", params=params)
    assert [(f.name, f.dataType) for f in view.schema] == [(f.name, f.dataType) for f in FEATURE_VIEW.schema]
    rows = {r["customer_id"]: r.asDict() for r in view.collect()}
    ev, vac, flat = rows["C_EV"], rows["C_VAC"], rows["C_FLAT"]
    assert ev["products_held"] == ["tou", "ev_charger"] and flat["products_held"] == [] and vac["products_held"] == []
    assert (ev["vip"], vac["vip"], vac["do_not_contact"]) == (True, False, True)
    assert ev["do_not_contact"] is None  # unknown consent stays unknown (campaigns exclude it)
    assert ev["account_tenure_years"] == pytest.approx(16.0, abs=0.01) and flat["account_tenure_years"] is None
    assert (ev["segment_label"], vac["segment_label"]) == ("ev_night", None)
    # load
    # Nights: 20:00 of the day before to 08:00; the first day has no evening before it.
    assert (ev["complete_nights"], vac["complete_nights"]) == (3, 1)
    assert ev["night_surge_kw"] == pytest.approx(3.5) and ev["night_surge_day_share"] == pytest.approx(2 / 3)
    assert ev["night_block_hours"] == pytest.approx(2.0) and ev["night_block_start_sd_h"] == pytest.approx(0.0)
    assert flat["night_surge_day_share"] == 0.0 and flat["night_block_hours"] is None
    assert ev["peak_demand_kw"] == pytest.approx(3.6)
    assert (vac["complete_days"], vac["days_observed"]) == (3, 4)
    assert (vac["near_zero_days"], vac["current_near_zero_run_days"], vac["longest_near_zero_run_days"]) == (2, 2, 2)
    assert flat["mean_daily_kwh"] == pytest.approx(2.4) and flat["daily_kwh_cv"] == pytest.approx(0.0, abs=1e-9)
    assert ev["kwh_pct_in_group"] == 1.0 and vac["kwh_pct_in_group"] == 0.0  # ranked within SA01 residential
    # billing: due in (2025-07-05, 2026-07-05]
    assert (ev["bills_12m"], ev["late_payments_12m"], ev["unpaid_bills"], ev["has_arrears"]) == (4, 1, 1, True)
    assert ev["arrears_cny"] == pytest.approx(150.0) and ev["max_days_late"] == 20
    assert (ev["payments_online"], ev["payments_offline"], ev["payments_auto_debit"]) == (2, 1, 0)
    assert ev["same_month_last_year_kwh"] == 250.0
    assert (flat["has_arrears"], flat["unpaid_bills"], flat["payments_auto_debit"]) == (True, 1, 0)
    # No bill record at all: billing unknown, not "no arrears".
    assert (vac["bills_12m"], vac["has_arrears"], vac["arrears_cny"], vac["payments_online"]) == (None,) * 4
    # interactions (365 days) and campaigns
    assert (ev["interactions_12m"], ev["interactions_app"], ev["complaints_12m"], ev["topic_ev_12m"],
            ev["topic_bill_tariff_12m"], ev["topic_solar_12m"]) == (2, 2, 1, 1, 1, 0)
    assert (vac["interactions_service_hall"], vac["repairs_12m"]) == (1, 1)
    assert (ev["campaign_contacts_12m"], ev["campaigns_contacted_12m"], ev["campaign_responses_12m"]) == (2, 2, 1)
    assert ev["responded_campaigns"] == ["tou_switch"] and flat["responded_campaigns"] == []
    assert ev["days_since_last_contact"] == (AS_OF - d(2026, 3, 1)).days

    tagged = {r["customer_id"]: r for r in TG.compile_tags(view, load_settings("test").tags).collect()}
    assert tagged["C_EV"]["credit_rating"] == "poor" and tagged["C_EV"]["payment_channel_pref"] == "online"
    assert tagged["C_EV"]["price_sensitivity"] == "high"  # TOU tariff + took up the TOU offer


def _hourly_days(days: int, base_kw: float, blocks: dict[int, tuple[int, int, float]]) -> list[list[float]]:
    """``days`` hourly days at ``base_kw``; ``blocks``: night k -> (start hour on the evening clock, hours, kW),
    the night running from the evening of day k-1 (hour 20..23) into day k (hour 24.. = 00.. of day k)."""
    flat = [base_kw] * (24 * days)
    for k, (start, hours, kw) in blocks.items():
        for h in range(start, start + hours):
            i = (k - 1) * 24 + h
            if 0 <= i < len(flat):
                flat[i] += kw
    return [flat[d * 24:(d + 1) * 24] for d in range(days)]


def _archive_frame(spark, meters: list[str]):
    return spark.createDataFrame(
        [(f"C_{m}", m, None, None, None, "SA01", "residential", None, None, None, None, None, None, False, None, None)
         for m in meters],
        "customer_id string, meter_id string, customer_name string, phone string, address string, region string, "
        "customer_type string, tariff_type string, age_band string, household_size int, housing_type string, "
        "contracted_capacity_kva double, products_held string, do_not_contact boolean, vip boolean, "
        "account_open_date date")


DAILY_SCHEMA = ("meter_id string, date date, slot_kwh array<double>, daily_kwh double, completeness double, "
                "peak_share double, flat_share double, valley_share double, load_factor double, max_kwh double, "
                "is_weekend boolean")


def _view(spark, params, daily_rows, meters, absent=frozenset(FV.OPTIONAL_SOURCES)):
    empty = spark.createDataFrame([], "customer_id string")
    segments = spark.createDataFrame([], "meter_id string, segment_id int, segment_label string")
    return FV.customer_feature_view(_archive_frame(spark, meters), segments,
                                    spark.createDataFrame(daily_rows, DAILY_SCHEMA), empty, empty, empty, empty,
                                    as_of=AS_OF, interval_minutes=60, time_zone="Europe/London", params=params,
                                    absent=absent)


def test_ev_owner_follows_an_intermittent_charging_block_not_a_nightly_heating_block(spark, tags_config):
    days = 21
    # EV: a 3 h 7 kW block on about 60% of nights, starting when the car is plugged in (22:00 .. 01:00).
    starts = [22, 23, 24, 25, 22, 23, 24]
    ev_nights = {k: (starts[k % 7], 3, 7.0) for k in range(1, days) if k % 5 not in (1, 3)}
    # Electric / storage heating: a 4-5 h block from 23:00 across midnight, every night, on a timer.
    heat_nights = {k: (23, 4 + k % 2, 4.0) for k in range(1, days)}
    # The same heating block, but only on cold nights (season-driven, 60%): still on a fixed timer.
    cold_nights = {k: (23, 4, 4.0) for k in range(1, days) if k % 5 not in (1, 3)}
    rows = (_daily_rows("M_EV", _hourly_days(days, 0.3, ev_nights))
            + _daily_rows("M_HEAT", _hourly_days(days, 0.3, heat_nights))
            + _daily_rows("M_COLD", _hourly_days(days, 0.3, cold_nights))
            + _daily_rows("M_NONE", _hourly_days(days, 0.3, {})))
    view = _view(spark, tags_config.features, rows, ["M_EV", "M_HEAT", "M_COLD", "M_NONE"])
    f = {r["meter_id"]: r for r in view.collect()}
    assert f["M_EV"]["complete_nights"] == days - 1
    assert f["M_EV"]["night_surge_day_share"] == pytest.approx(len(ev_nights) / (days - 1))
    assert f["M_EV"]["night_block_hours"] == pytest.approx(3.0) and f["M_EV"]["night_block_start_sd_h"] > 0.5
    assert f["M_HEAT"]["night_surge_day_share"] == pytest.approx(1.0)
    assert f["M_HEAT"]["night_block_hours"] >= 4.0 and f["M_HEAT"]["night_block_start_sd_h"] == pytest.approx(0.0)
    tagged = TG.compile_tags(view, tags_config).select("meter_id", "ev_owner")
    # Heating on a timer is no EV, every night or only on cold ones: its block starts at the same time.
    expected = spark.createDataFrame([("M_EV", True), ("M_HEAT", False), ("M_COLD", False), ("M_NONE", False)],
                                     "meter_id string, ev_owner boolean")
    assert_df_equality(tagged, expected, ignore_row_order=True, ignore_nullable=True)


def test_absent_sources_give_unknown_features_and_tags_not_defaults(spark, tags_config):
    rows = _daily_rows("M1", _hourly_days(10, 0.4, {}))
    view = _view(spark, tags_config.features, rows, ["M1"],
                 absent={*FV.OPTIONAL_SOURCES, "bronze.customer_archive.products_held", "bronze.customer_archive.vip"})
    r = view.collect()[0].asDict()
    for c in ("bills_12m", "has_arrears", "arrears_cny", "late_payments_12m", "payments_online", "interactions_12m",
              "complaints_12m", "topic_bill_tariff_12m", "campaign_contacts_12m", "campaign_responses_12m",
              "responded_campaigns", "products_held", "vip"):
        assert r[c] is None, c
    assert r["do_not_contact"] is False and r["complete_days"] == 10
    tags = TG.compile_tags(view, tags_config).collect()[0].asDict()
    for code in ("price_sensitivity", "credit_rating", "payment_channel_pref", "interaction_channel_pref",
                 "campaign_participation", "churn_risk", "electrification_potential", "bill_shock_risk", "green_eco"):
        assert tags[code] is None, code
    assert tags["vacancy"] is False and tags["consumption_level"] is not None  # the load is known
    # Three-valued: not in the top 20% of its group is known to rule out high-value-stable, credit unknown or not.
    assert tags["consumption_level"] == "low" and tags["high_value_stable"] is False
    with pytest.raises(ValueError, match="unknown absent source"):
        _view(spark, tags_config.features, rows, ["M1"], absent={"bronze.billing"})


def test_the_stage_finds_empty_tables_and_archive_columns_without_any_value(spark):
    from gridpersona.stages.tags import absent_sources

    one = spark.createDataFrame([("C1",)], "customer_id string")
    none = spark.createDataFrame([], "customer_id string")
    archive = spark.createDataFrame([("C1", None, True), ("C2", None, None)],
                                    "customer_id string, products_held string, vip boolean")
    got = absent_sources({"bronze.billing_payment": none, "bronze.service_interaction": one}, archive)
    assert got == {"bronze.billing_payment", "bronze.customer_archive.products_held"}


# ------------------------------------------------------------------ group portraits


def test_segment_tag_profile_shares_and_lift(spark):
    rows = [("M1", 1, "night", "high", True), ("M2", 1, "night", "high", False), ("M3", 2, "flat", "low", False),
            ("M4", 2, "flat", None, False), ("M5", None, None, "low", None)]
    tags = spark.createDataFrame(rows, "meter_id string, segment_id int, segment_label string, "
                                       "consumption_level string, ev_owner boolean")
    out = TG.segment_tag_profile(tags, [("consumption_level", "string"), ("ev_owner", "boolean")], as_of=AS_OF)
    got = {(r["segment_id"], r["tag"], r["value"]): r for r in out.collect()}
    assert got[(1, "consumption_level", "high")]["share"] == 1.0
    assert got[(1, "consumption_level", "high")]["population_share"] == pytest.approx(0.4)
    assert got[(1, "consumption_level", "high")]["lift"] == pytest.approx(2.5)
    assert got[(-1, "consumption_level", None)]["customers"] == 1
    assert got[(-2, "ev_owner", None)]["segment_label"] == "unsegmented"
    assert got[(1, "ev_owner", "true")]["share"] == 0.5
    for seg in (-2, -1, 1, 2):
        for tag in ("consumption_level", "ev_owner"):
            assert sum(r["share"] for k, r in got.items() if k[:2] == (seg, tag)) == pytest.approx(1.0)


def test_consumption_price_quadrant_names_the_corners(spark):
    rows = [("M1", "residential", "high", "high", True, "tou"), ("M2", "residential", "high", "high", False, "flat_rate"),
            ("M3", "residential", "low", "low", False, "tou"), ("M4", "residential", "medium", "high", False, None),
            ("M5", "commercial", "high", "low", False, "flat_rate")]
    tags = spark.createDataFrame(rows, "meter_id string, customer_type string, consumption_level string, "
                                       "price_sensitivity string, ev_owner boolean, tariff_type string")
    kwh = spark.createDataFrame([("M1", 20.0), ("M2", 10.0)], "meter_id string, daily_kwh double")
    got = {(r["customer_type"], r["consumption_level"], r["price_sensitivity"]): r
           for r in TG.consumption_price_quadrant(tags, kwh, as_of=AS_OF).collect()}
    hh = got[("residential", "high", "high")]
    assert (hh["quadrant"], hh["quadrant_zh"], hh["customers"], hh["share"]) == (
        "high_use_high_sensitivity", "高用电量—高敏感度", 2, 0.5)
    assert hh["mean_daily_kwh"] == 15.0 and hh["ev_owners"] == 1 and hh["tou_tariff"] == 1
    assert got[("residential", "low", "low")]["quadrant"] == "low_use_low_sensitivity"
    assert got[("residential", "medium", "high")]["quadrant"] is None
    assert got[("commercial", "high", "low")]["share"] == 1.0


# ------------------------------------------------------------------ the generator plants bill shocks


def test_generator_plants_bill_shocks_visible_in_the_readings(make_settings, spark):
    from collections import defaultdict

    from gridpersona.synthetic.generate import generate_lake
    from gridpersona.lake import Lake

    settings = make_settings("generate.faults.unknown_meter_share=0", "generate.bill_shock_share=0.2",
                             "generate.faults.short_gap_meter_share=0", "generate.faults.long_gap_meter_share=0")
    lake = Lake(settings, spark)
    generate_lake(settings, lake, meters=60, days=28, start="2026-06-01", interval_minutes=60)
    truth = {r["meter_id"]: r for r in lake.read_arrow("truth.meters").to_pylist()}
    shocked = {m for m, r in truth.items() if r["bill_shock"]}
    assert shocked and all(truth[m]["archetype"] not in ("vacant", "commercial_day") for m in shocked)
    ami = lake.read_arrow("bronze.ami_interval", columns=["meter_id", "date", "kwh"]).to_pylist()
    first_week, last_week = defaultdict(float), defaultdict(float)
    for r in ami:
        if r["kwh"] is None:
            continue
        day = (r["date"] - dt.date(2026, 6, 1)).days
        if day < 7:
            first_week[r["meter_id"]] += r["kwh"]
        elif day >= 21:
            last_week[r["meter_id"]] += r["kwh"]
    growth = {m: last_week[m] / first_week[m] for m in truth if truth[m]["archetype"] != "vacant"}
    # The last week of a shocked meter is 1.8-2.4x its load; others change with season and noise only.
    assert min(growth[m] for m in shocked) > 1.6
    others = sorted(g for m, g in growth.items() if m not in shocked)
    assert others[len(others) // 2] < 1.25
    short = make_settings("generate.bill_shock_share=0.5")
    generate_lake(short, Lake(short, spark), meters=20, days=14, start="2026-06-01", interval_minutes=60)
    assert not any(r["bill_shock"] for r in Lake(short, spark).read_arrow("truth.meters").to_pylist())
