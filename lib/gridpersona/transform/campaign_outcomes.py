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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from gridpersona.contracts.campaigns import CAMPAIGN_EVALUATION, CI_METHOD

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
