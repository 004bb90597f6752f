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

SPECS = (CAMPAIGN_TARGETS, CAMPAIGN_EVALUATION)
