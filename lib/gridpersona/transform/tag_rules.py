"""Association rules between tag values (seed 000 §2.2.3, seed 003 §4.1): baskets of tag items -> FPGrowth.

Each customer of an as-of is one basket. Its items are the customer's *known* tag values:

- a boolean tag gives the item ``code`` when true (``code=false`` when false only if asked: "not X" is the
  common case of most flags and floods the itemsets with rules of lift about 1);
- a string tag gives ``code=value``;
- a banded numeric figure gives ``feature=low|mid|high`` (cut points configured, or the tertiles of the
  as-of's customers with a known value).

An unknown (null) value gives no item: unknown is not a value to mine. A customer with nothing known is an
empty basket, so every support is a share of all the as-of's customers.

:func:`mine_rules` fits MLlib ``FPGrowth`` and returns the rules with their counts; support, confidence and
lift are recomputed from the integer counts so that ``lift = confidence / consequent_support`` holds exactly.
Pure transformations: no I/O, no session, no global config (the stage collects the one-row aggregates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

BAND_NAMES = ("low", "mid", "high")


@dataclass(frozen=True)
class RuleParams:
    """Thresholds of :func:`mine_rules` (``association_rules`` of the config, as plain values)."""

    min_support: float
    min_confidence: float
    min_lift: float
    max_antecedent_items: int
    max_rules: int
    min_improvement: float = 0.0
    partitions: int = 1


def band_stats(frame: DataFrame, features: Sequence[str]) -> DataFrame:
    """One row: per feature, ``<feature>__known`` (customers with a non-null value) and ``<feature>__tertiles``
    (the exact 1/3 and 2/3 percentiles of the known values; null when none is known). ``frame``: one row per
    customer with the (numeric) feature columns."""
    aggs = []
    for f in features:
        aggs.append(F.count(F.col(f)).alias(f"{f}__known"))
        aggs.append(F.expr(f"percentile(CAST(`{f}` AS DOUBLE), array(1.0D / 3, 2.0D / 3))").alias(f"{f}__tertiles"))
    return frame.agg(*aggs)


def describe_bands(cuts: Mapping[str, tuple[float, float]]) -> str | None:
    """``{feature: (c1, c2)}`` -> ``"valley_share: low < 0.21 <= mid < 0.34 <= high; ..."`` (None if empty)."""
    if not cuts:
        return None
    return "; ".join(f"{f}: low < {c1:.4g} <= mid < {c2:.4g} <= high" for f, (c1, c2) in cuts.items())


def _boolean_item(code: str, false_items: bool) -> Column:
    col = F.col(f"`{code}`")
    item = F.when(col, F.lit(code))
    return item.when(~col, F.lit(f"{code}=false")) if false_items else item


def _string_item(code: str) -> Column:
    return F.when(F.col(f"`{code}`").isNotNull(), F.concat(F.lit(f"{code}="), F.col(f"`{code}`").cast("string")))


def _band_item(feature: str, c1: float, c2: float) -> Column:
    # Null stays null (no item): a CASE without ELSE.
    x = F.col(f"`{feature}`").cast("double")
    return (F.when(x < F.lit(c1), F.lit(f"{feature}=low"))
            .when(x < F.lit(c2), F.lit(f"{feature}=mid"))
            .when(x >= F.lit(c2), F.lit(f"{feature}=high")))


def basket_items(frame: DataFrame, tags: Sequence[tuple[str, str]], bands: Mapping[str, tuple[float, float]], *,
                 false_items: bool = False) -> DataFrame:
    """One row per customer of ``frame``: ``customer_id``, ``items`` (sorted, distinct, never null; empty when
    nothing is known).

    ``tags``: (column, type) with type ``boolean`` or ``string``; ``bands``: feature -> (c1, c2) cut points,
    low < c1 <= mid < c2 <= high. ``frame`` holds ``customer_id`` and those columns.
    """
    items = []
    for code, dtype in tags:
        if dtype == "boolean":
            items.append(_boolean_item(code, false_items))
        elif dtype == "string":
            items.append(_string_item(code))
        else:
            raise ValueError(f"association rules: tag '{code}' is {dtype}; only boolean and string tags give items "
                             f"(band a numeric one in association_rules.bands)")
    items += [_band_item(f, c1, c2) for f, (c1, c2) in bands.items()]
    known = F.filter(F.array(*items), lambda x: x.isNotNull()) if items else F.array().cast("array<string>")
    return frame.select("customer_id", F.array_sort(F.array_distinct(known)).alias("items"))


def mine_rules(baskets: DataFrame, n_customers: int, params: RuleParams) -> tuple[DataFrame, DataFrame]:
    """(rules, frequent itemsets) of ``baskets`` (:func:`basket_items`; ``n_customers`` = its row count).

    Rules: ``antecedent`` (sorted), ``consequent`` (one item), ``support``, ``confidence``, ``lift``,
    ``consequent_support``, ``n_customers``, ``antecedent_count``, ``consequent_count``, ``rule_count`` and
    ``rule_rank`` (1 = highest lift; ties by confidence, support, then the items' text), keeping the rules with
    support >= ``min_support``, confidence >= ``min_confidence``, lift >= ``min_lift`` and at most
    ``max_antecedent_items`` antecedent items, the ``max_rules`` strongest. A rule with several antecedent items
    is kept only when its confidence beats, by ``min_improvement``, every rule with one antecedent item fewer
    and the same consequent (else it restates a shorter rule: ``credit_rating=good, ev_owner -> X`` when
    ``ev_owner -> X`` holds as well). Frequent itemsets: FPGrowth's ``items``, ``freq``.
    """
    from pyspark.ml.fpm import FPGrowth

    model = FPGrowth(itemsCol="items", minSupport=params.min_support, minConfidence=params.min_confidence,
                     numPartitions=params.partitions).fit(baskets.select("items"))
    n = F.lit(int(n_customers)).cast("long")
    # FPGrowth reports ratios of integer counts over the same n: the counts come back exactly by rounding.
    raw = model.associationRules.select(
        F.array_sort("antecedent").alias("antecedent"), "consequent",
        F.round(F.col("support") * n).cast("long").alias("rule_count"),
        F.round(F.col("support") * n / F.col("confidence")).cast("long").alias("antecedent_count"),
        F.round(F.col("confidence") * n / F.col("lift")).cast("long").alias("consequent_count"),
    )
    exact = raw.select(
        "antecedent", "consequent",
        (F.col("rule_count") / n).alias("support"),
        (F.col("rule_count") / F.col("antecedent_count")).alias("confidence"),
        (F.col("consequent_count") / n).alias("consequent_support"),
        n.alias("n_customers"), "antecedent_count", "consequent_count", "rule_count",
    ).withColumn("lift", F.col("confidence") / F.col("consequent_support"))
    kept = exact.filter((F.col("support") >= F.lit(params.min_support))
                        & (F.col("confidence") >= F.lit(params.min_confidence))
                        & (F.col("lift") >= F.lit(params.min_lift))
                        & (F.size("antecedent") <= F.lit(params.max_antecedent_items)))
    kept = _productive(kept, model.freqItemsets, params.min_improvement)
    # Rules are few (bounded by the thresholds): one ordered window over them is cheap.
    order = Window.orderBy(F.col("lift").desc(), F.col("confidence").desc(), F.col("support").desc(),
                           F.concat_ws(",", "antecedent"), F.concat_ws(",", "consequent"))
    ranked = kept.withColumn("rule_rank", F.row_number().over(order)).filter(F.col("rule_rank") <= params.max_rules)
    return ranked, model.freqItemsets


def _productive(rules: DataFrame, itemsets: DataFrame, min_improvement: float) -> DataFrame:
    """``rules`` without the multi-item-antecedent rules whose confidence is below (confidence of a rule with
    one antecedent item fewer, same consequent) + ``min_improvement``. The shorter rules' confidences come
    from the frequent itemsets (every subset of a frequent itemset is frequent), whatever their thresholds."""
    freq = itemsets.select(F.array_sort("items").alias("key"), F.col("freq").cast("long").alias("freq"))
    multi = rules.filter(F.size("antecedent") >= 2).select("antecedent", "consequent")
    shorter = multi.select(
        "antecedent", "consequent",
        F.explode(F.transform("antecedent", lambda x: F.array_remove(F.col("antecedent"), x))).alias("sub"))
    sub_conf = (shorter
                .join(freq.select(F.col("key").alias("sub_key"), F.col("freq").alias("sub_freq")),
                      F.array_sort("sub") == F.col("sub_key"))
                .join(freq.select(F.col("key").alias("both_key"), F.col("freq").alias("both_freq")),
                      F.array_sort(F.concat("sub", "consequent")) == F.col("both_key"))
                .groupBy("antecedent", "consequent")
                .agg(F.max(F.col("both_freq") / F.col("sub_freq")).alias("_shorter_confidence")))
    return (rules.join(sub_conf, ["antecedent", "consequent"], "left")
            .filter(F.col("_shorter_confidence").isNull()
                    | (F.col("confidence") >= F.col("_shorter_confidence") + F.lit(float(min_improvement))))
            .drop("_shorter_confidence"))
