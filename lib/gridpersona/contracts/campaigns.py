"""Gold contracts of the campaign stages: gold.campaign_targets (``campaigns``) and gold.campaign_evaluation
(``evaluate``).

The targeting rules are :mod:`gridpersona.transform.campaigns`; the A/B
evaluation and its intervals :mod:`gridpersona.transform.campaign_outcomes`.
"""

from __future__ import annotations

from gridpersona.contracts.base import ARR_S, B, D, DT, I, L, S, Column, TableSpec

# Contact channels of a target (bronze.contact_history's channels).
CHANNELS = ("app", "sms", "service_hall", "account_manager")
AB_GROUPS = ("treatment", "control")
# The interval methods named in gold.campaign_evaluation's rows.
CI_METHOD = "newcombe_hybrid_score"
FAMILY_METHOD = "bonferroni"

CAMPAIGN_TARGETS = TableSpec(
    "gold.campaign_targets",
    "The customers each enabled campaign (conf/campaigns.yaml) targets in one cycle (as-of date), after "
    "eligibility, exclusions, arbitration, capacity and the holdout. No PII: the tags carry none.",
    (
        Column("as_of", DT, "The cycle (as-of of gold.customer_tags); partition column.", nullable=False),
        Column("campaign_id", S, "Campaign id (conf/campaigns.yaml).", nullable=False),
        Column("customer_id", S, "Customer account number.", nullable=False),
        Column("ab_group", S, "`treatment`, or `control`: held out by the hash of (customer, campaign), not "
               "contacted.", nullable=False),
        Column("channel", S, "Channel to reach the target: " + ", ".join(f"`{c}`" for c in CHANNELS)
               + " (control targets keep the channel they would have had).", nullable=False),
        Column("priority", I, "The campaign's priority (1 first).", nullable=False),
        Column("score", D, "The campaign's score for the customer (its `score` rule); higher first."),
        Column("qualifying_tags", ARR_S, "Codes of the campaign's qualifiers that hold for the customer.",
               nullable=False),
        Column("offer_code", S, "The campaign's offer code.", nullable=False),
        Column("segment_id", I, "The customer's load segment at targeting time (for per-segment evaluation)."),
        Column("segment_label", S, "That segment's archetype code."),
    ),
    keys=("as_of", "campaign_id", "customer_id"),
    partition_by=("as_of",),
    allowed_values={"ab_group": AB_GROUPS, "channel": CHANNELS},
)

CAMPAIGN_EVALUATION = TableSpec(
    "gold.campaign_evaluation",
    "A/B evaluation of each campaign cycle: treatment vs control response rates, absolute uplift, its "
    f"per-row interval at `confidence` and a simultaneous ({FAMILY_METHOD}) interval per family of rows.",
    (
        Column("as_of", DT, "The evaluated campaign cycle (as-of of gold.campaign_targets).", nullable=False),
        Column("campaign_id", S, "Campaign id (conf/campaigns.yaml).", nullable=False),
        Column("level", S, "`campaign`: one row per campaign; `segment`: one row per campaign and segment_label.",
               nullable=False),
        Column("segment_label", S, "Segment of the targets at targeting time; null on campaign rows."),
        Column("targets", L, "Targets of the cycle, both groups.", nullable=False),
        Column("targets_without_response", L, "Targets with no bronze.campaign_response row: not counted in n_*.",
               nullable=False),
        Column("n_treatment", L, "Treatment targets with a response row.", nullable=False),
        Column("responders_treatment", L, "Treatment targets that responded.", nullable=False),
        Column("rate_treatment", D, "responders_treatment / n_treatment; null when n_treatment is 0."),
        Column("n_control", L, "Control (holdout, not contacted) targets with a response row.", nullable=False),
        Column("responders_control", L, "Control targets that responded.", nullable=False),
        Column("rate_control", D, "responders_control / n_control; null when n_control is 0."),
        Column("uplift", D, "Absolute uplift rate_treatment - rate_control (a share; 0.03 = 3 points)."),
        Column("uplift_ci_low", D, "Lower bound of this row's own interval at `confidence` (Newcombe hybrid score)."),
        Column("uplift_ci_high", D, "Upper bound of this row's own interval at `confidence`."),
        Column("confidence", D, "Level of uplift_ci_* (campaigns.confidence, 0.95), and the joint level of the "
               "family intervals.", nullable=False),
        Column("ci_method", S, f"`{CI_METHOD}` (Newcombe 1998, method 10).", nullable=False),
        Column("significant", B, "uplift_ci_* excludes 0."),
        Column("family_size", L, "m: rows of this cycle and level with an interval (both groups non-empty); the "
               "family of the simultaneous intervals.", nullable=False),
        Column("family_confidence", D, "Level of each family interval: 1 - (1 - confidence) / family_size "
               "(Bonferroni); null when family_size is 0."),
        Column("uplift_family_low", D, "Lower bound of the simultaneous interval: all family_size intervals of the "
               "cycle and level cover their true uplifts together with probability >= confidence."),
        Column("uplift_family_high", D, "Upper bound of the simultaneous interval."),
        Column("significant_family", B, "uplift_family_* excludes 0 (significant after the multiple-comparison "
               "correction)."),
    ),
    keys=("as_of", "campaign_id", "level", "segment_label"),
    partition_by=("as_of",),
)

# gold.campaign_power: how the minimum detectable effect was computed (transform/power.py).
MDE_METHODS = ("exact_newcombe", "welch_t")
BASELINE_SOURCES = ("campaign_response_control", "config_default", "placebo_daily_load_shape")

CAMPAIGN_POWER = TableSpec(
    "gold.campaign_power",
    "Per campaign cycle (as-of) and outcome: the minimum detectable effect (MDE) of the campaign's holdout at "
    "targeting time, i.e. the smallest true effect that the evaluate stage's interval at campaigns.confidence "
    "excludes 0 for with probability `power`, and the control share that would detect the campaign's "
    "target_effect. Written by the campaigns stage beside gold.campaign_targets; computed in "
    "lib/gridpersona/transform/power.py.",
    (
        Column("as_of", DT, "The cycle (as-of of gold.campaign_targets); partition column.", nullable=False),
        Column("campaign_id", S, "Campaign id (conf/campaigns.yaml).", nullable=False),
        Column("outcome", S, "`response` (response uplift), `churn` (account closure rate; the effect sought is "
               "a decrease of the same size) or `kwh_log_change` (log ratio of mean daily kWh after / before the "
               "cycle, as gold.campaign_outcomes measures it).", nullable=False),
        Column("baseline", D, "Proportions: the control rate p0 the MDE assumes (a share). kwh_log_change: the "
               "standard deviation sigma of the targets' placebo change (log ratio of the campaigns.outcomes."
               "outcome_days ending on the as-of over the outcome_days before); null when fewer than 2 targets "
               "have the days for it."),
        Column("baseline_source", S, "`campaign_response_control`: the campaign's control response rate over its "
               "earlier cycles (bronze.campaign_response, at least campaigns.power.min_baseline_units control "
               "rows); `config_default`: campaigns.power.default_baseline; `placebo_daily_load_shape`: sigma from "
               "silver.daily_load_shape (kwh_log_change).", nullable=False),
        Column("n_treatment", L, "Treatment targets of the cycle.", nullable=False),
        Column("n_control", L, "Control (holdout) targets of the cycle.", nullable=False),
        Column("alpha", D, "1 - campaigns.confidence: two-sided level of the evaluate stage's interval.",
               nullable=False),
        Column("power", D, "campaigns.power.power: probability of detecting an effect of size mde.", nullable=False),
        Column("mde", D, "Minimum detectable absolute effect (proportions: a share, 0.05 = 5 points; "
               "kwh_log_change: a log ratio, 0.05 ~ 5 %); null when no effect is detectable that often (e.g. an "
               "empty arm) or the baseline is unknown."),
        Column("mde_method", S, "`exact_newcombe`: bisection on the effect with exact binomial enumeration of both "
               "arms under the evaluate stage's rule (Newcombe interval excludes 0); `welch_t`: (t_{nu,1-a/2} + "
               "t_{nu,power}) sigma sqrt(1/n_t + 1/n_c), nu the Welch df.", nullable=False),
        Column("mde_normal", D, "The normal-approximation MDE: (z_{1-a/2} + z_power) sqrt(pbar qbar (1/n_t + 1/n_c)) "
               "for proportions, (z_{1-a/2} + z_power) sigma sqrt(1/n_t + 1/n_c) for means; for comparison "
               "(optimistic for small holdouts)."),
        Column("target_effect", D, "The campaign's target_effect (response outcome only); null: none configured."),
        Column("holdout_share", D, "Control share applied this cycle: the configured holdout_share, or the sized one "
               "when the campaign has size_holdout and the target is feasible.", nullable=False),
        Column("holdout_share_for_target", D, "Control share of this cycle's targets whose MDE (normal "
               "approximation) is target_effect: (1 - sqrt(1 - 4/K))/2, K = N d^2/((z_{1-a/2}+z_power)^2 pbar qbar); "
               "null when there is no target or it is infeasible."),
        Column("feasible", B, "target_effect detectable by some control share up to campaigns.power."
               "max_holdout_share; null when there is no target_effect."),
    ),
    keys=("as_of", "campaign_id", "outcome"),
    partition_by=("as_of",),
    allowed_values={"outcome": ("response", "churn", "kwh_log_change"), "mde_method": MDE_METHODS,
                    "baseline_source": BASELINE_SOURCES},
)

# gold.campaign_outcomes: the outcomes, how each is measured, and the direction a campaign seeks.
OUTCOMES = ("response", "kwh_log_change", "peak_valley_rate_change", "arpu_cny", "churn", "complaint",
            "paid_on_time")
OUTCOME_KINDS = {"response": "proportion", "kwh_log_change": "mean", "peak_valley_rate_change": "mean",
                 "arpu_cny": "mean", "churn": "proportion", "complaint": "proportion", "paid_on_time": "proportion"}
OUTCOME_UNITS = {"response": "share", "kwh_log_change": "log_ratio", "peak_valley_rate_change": "ratio",
                 "arpu_cny": "CNY", "churn": "share", "complaint": "share", "paid_on_time": "share"}
OUTCOME_REASONS = ("source_absent", "source_empty", "no_data_after_cycle", "no_bill_after_cycle",
                   "close_date_unknown", "no_response_rows", "empty_arm")
WELCH_METHOD = "welch_t"

CAMPAIGN_OUTCOMES = TableSpec(
    "gold.campaign_outcomes",
    "Business outcomes of each evaluated campaign cycle (as-of), treatment vs control, per campaign and per "
    "channel: response, kWh and peak-valley-rate change, ARPU, churn, complaints and payment on time. "
    "Proportions get a Newcombe interval, means a Welch interval, each at `confidence` and Bonferroni-corrected "
    "over the family (as_of, level, outcome). An outcome whose source the lake lacks (absent or empty table, "
    "no close dates, no data after the cycle yet) is never written as zeros: its rows carry null values, "
    "effect and interval and a `reason`. Each customer is counted under its target row's ab_group.",
    (
        Column("as_of", DT, "The evaluated cycle (as-of of gold.campaign_targets); partition column.",
               nullable=False),
        Column("campaign_id", S, "Campaign id (conf/campaigns.yaml).", nullable=False),
        Column("level", S, "`campaign`: all targets of the campaign; `channel`: its targets reached (or, for "
               "control, that would have been reached) by one channel.", nullable=False),
        Column("channel", S, "The channel of a `channel` row; null on `campaign` rows."),
        Column("outcome", S, "`response` (responded, bronze.campaign_response); `kwh_log_change` (log of the mean "
               "daily kWh after the cycle over the mean of the pre_days before it, silver.daily_load_shape); "
               "`peak_valley_rate_change` (mean daily (max_kwh - min_kwh)/max_kwh after minus before); `arpu_cny` "
               "(mean billed amount of the months that start after the cycle, bronze.billing_payment); `churn` "
               "(account closed in the outcome period, bronze.customer_archive.account_close_date); `complaint` "
               "(any bronze.service_interaction of type complaint in the period); `paid_on_time` (every bill due in "
               "the period paid by its due date).", nullable=False),
        Column("kind", S, "`proportion` (a share of customers) or `mean` (a mean per customer).", nullable=False),
        Column("unit", S, "`share`, `log_ratio`, `ratio` or `CNY`.", nullable=False),
        Column("window_first", DT, "First day of the outcome period (the day after the cycle).", nullable=False),
        Column("window_last", DT, "Last day of the outcome period: the cycle + campaigns.outcomes.outcome_days, cut "
               "at the lake's last day of silver.daily_load_shape (response: whatever has come in).",
               nullable=False),
        Column("window_complete", B, "The outcome period has its full campaigns.outcomes.outcome_days.",
               nullable=False),
        Column("n_treatment", L, "Treatment targets with a value.", nullable=False),
        Column("n_control", L, "Control targets with a value.", nullable=False),
        Column("missing_treatment", L, "Treatment targets without a value (no response row; too few complete days "
               "or too little pre-period kWh; account closed (kWh, peak-valley) or closed by the cycle (churn); no "
               "bill in the period).", nullable=False),
        Column("missing_control", L, "Control targets without a value.", nullable=False),
        Column("value_treatment", D, "Mean (or share) of the outcome over the treatment targets with a value."),
        Column("value_control", D, "Mean (or share) over the control targets with a value."),
        Column("effect", D, "value_treatment - value_control; null with a `reason` when not measurable."),
        Column("ci_low", D, "Lower bound of the row's own interval at `confidence` (Newcombe for proportions, "
               "Welch for means)."),
        Column("ci_high", D, "Upper bound of that interval."),
        Column("confidence", D, "Level of ci_* (campaigns.confidence), and the joint level of the family "
               "intervals.", nullable=False),
        Column("method", S, f"`{CI_METHOD}` (proportions) or `{WELCH_METHOD}` (means: Welch-Satterthwaite df).",
               nullable=False),
        Column("significant", B, "ci_* excludes 0; null without an interval."),
        Column("family_size", L, "m: rows of this cycle, level and outcome with an interval.", nullable=False),
        Column("family_confidence", D, "1 - (1 - confidence) / family_size (Bonferroni); null when m is 0."),
        Column("family_low", D, "Lower bound of the simultaneous interval: all m rows of the family cover their "
               "true effects together with probability >= confidence."),
        Column("family_high", D, "Upper bound of the simultaneous interval."),
        Column("mde", D, "Minimum detectable effect of this row's arms at campaigns.power.power (proportions: exact "
               "power of the Newcombe rule at the control rate, in the direction the campaign seeks; means: Welch "
               "with the pooled sd); null when not computable."),
        Column("reason", S, "Why effect is null: " + ", ".join(f"`{r}`" for r in OUTCOME_REASONS)
               + "; null when measured."),
    ),
    keys=("as_of", "campaign_id", "level", "channel", "outcome"),
    partition_by=("as_of",),
    allowed_values={"level": ("campaign", "channel"), "outcome": OUTCOMES, "kind": ("proportion", "mean"),
                    "method": (CI_METHOD, WELCH_METHOD), "reason": OUTCOME_REASONS},
)

SPECS = (CAMPAIGN_TARGETS, CAMPAIGN_EVALUATION, CAMPAIGN_POWER, CAMPAIGN_OUTCOMES)
