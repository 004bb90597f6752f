"""Campaigns on a synthetic lake: a stand-in gold.customer_tags, and planted vs measured uplift.

Until the tag engine (stage ``tags``) is in the pipeline, this gives the
campaign stages a ``gold.customer_tags`` partition with every contract column for
the configured tags (:func:`gridpersona.contracts.tags.customer_tags_spec`), so campaigns
and evaluation run end to end on a generated lake. It is a test double, not a
tag engine: planted tags (EV owner, vacancy, credit rating, channel
preferences, usage pattern = archetype) come from ``truth.meters``, archive
facts from ``bronze.customer_archive``, arrears from ``bronze.billing_payment``,
and the remaining tags from simple documented rules below; a configured tag
without a rule here is null (unknown). ``tag_catalog_version`` is ``stand-in``.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from gridpersona.stages.inputs import read_bronze, read_bronze_or_empty
from gridpersona.contracts.bronze import BILLING_PAYMENT, CAMPAIGN_RESPONSE, CUSTOMER_ARCHIVE, SERVICE_INTERACTION
from gridpersona.contracts.segments import CUSTOMER_SEGMENTS
from gridpersona.contracts.tags import CUSTOMER_TAGS, customer_tags_spec
from gridpersona.contracts.truth import ARCHETYPES, TRUTH_METERS

STAND_IN_VERSION = "stand-in"


def _level(rank):
    return F.when(rank >= 0.7, "high").when(rank < 0.3, "low").otherwise("medium")


def stand_in_customer_tags(lake, as_of: dt.date) -> DataFrame:
    """One row per archive customer for ``as_of`` with the gold.customer_tags contract columns (the lake's
    configured tags)."""
    archive = read_bronze(lake, CUSTOMER_ARCHIVE.name)
    truth = lake.read(TRUTH_METERS.name).filter(F.col("in_archive")).select(
        "customer_id", "archetype", "mean_daily_kwh", "ev_owner", "vacant", "credit_rating", "payment_channel_pref",
        "interaction_channel_pref")
    bills = read_bronze_or_empty(lake, BILLING_PAYMENT.name).filter(F.col("bill_month") <= F.lit(as_of))
    # Arrears: a bill past due on the as-of and not paid in full by then.
    unpaid = (F.col("due_date") < F.lit(as_of)) & (F.col("paid_date").isNull() | (F.col("paid_date") > F.lit(as_of)))
    last_month = Window.partitionBy("customer_id").orderBy(F.col("bill_month").desc())
    billing = (bills.withColumn("k", F.row_number().over(last_month))
               .groupBy("customer_id").agg(
                   F.max(unpaid.cast("int")).cast("boolean").alias("has_arrears"),
                   F.max(F.when(F.col("k") == 1, F.col("bill_amount_cny"))).alias("last_bill"),
                   F.avg(F.when(F.col("k") > 1, F.col("bill_amount_cny"))).alias("earlier_bills")))
    interactions = read_bronze_or_empty(lake, SERVICE_INTERACTION.name).groupBy("customer_id").agg(
        F.sum((F.col("interaction_type") == "complaint").cast("int")).alias("complaints"),
        F.max((F.col("topic") == "solar").cast("int")).cast("boolean").alias("asked_solar"))
    past = read_bronze_or_empty(lake, CAMPAIGN_RESPONSE.name).filter(F.col("cycle_as_of") < F.lit(as_of)) \
        .groupBy("customer_id").agg(F.sum(F.col("responded").cast("int")).alias("past_responses"))
    archetype_id = F.array_position(F.array(*[F.lit(a) for a in ARCHETYPES]), F.col("archetype")).cast("int") - 1
    by_region_type = Window.partitionBy("region", "customer_type").orderBy("mean_daily_kwh")
    df = (archive.join(truth, "customer_id").join(billing, "customer_id", "left")
          .join(interactions, "customer_id", "left").join(past, "customer_id", "left")
          .withColumn("consumption_level", _level(F.percent_rank().over(by_region_type)))
          .withColumn("bill_rise_rank", F.percent_rank().over(Window.orderBy(
              F.coalesce(F.col("last_bill") / F.col("earlier_bills"), F.lit(0.0)), "customer_id"))))
    if lake.exists(CUSTOMER_SEGMENTS.name):
        segs = lake.read(CUSTOMER_SEGMENTS.name).filter(F.col("as_of") == F.lit(as_of)) \
            .select("customer_id", "segment_id", "segment_label")
        df = df.join(segs, "customer_id", "left")
    else:
        df = df.withColumn("segment_id", archetype_id).withColumn("segment_label", F.col("archetype"))
    high = F.col("consumption_level") == "high"
    years_open = F.datediff(F.lit(as_of), F.col("account_open_date")) / 365.25
    cols = {
        "as_of": F.lit(as_of).cast("date"),
        "vip": F.col("vip"),
        "products_held": F.coalesce(F.split(F.col("products_held"), ";"), F.array().cast("array<string>")),
        "has_arrears": F.coalesce(F.col("has_arrears"), F.lit(False)),
        "usage_pattern": F.col("segment_label"),
        "price_sensitivity": F.when((F.col("tariff_type") == "tiered") | (F.col("credit_rating") == "poor"), "high")
        .when(F.col("vip") | (F.col("customer_type") == "commercial"), "low").otherwise("medium"),
        "campaign_participation": F.when(F.coalesce(F.col("past_responses"), F.lit(0)) >= 2, "active")
        .when(F.col("past_responses") == 1, "occasional").otherwise("never"),
        "ev_owner": F.col("ev_owner"),
        "vacancy": F.col("vacant"),
        # The decile whose last bill rose most against their own earlier bills.
        "bill_shock_risk": F.coalesce(F.col("bill_rise_rank") >= 0.9, F.lit(False)),
        "high_value_stable": high & (F.col("credit_rating") == "good") & (years_open >= 5),
        "green_eco": F.coalesce(F.col("asked_solar"), F.lit(False)) | (F.col("housing_type") == "villa"),
        "smart_tech": (F.col("interaction_channel_pref") == "app") & F.col("age_band").isin("18-34", "35-49"),
        "churn_risk": F.when((F.col("credit_rating") == "poor") | (F.coalesce(F.col("complaints"), F.lit(0)) >= 2),
                             "high").when(F.col("credit_rating") == "medium", "medium").otherwise("low"),
        "electrification_potential": F.when(F.col("ev_owner") | (F.col("housing_type").isin("house", "villa") & high),
                                            "high").when(F.col("consumption_level") == "medium", "medium")
        .otherwise("low"),
        "tag_catalog_version": F.lit(STAND_IN_VERSION),
    }
    spec = customer_tags_spec(lake.settings.tags.definitions)
    return df.select(*[(cols[c.name] if c.name in cols else F.col(c.name) if c.name in df.columns else F.lit(None))
                       .cast(c.dtype).alias(c.name) for c in spec.columns])


def write_stand_in_tags(lake, as_of: dt.date) -> int:
    """Replace gold.customer_tags' ``as_of`` partition with :func:`stand_in_customer_tags`; rows written."""
    return lake.replace(stand_in_customer_tags(lake, as_of), CUSTOMER_TAGS, where={"as_of": as_of}).rows


def uplift_truth_check(lake, as_of: dt.date) -> list[dict]:
    """Planted (truth.campaigns) vs measured (gold.campaign_evaluation) uplift per campaign of cycle ``as_of``.

    Each dict: campaign_id, base_rate, true_uplift, n_treatment, n_control,
    uplift, uplift_ci_low, uplift_ci_high, confidence, covered (planted inside
    the campaign's own interval), uplift_family_low, uplift_family_high,
    family_size, family_confidence, covered_family (planted inside the
    simultaneous interval), holdout_share (configured) and control_share
    (measured among the cycle's targets). ``covered*`` is None when the
    campaign has no interval.
    """
    truth = {r["campaign_id"]: r for r in lake.read_arrow("truth.campaigns").to_pylist() if r["cycle_as_of"] == as_of}
    evaluation = {r["campaign_id"]: r for r in lake.read("gold.campaign_evaluation")
                  .filter((F.col("as_of") == F.lit(as_of)) & (F.col("level") == "campaign")).collect()}
    measured = ("n_treatment", "n_control", "uplift", "uplift_ci_low", "uplift_ci_high", "confidence",
                "uplift_family_low", "uplift_family_high", "family_size", "family_confidence")
    rows = []
    for cid in sorted(truth):
        t, e = truth[cid], evaluation.get(cid)
        row = dict(campaign_id=cid, base_rate=t["base_rate"], true_uplift=t["true_uplift"],
                   holdout_share=t["holdout_share"], **{k: None for k in measured}, covered=None,
                   covered_family=None, control_share=None)
        row.update(n_treatment=0, n_control=0)
        if e is not None:
            n = e["n_treatment"] + e["n_control"]
            row.update({k: e[k] for k in measured}, control_share=e["n_control"] / n if n else None)
            if e["uplift_ci_low"] is not None:
                row["covered"] = e["uplift_ci_low"] <= t["true_uplift"] <= e["uplift_ci_high"]
            if e["uplift_family_low"] is not None:
                row["covered_family"] = e["uplift_family_low"] <= t["true_uplift"] <= e["uplift_family_high"]
        rows.append(row)
    return rows
