"""Association rules between tag values (transform.tag_rules, stage profile -> gold.tag_association_rules)."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from gridpersona.transform import tag_rules as TR

SCHEMA = "customer_id string, ev_owner boolean, price_sensitivity string, valley_share double"
CUTS = {"valley_share": (0.3, 0.5)}


def _frame(spark):
    """20 customers. EV owners C00-C04, four of them with a high valley share (>= 0.5); C08, C09 high too;
    ev_owner unknown for C05-C07, valley share unknown for C10."""
    rows = []
    for i in range(20):
        ev = True if i < 5 else (None if i < 8 else False)
        valley = 0.6 if i in (0, 1, 2, 3, 8, 9) else (None if i == 10 else (0.35 if i == 4 else 0.1))
        sens = "high" if i < 3 else ("low" if i >= 15 else None)
        rows.append((f"C{i:02d}", ev, sens, valley))
    return spark.createDataFrame(rows, SCHEMA)


TAGS = [("ev_owner", "boolean"), ("price_sensitivity", "string")]


def _params(**kw):
    base = dict(min_support=0.1, min_confidence=0.5, min_lift=1.2, max_antecedent_items=2, max_rules=100)
    return TR.RuleParams(**{**base, **kw})


def _rules(spark, **kw):
    baskets = TR.basket_items(_frame(spark), TAGS, CUTS)
    rules, _ = TR.mine_rules(baskets, 20, _params(**kw))
    return {(tuple(r["antecedent"]), r["consequent"][0]): r.asDict() for r in rules.orderBy("rule_rank").collect()}


def test_unknown_gives_no_item_and_false_only_when_asked(spark):
    items = {r["customer_id"]: r["items"] for r in TR.basket_items(_frame(spark), TAGS, CUTS).collect()}
    assert items["C00"] == ["ev_owner", "price_sensitivity=high", "valley_share=high"]
    assert items["C04"] == ["ev_owner", "valley_share=mid"]
    assert items["C05"] == ["valley_share=low"]  # ev_owner unknown, price sensitivity unknown: no item
    assert items["C10"] == []  # nothing known: an empty basket, never null
    assert items["C11"] == ["valley_share=low"]  # a false flag gives no item by default
    with_false = {r["customer_id"]: r["items"]
                  for r in TR.basket_items(_frame(spark), TAGS, CUTS, false_items=True).collect()}
    assert with_false["C11"] == ["ev_owner=false", "valley_share=low"]
    assert with_false["C05"] == ["valley_share=low"]  # unknown stays no item


def test_planted_rule_has_the_support_confidence_and_lift_counted_by_hand(spark):
    rules = _rules(spark)
    r = rules[(("ev_owner",), "valley_share=high")]
    # 20 baskets; ev_owner in 5; valley_share=high in 6 (C00-C03, C08, C09); both in 4.
    assert (r["n_customers"], r["antecedent_count"], r["consequent_count"], r["rule_count"]) == (20, 5, 6, 4)
    assert r["support"] == pytest.approx(4 / 20)
    assert r["confidence"] == pytest.approx(4 / 5)
    assert r["consequent_support"] == pytest.approx(6 / 20)
    assert r["lift"] == pytest.approx((4 / 5) / (6 / 20))
    # ev_owner + valley_share=high (C00-C03) -> price_sensitivity=high (C00-C02): confidence 3/4, lift
    # 0.75 / (3/20) = 5, the strongest rule.
    top = min(rules.values(), key=lambda x: x["rule_rank"])
    assert (top["antecedent"], top["consequent"]) == (["ev_owner", "valley_share=high"], ["price_sensitivity=high"])
    assert top["rule_rank"] == 1 and top["lift"] == pytest.approx(5.0)
    assert sorted(x["rule_rank"] for x in rules.values()) == list(range(1, len(rules) + 1))


def test_thresholds_are_respected(spark):
    planted = (("ev_owner",), "valley_share=high")  # support 0.2, confidence 0.8, lift 2.67
    kw = dict(min_support=0.15, min_confidence=0.6, min_lift=1.5, min_improvement=0.05)
    params, rules = _params(**kw), _rules(spark, **kw)
    assert planted in rules
    assert all(r["support"] >= params.min_support and r["confidence"] >= params.min_confidence
               and r["lift"] >= params.min_lift for r in rules.values())
    # A longer antecedent must improve on the shorter rules: ev_owner + valley_share=high -> price high has
    # confidence 3/4 against 3/5 (ev_owner alone) and 3/6: kept; price high + valley_share=high -> ev_owner has
    # confidence 1, no better than price high -> ev_owner: a restatement, dropped.
    assert (("ev_owner", "valley_share=high"), "price_sensitivity=high") in rules
    assert (("price_sensitivity=high", "valley_share=high"), "ev_owner") not in rules
    assert (("price_sensitivity=high",), "ev_owner") in rules
    # Lift above the planted rule's, the two strongest kept: lift 5 and 4 (C00-C02 are high price sensitivity).
    assert list(_rules(spark, min_lift=2.7, max_rules=2)) == [
        (("ev_owner", "valley_share=high"), "price_sensitivity=high"), (("price_sensitivity=high",), "ev_owner")]
    rules = _rules(spark, min_confidence=0.85, max_antecedent_items=1)
    assert planted not in rules and rules
    assert all(r["confidence"] >= 0.85 and len(r["antecedent"]) == 1 for r in rules.values())
    # Support 0.25 leaves one rule: the five low-sensitivity customers all have a low valley share.
    assert list(_rules(spark, min_support=0.25)) == [(("price_sensitivity=low",), "valley_share=low")]


def test_tertile_bands_split_the_known_values_in_thirds(spark):
    frame = spark.createDataFrame([(f"C{i}", float(i)) for i in range(1, 10)] + [("CX", None)],
                                  "customer_id string, x double")
    stats = TR.band_stats(frame, ["x"]).first()
    assert stats["x__known"] == 9
    c1, c2 = stats["x__tertiles"]
    items = {r["customer_id"]: r["items"] for r in TR.basket_items(frame, [], {"x": (c1, c2)}).collect()}
    assert [items[f"C{i}"] for i in range(1, 10)] == [["x=low"]] * 3 + [["x=mid"]] * 3 + [["x=high"]] * 3
    assert items["CX"] == []
    assert TR.describe_bands({"x": (c1, c2)}) == f"x: low < {c1:.4g} <= mid < {c2:.4g} <= high"


def test_the_synthetic_lake_rules_hold_their_invariants_and_the_planted_association(synthetic_lake):
    lake, as_of = synthetic_lake.lake, synthetic_lake.as_of
    cfg = synthetic_lake.settings.association_rules
    rules = [r for r in lake.read_arrow("gold.tag_association_rules").to_pylist() if r["as_of"] == as_of]
    tags = lake.read("gold.customer_tags").filter(F.col("as_of") == F.lit(as_of))
    n, ev_owners = tags.agg(F.count(F.lit(1)), F.count(F.when(F.col("ev_owner"), 1))).first()
    assert rules, "no rule on the synthetic lake"
    assert sorted(r["rule_rank"] for r in rules) == list(range(1, len(rules) + 1))
    by_rank = sorted(rules, key=lambda r: r["rule_rank"])
    assert all(a["lift"] >= b["lift"] for a, b in zip(by_rank, by_rank[1:]))
    for r in rules:
        assert r["n_customers"] == n
        assert r["support"] == pytest.approx(r["rule_count"] / n)
        assert r["confidence"] == pytest.approx(r["rule_count"] / r["antecedent_count"])
        assert r["consequent_support"] == pytest.approx(r["consequent_count"] / n)
        assert r["lift"] == pytest.approx(r["confidence"] / r["consequent_support"])
        assert r["rule_count"] <= min(r["antecedent_count"], r["consequent_count"])
        assert r["support"] >= cfg.min_support and r["confidence"] >= cfg.min_confidence and r["lift"] >= cfg.min_lift
        assert 1 <= len(r["antecedent"]) <= cfg.max_antecedent_items and len(r["consequent"]) == 1
        assert not set(r["consequent"]) & set(r["antecedent"])
        # Unknown is never an item; a false flag is no item by default.
        assert not [i for i in r["antecedent"] + r["consequent"] if i.endswith(("=null", "=None", "=false"))]
    ev = [r for r in rules if r["antecedent"] == ["ev_owner"]]
    assert ev and all(r["antecedent_count"] == ev_owners for r in ev)  # counted from gold.customer_tags itself
    planted = [r for r in ev if r["consequent"] == ["valley_share=high"]]
    assert planted and planted[0]["lift"] >= 1.5
