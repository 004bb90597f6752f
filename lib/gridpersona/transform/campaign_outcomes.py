"""A/B evaluation of a campaign cycle: targets + responses -> response rates, uplift, confidence intervals.

Uplift is the absolute difference of response rates, treatment minus control.
Its interval is **Newcombe's hybrid score interval** (Newcombe 1998, method 10):
a Wilson score interval for each rate, combined as

    lower = d - sqrt((p_t - l_t)^2 + (u_c - p_c)^2)
    upper = d + sqrt((u_t - p_t)^2 + (p_c - l_c)^2)

with d = p_t - p_c and (l, u) the Wilson bounds. Unlike the Wald interval
(d +- z * sqrt(p_t q_t / n_t + p_c q_c / n_c)) it keeps close to its nominal
coverage with small control groups and rates near 0, where campaign holdouts
live, and it never collapses to zero width when a group has no responders.

Two intervals per row:

* ``uplift_ci_low/high`` at ``confidence`` (0.95): each row's own interval
  covers that row's true uplift with probability ~95 %. Over a cycle of m
  campaigns some miss by design: all 8 of 8 cover only ~0.95^8 = 66 % of
  the time.
* ``uplift_family_low/high``: simultaneous (Bonferroni) intervals for the
  cycle's *family* of rows, each a Newcombe interval at
  ``family_confidence = 1 - (1 - confidence) / family_size``, so that **all
  family_size intervals cover their true uplifts together with probability
  >= confidence** (the union bound; to the extent each Newcombe interval
  keeps its nominal level, which it does closely). A family is one
  evaluated cycle (as_of) and one level: the ``campaign`` rows of the cycle
  form one family (m = campaigns evaluated, i.e. with both groups non-empty),
  the ``segment`` rows another (m = campaign x segment rows with both groups
  non-empty), because an analyst scanning the per-segment rows for where a
  campaign works makes that many comparisons. The two levels are separate
  claims; a statement about both levels at once holds with probability
  >= 1 - 2 (1 - confidence).

Closed form: column expressions in Spark (the normal quantile of the family
level by Acklam's rational approximation, relative error < 1.2e-9, since the
family size is only known per cycle inside the plan), and
:func:`newcombe_interval` / :func:`family_intervals` in Python, the twins the
tests and reports check the Spark result against.

Business outcomes (gold.campaign_outcomes, issue 15): :func:`customer_outcome_values` gives each target
its value of every outcome after the cycle (null: missing), :func:`outcome_sums` the per-arm count, sum
and sum of squares per (campaign, level, channel, outcome), and :func:`outcome_rows` the intervals from
those sums in Python: Newcombe for proportions, Welch (:mod:`gridpersona.transform.power`) for means,
each with its Bonferroni family interval per (cycle, level, outcome) and its MDE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from gridpersona.contracts.campaigns import (CAMPAIGN_EVALUATION, CAMPAIGN_OUTCOMES, CI_METHOD, OUTCOME_KINDS,
                                             OUTCOME_UNITS, OUTCOMES, WELCH_METHOD)
from gridpersona.transform import power as PW
from gridpersona.transform.validate import local_date

# A family is one cycle and one level (campaign rows; campaign x segment rows).
FAMILY_BY = ("as_of", "level")


# ------------------------------------------------------------------ Python twins


def z_value(confidence: float) -> float:
    """Two-sided standard normal quantile: 1.959964 for 0.95."""
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def bonferroni_confidence(confidence: float, family_size: int) -> float:
    """Level of each of ``family_size`` intervals so that all cover together with probability >= ``confidence``."""
    if family_size < 1:
        raise ValueError(f"family_size must be >= 1, got {family_size}")
    return 1.0 - (1.0 - confidence) / family_size


def wilson_interval(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion x / n (n > 0)."""
    z = z_value(confidence)
    p = x / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return center - half, center + half


def newcombe_interval(x_t: int, n_t: int, x_c: int, n_c: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe hybrid score interval of p_t - p_c (treatment minus control); n_t, n_c > 0."""
    p_t, p_c = x_t / n_t, x_c / n_c
    l_t, u_t = wilson_interval(x_t, n_t, confidence)
    l_c, u_c = wilson_interval(x_c, n_c, confidence)
    d = p_t - p_c
    return d - math.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2), d + math.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2)


def family_intervals(groups: Sequence[tuple[int, int, int, int]], confidence: float = 0.95
                     ) -> list[tuple[float, float] | None]:
    """Simultaneous (Bonferroni) Newcombe intervals for one family of (x_t, n_t, x_c, n_c) comparisons.

    The family size m counts the groups with n_t > 0 and n_c > 0; each of
    those gets a Newcombe interval at :func:`bonferroni_confidence`
    (``confidence``, m), so all m cover together with probability >=
    ``confidence``. Groups with an empty arm get None.
    """
    m = sum(1 for _, n_t, _, n_c in groups if n_t > 0 and n_c > 0)
    if not m:
        return [None] * len(groups)
    level = bonferroni_confidence(confidence, m)
    return [newcombe_interval(x_t, n_t, x_c, n_c, level) if n_t > 0 and n_c > 0 else None
            for x_t, n_t, x_c, n_c in groups]


# ------------------------------------------------------------------ Spark


# Acklam's rational approximation of the standard normal quantile (relative error < 1.15e-9).
_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
      -3.066479806614716e+01, 2.506628277459239e+00)
_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
      -1.328068155288572e+01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
      4.374664141464968e+00, 2.938163982698783e+00)
_DD = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
_P_LOW = 0.02425


def _poly(coefs: Sequence[float], x: Column) -> Column:
    """Horner: coefs[0] x^(k-1) + ... + coefs[k-1]."""
    acc = F.lit(coefs[0])
    for c in coefs[1:]:
        acc = acc * x + F.lit(c)
    return acc


def normal_quantile_col(p: Column) -> Column:
    """Standard normal quantile of ``p`` in (0, 1) as a column expression (null outside (0, 1))."""
    q = p - F.lit(0.5)
    r = q * q
    central = _poly(_A, r) * q / (_poly(_B, r) * r + F.lit(1.0))
    t_low = F.sqrt(F.lit(-2.0) * F.log(p))
    t_high = F.sqrt(F.lit(-2.0) * F.log(F.lit(1.0) - p))
    low = _poly(_C, t_low) / (_poly(_DD, t_low) * t_low + F.lit(1.0))
    high = -_poly(_C, t_high) / (_poly(_DD, t_high) * t_high + F.lit(1.0))
    return (F.when((p <= 0) | (p >= 1), F.lit(None).cast("double"))
            .when(p < _P_LOW, low).when(p > 1 - _P_LOW, high).otherwise(central))


def _with_newcombe(df: DataFrame, z: Column, low: str, high: str) -> DataFrame:
    """df (with n_* and responders_* per arm) + columns ``low``, ``high``: the Newcombe interval at quantile ``z``.

    Null where an arm is empty. Built in steps (z, rates, Wilson bounds, then
    the interval) so that each step references the previous one's columns:
    written as one nested expression, z and the rates would be repeated dozens
    of times and the plan would take seconds to analyse.
    """
    def size(n: str) -> Column:
        return F.when(F.col(n) > 0, F.col(n).cast("double"))  # null for an empty arm, so nothing divides by zero

    def rate(x: str, n: str) -> Column:
        return F.col(x).cast("double") / size(n)

    def wilson(p: str, n: str) -> tuple[Column, Column]:
        nd, zc = size(n), F.col("_z")
        denom = F.lit(1.0) + zc * zc / nd
        center = (F.col(p) + zc * zc / F.lit(2.0) / nd) / denom
        half = zc * F.sqrt(F.col(p) * (F.lit(1.0) - F.col(p)) / nd + zc * zc / F.lit(4.0) / (nd * nd)) / denom
        return center - half, center + half

    cols = df.columns
    step = df.select(*cols, z.alias("_z"), rate("responders_treatment", "n_treatment").alias("_p_t"),
                     rate("responders_control", "n_control").alias("_p_c"))
    (l_t, u_t), (l_c, u_c) = wilson("_p_t", "n_treatment"), wilson("_p_c", "n_control")
    step = step.select(*cols, "_p_t", "_p_c", l_t.alias("_l_t"), u_t.alias("_u_t"), l_c.alias("_l_c"),
                       u_c.alias("_u_c"))
    p_t, p_c, d = F.col("_p_t"), F.col("_p_c"), F.col("_p_t") - F.col("_p_c")

    def sq(x: Column) -> Column:
        return x * x

    return step.select(*cols, (d - F.sqrt(sq(p_t - F.col("_l_t")) + sq(F.col("_u_c") - p_c))).alias(low),
                       (d + F.sqrt(sq(F.col("_u_t") - p_t) + sq(p_c - F.col("_l_c")))).alias(high))


def response_outcomes(targets: DataFrame, responses: DataFrame) -> DataFrame:
    """Targets of a cycle joined to their bronze.campaign_response rows (same campaign, cycle and customer).

    Returns the target columns plus ``responded`` (null when the target has no response row).
    """
    r = responses.select(F.col("campaign_id"), F.col("cycle_as_of").alias("as_of"), F.col("customer_id"),
                         F.col("responded"))
    return targets.join(r, ["campaign_id", "as_of", "customer_id"], "left")


def response_counts(outcomes: DataFrame, *, by: Sequence[str]) -> DataFrame:
    """Per group of ``by`` columns: targets, targets_without_response, n and responders per arm.

    ``outcomes``: one row per target with ``ab_group`` and ``responded`` (null:
    no response row; counted in ``targets_without_response`` only).
    """
    known = F.col("responded").isNotNull()
    treat = F.col("ab_group") == F.lit("treatment")
    ctrl = F.col("ab_group") == F.lit("control")
    yes = F.coalesce(F.col("responded"), F.lit(False))
    return outcomes.groupBy(*by).agg(
        F.count(F.lit(1)).alias("targets"),
        F.sum(F.when(~known, 1).otherwise(0)).cast("long").alias("targets_without_response"),
        F.sum(F.when(treat & known, 1).otherwise(0)).cast("long").alias("n_treatment"),
        F.sum(F.when(treat & yes, 1).otherwise(0)).cast("long").alias("responders_treatment"),
        F.sum(F.when(ctrl & known, 1).otherwise(0)).cast("long").alias("n_control"),
        F.sum(F.when(ctrl & yes, 1).otherwise(0)).cast("long").alias("responders_control"),
    )


def with_uplift_interval(counts: DataFrame, *, confidence: float) -> DataFrame:
    """Counts (n_* and responders_* per arm) + rates, uplift and its own Newcombe interval at ``confidence``."""
    out = _with_newcombe(counts, F.lit(z_value(confidence)), "uplift_ci_low", "uplift_ci_high")
    rate_t = F.col("responders_treatment").cast("double") / F.when(F.col("n_treatment") > 0, F.col("n_treatment"))
    rate_c = F.col("responders_control").cast("double") / F.when(F.col("n_control") > 0, F.col("n_control"))
    low, high = F.col("uplift_ci_low"), F.col("uplift_ci_high")
    return out.select(*counts.columns, rate_t.alias("rate_treatment"), rate_c.alias("rate_control"),
                      (rate_t - rate_c).alias("uplift"), low, high, F.lit(float(confidence)).alias("confidence"),
                      F.lit(CI_METHOD).alias("ci_method"), ((low > 0) | (high < 0)).alias("significant"))


def with_family_interval(counts: DataFrame, *, family_by: Sequence[str], confidence: float) -> DataFrame:
    """Counts + the simultaneous (Bonferroni) Newcombe interval of each row's family.

    A family is one group of ``family_by`` columns; its size m (``family_size``)
    counts the rows with both arms non-empty, each of which gets a Newcombe
    interval at ``family_confidence`` = 1 - (1 - confidence) / m: all m cover
    together with probability >= ``confidence``. Same numbers as
    :func:`family_intervals`. Adds family_size, family_confidence,
    uplift_family_low, uplift_family_high, significant_family.
    """
    defined = (F.col("n_treatment") > 0) & (F.col("n_control") > 0)
    m = F.sum(defined.cast("long")).over(Window.partitionBy(*family_by))
    sized = counts.select("*", m.alias("family_size"))
    level = F.when(F.col("family_size") > 0,
                   F.lit(1.0) - F.lit(1.0 - confidence) / F.col("family_size").cast("double"))
    leveled = sized.select("*", level.alias("family_confidence"))
    z = normal_quantile_col(F.lit(0.5) + F.col("family_confidence") / F.lit(2.0))
    out = _with_newcombe(leveled, z, "uplift_family_low", "uplift_family_high")
    low, high = F.col("uplift_family_low"), F.col("uplift_family_high")
    return out.select("*", ((low > 0) | (high < 0)).alias("significant_family"))


def uplift_table(outcomes: DataFrame, *, by: Sequence[str], confidence: float) -> DataFrame:
    """Per group of ``by`` columns: counts, rates, uplift and its Newcombe interval at ``confidence``.

    ``outcomes``: one row per target with ``ab_group`` and ``responded`` (null:
    no response row; counted in ``targets_without_response`` only).
    """
    return with_uplift_interval(response_counts(outcomes, by=by), confidence=confidence)


def campaign_evaluation(targets: DataFrame, responses: DataFrame, *, confidence: float) -> DataFrame:
    """gold.campaign_targets (one or more cycles) + bronze.campaign_response -> gold.campaign_evaluation rows.

    One ``campaign`` row per (cycle, campaign) and one ``segment`` row per
    (cycle, campaign, segment_label), each with its own interval at
    ``confidence`` and its family's simultaneous interval (families:
    :data:`FAMILY_BY`); columns in the order of the gold.campaign_evaluation contract.
    """
    outcomes = response_outcomes(targets, responses)
    per_campaign = (response_counts(outcomes, by=["as_of", "campaign_id"])
                    .withColumn("level", F.lit("campaign")).withColumn("segment_label", F.lit(None).cast("string")))
    per_segment = (response_counts(outcomes, by=["as_of", "campaign_id", "segment_label"])
                   .withColumn("level", F.lit("segment")))
    counts = per_campaign.unionByName(per_segment)
    out = with_family_interval(with_uplift_interval(counts, confidence=confidence), family_by=FAMILY_BY,
                               confidence=confidence)
    return out.select(*CAMPAIGN_EVALUATION.column_names)


# ------------------------------------------------------------------ business outcomes (gold.campaign_outcomes)
#
# Per target, one value per outcome (null: missing), computed in Spark; per (campaign, level, channel,
# outcome, arm) the count, missing count, sum and sum of squares, aggregated in Spark; the intervals from
# those few sums in Python (:func:`outcome_rows`): Newcombe for proportions, Welch for means.

_TARGET_KEYS = ("campaign_id", "customer_id", "ab_group", "channel")
# The direction each outcome's campaign seeks (for the MDE of a proportion): +1 up, -1 down.
SOUGHT = {"response": 1, "kwh_log_change": -1, "peak_valley_rate_change": -1, "arpu_cny": 1, "churn": -1,
          "complaint": -1, "paid_on_time": 1}


def customer_outcome_values(targets: DataFrame, *, responses: DataFrame, daily: DataFrame, archive: DataFrame,
                            billing: DataFrame, interactions: DataFrame, cycle, window_last, pre_days: int,
                            min_days: int, min_completeness: float, min_pre_kwh_per_day: float,
                            time_zone: str) -> DataFrame:
    """One row per target of the cycle: campaign_id, customer_id, ab_group, channel and one double column per
    outcome of ``OUTCOMES`` (null: no value for this customer).

    ``cycle``: the cycle's as-of; the outcome period is ``cycle`` + 1 .. ``window_last`` and the pre
    period the ``pre_days`` ending on ``cycle``. kWh and peak-valley rate use the days of
    ``daily`` (silver.daily_load_shape) with completeness >= ``min_completeness``, at least ``min_days``
    in each period; an account closed in or before the period has no value for them. Churn is 1 when
    account_close_date falls in the period, 0 when later or null, null when it closed by the cycle.
    """
    first = F.date_add(F.lit(cycle).cast("date"), 1)
    last = F.lit(window_last).cast("date")
    pre_first = F.date_sub(F.lit(cycle).cast("date"), pre_days - 1)
    t = targets.select(*_TARGET_KEYS)
    acct = archive.select("customer_id", "meter_id", "account_close_date")

    r = responses.filter(F.col("cycle_as_of") == F.lit(cycle).cast("date")).select(
        "campaign_id", "customer_id", F.col("responded").cast("double").alias("response"))

    d = daily.filter((F.col("date") >= pre_first) & (F.col("date") <= last)
                     & (F.col("completeness") >= F.lit(min_completeness)))
    post = F.col("date") >= first
    pv = F.when(F.col("max_kwh") > 0, (F.col("max_kwh") - F.col("min_kwh")) / F.col("max_kwh"))
    per_meter = d.groupBy("meter_id").agg(
        F.sum(F.when(~post, 1).otherwise(0)).alias("_pre_n"), F.sum(F.when(post, 1).otherwise(0)).alias("_post_n"),
        F.avg(F.when(~post, F.col("daily_kwh"))).alias("_pre_kwh"),
        F.avg(F.when(post, F.col("daily_kwh"))).alias("_post_kwh"),
        F.avg(F.when(~post, pv)).alias("_pre_pv"), F.avg(F.when(post, pv)).alias("_post_pv"))
    open_in_period = F.col("account_close_date").isNull() | (F.col("account_close_date") > last)
    enough = (F.col("_pre_n") >= min_days) & (F.col("_post_n") >= min_days) & open_in_period
    load = acct.join(per_meter, "meter_id", "left").select(
        "customer_id",
        F.when(enough & (F.col("_pre_kwh") >= F.lit(min_pre_kwh_per_day)) & (F.col("_post_kwh") > 0),
               F.log(F.col("_post_kwh")) - F.log(F.col("_pre_kwh"))).alias("kwh_log_change"),
        F.when(enough, F.col("_post_pv") - F.col("_pre_pv")).alias("peak_valley_rate_change"),
        F.when(F.col("account_close_date") <= F.lit(cycle).cast("date"), F.lit(None).cast("double"))
        .when(F.col("account_close_date") <= last, 1.0).otherwise(0.0).alias("churn"))

    bills = billing.select("customer_id", "bill_month", "bill_amount_cny", "due_date", "paid_date")
    arpu = (bills.filter((F.col("bill_month") > F.lit(cycle).cast("date")) & (F.col("bill_month") <= last))
            .groupBy("customer_id").agg(F.avg(F.col("bill_amount_cny").cast("double")).alias("arpu_cny")))
    on_time = (bills.filter((F.col("due_date") >= first) & (F.col("due_date") <= last))
               .groupBy("customer_id")
               .agg(F.min(F.when(F.col("paid_date").isNotNull() & (F.col("paid_date") <= F.col("due_date")), 1.0)
                          .otherwise(0.0)).alias("paid_on_time")))

    day = local_date(F.col("ts"), time_zone)
    complained = (interactions.filter((F.col("interaction_type") == "complaint") & (day >= first) & (day <= last))
                  .select("customer_id").distinct().withColumn("_complained", F.lit(1.0)))

    out = (t.join(r, ["campaign_id", "customer_id"], "left")
           .join(load, "customer_id", "left").join(arpu, "customer_id", "left")
           .join(on_time, "customer_id", "left").join(complained, "customer_id", "left"))
    return out.select(*_TARGET_KEYS, *[
        F.coalesce(F.col("_complained"), F.lit(0.0)).alias(o) if o == "complaint" else F.col(o).cast("double")
        for o in OUTCOMES])


def outcome_sums(values: DataFrame, outcomes: Sequence[str] = None) -> DataFrame:
    """Per-target outcome values -> per (campaign_id, level, channel, outcome, ab_group): n (values), missing
    (nulls), total and total_sq. ``level`` ``campaign`` (channel null) and ``channel``."""
    outcomes = list(outcomes or OUTCOMES)
    long = values.unpivot(list(_TARGET_KEYS), outcomes, "outcome", "value")

    def agg(df: DataFrame) -> DataFrame:
        return df.agg(F.count("value").alias("n"), F.sum(F.col("value").isNull().cast("long")).alias("missing"),
                      F.sum("value").alias("total"), F.sum(F.col("value") * F.col("value")).alias("total_sq"))

    per_campaign = agg(long.groupBy("campaign_id", "outcome", "ab_group")).select(
        "campaign_id", F.lit("campaign").alias("level"), F.lit(None).cast("string").alias("channel"), "outcome",
        "ab_group", "n", "missing", "total", "total_sq")
    per_channel = agg(long.groupBy("campaign_id", "channel", "outcome", "ab_group")).select(
        "campaign_id", F.lit("channel").alias("level"), "channel", "outcome", "ab_group", "n", "missing", "total",
        "total_sq")
    return per_campaign.unionByName(per_channel)


def outcome_rows(sums: Sequence[dict], *, as_of, window_first, window_last, window_complete: bool,
                 confidence: float, power: float, unavailable: dict[str, str] | None = None) -> list[dict]:
    """gold.campaign_outcomes rows (dicts in contract order) from :func:`outcome_sums` rows (as dicts).

    ``unavailable``: outcome -> reason for outcomes whose source the lake lacks; their rows keep the
    counts of targets but carry null values, effect and interval and that reason. A row whose arms are not
    both measured gets reason ``empty_arm``. Families: (level, outcome) of this cycle (Bonferroni).
    """
    unavailable = unavailable or {}
    groups: dict[tuple, dict] = {}
    for s in sums:
        key = (s["campaign_id"], s["level"], s["channel"], s["outcome"])
        groups.setdefault(key, {})[s["ab_group"]] = s
    empty = {"n": 0, "missing": 0, "total": None, "total_sq": None}

    def interval(outcome: str, t: dict, c: dict, level: float):
        if OUTCOME_KINDS[outcome] == "proportion":
            x_t, x_c = round(t["total"] or 0), round(c["total"] or 0)
            return newcombe_interval(x_t, t["n"], x_c, c["n"], level)
        w = PW.welch_from_sums(t["total"], t["total_sq"], t["n"], c["total"], c["total_sq"], c["n"], level)
        return None if w is None else (w.low, w.high)

    def measurable(outcome: str, t: dict, c: dict) -> bool:
        need = 1 if OUTCOME_KINDS[outcome] == "proportion" else 2
        return outcome not in unavailable and t["n"] >= need and c["n"] >= need

    family = {}
    for (_, level, _, outcome), arms in groups.items():
        ok = measurable(outcome, arms.get("treatment", empty), arms.get("control", empty))
        family[(level, outcome)] = family.get((level, outcome), 0) + int(ok)

    rows = []
    for (campaign_id, level, channel, outcome), arms in sorted(groups.items(), key=lambda kv: tuple(
            "" if v is None else v for v in kv[0])):
        t, c = arms.get("treatment", empty), arms.get("control", empty)
        kind = OUTCOME_KINDS[outcome]
        m = family[(level, outcome)]
        ok = measurable(outcome, t, c)
        v_t = t["total"] / t["n"] if t["n"] and outcome not in unavailable else None
        v_c = c["total"] / c["n"] if c["n"] and outcome not in unavailable else None
        effect = low = high = f_low = f_high = mde = None
        if ok:
            effect = v_t - v_c
            low, high = interval(outcome, t, c, confidence)
            f_low, f_high = interval(outcome, t, c, bonferroni_confidence(confidence, m))
            if kind == "proportion":
                mde = PW.mde_proportion_exact(v_c, t["n"], c["n"], confidence=confidence, power=power,
                                              decrease=SOUGHT[outcome] < 0)
            else:
                var_t = max(t["total_sq"] - t["n"] * v_t * v_t, 0.0)
                var_c = max(c["total_sq"] - c["n"] * v_c * v_c, 0.0)
                sigma = math.sqrt((var_t + var_c) / (t["n"] + c["n"] - 2))
                mde = PW.mde_mean(sigma, t["n"], c["n"], confidence=confidence, power=power)
        n_t, n_c = (0, 0) if outcome in unavailable else (t["n"], c["n"])
        rows.append({
            "as_of": as_of, "campaign_id": campaign_id, "level": level, "channel": channel, "outcome": outcome,
            "kind": kind, "unit": OUTCOME_UNITS[outcome], "window_first": window_first, "window_last": window_last,
            "window_complete": bool(window_complete), "n_treatment": int(n_t), "n_control": int(n_c),
            "missing_treatment": int(t["missing"] + t["n"] - n_t), "missing_control": int(c["missing"] + c["n"] - n_c),
            "value_treatment": v_t, "value_control": v_c, "effect": effect, "ci_low": low, "ci_high": high,
            "confidence": float(confidence), "method": CI_METHOD if kind == "proportion" else WELCH_METHOD,
            "significant": None if low is None else bool(low > 0 or high < 0), "family_size": int(m),
            "family_confidence": bonferroni_confidence(confidence, m) if m else None,
            "family_low": f_low, "family_high": f_high, "mde": mde,
            "reason": unavailable.get(outcome) or (None if ok else "empty_arm"),
        })
    return [{k: r[k] for k in CAMPAIGN_OUTCOMES.column_names} for r in rows]


def placebo_kwh_sd(targets: DataFrame, daily: DataFrame, *, as_of, days: int, min_days: int,
                   min_completeness: float, min_pre_kwh_per_day: float) -> DataFrame:
    """Per campaign_id: ``n`` targets with a placebo kWh change and its sample standard deviation ``sd``.

    The placebo change is what ``kwh_log_change`` would measure for a cycle ``days`` before ``as_of`` with
    no campaign: log(mean daily kWh of the ``days`` ending on ``as_of`` / mean of the ``days`` before), on
    days with completeness >= ``min_completeness``, at least ``min_days`` in each period. ``targets``:
    campaign_id and meter_id per target; ``daily``: silver.daily_load_shape. Its sd is the sigma of the
    outcome's minimum detectable effect at targeting time.
    """
    end = F.lit(as_of).cast("date")
    split = F.date_sub(end, days)
    start = F.date_sub(end, 2 * days - 1)
    d = daily.filter((F.col("date") >= start) & (F.col("date") <= end)
                     & (F.col("completeness") >= F.lit(min_completeness)))
    late = F.col("date") > split
    per_meter = d.groupBy("meter_id").agg(
        F.sum(F.when(~late, 1).otherwise(0)).alias("_pre_n"), F.sum(F.when(late, 1).otherwise(0)).alias("_post_n"),
        F.avg(F.when(~late, F.col("daily_kwh"))).alias("_pre"), F.avg(F.when(late, F.col("daily_kwh"))).alias("_post"))
    ok = ((F.col("_pre_n") >= min_days) & (F.col("_post_n") >= min_days)
          & (F.col("_pre") >= F.lit(min_pre_kwh_per_day)) & (F.col("_post") > 0))
    change = per_meter.select("meter_id", F.when(ok, F.log("_post") - F.log("_pre")).alias("_change"))
    return (targets.select("campaign_id", "meter_id").join(change, "meter_id", "left")
            .groupBy("campaign_id").agg(F.count("_change").alias("n"), F.stddev_samp("_change").alias("sd")))
