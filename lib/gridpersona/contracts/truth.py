"""Ground-truth contracts: what the synthetic generator planted (``generate``), never read by the pipeline.

The truth checks (:mod:`gridpersona.synthetic.truth_checks`) compare the pipeline's
output with these tables.
"""

from __future__ import annotations

from gridpersona.contracts.base import B, D, DT, S, TS, Column, TableSpec

# The load archetypes the generator plants (and the segment labels the label rules aim at).
ARCHETYPES = ("evening_peak", "flat", "night", "double_peak", "ev_night", "vacant", "commercial_day",
              "electric_heating")

FAULT_CODES = ("short_gap", "long_gap", "duplicate", "spike", "negative", "null_value", "unknown_meter")

TRUTH_METERS = TableSpec(
    "truth.meters",
    "Synthetic ground truth per meter (written by `generate`, never read by the pipeline).",
    (
        Column("meter_id", S, "Meter id.", nullable=False),
        Column("customer_id", S, "Customer owning the meter; null for meters unknown to the archive."),
        Column("archetype", S, "True load archetype: " + ", ".join(f"`{a}`" for a in ARCHETYPES) + ".", nullable=False),
        Column("in_archive", B, "False for meters planted as unknown to the archive.", nullable=False),
        Column("mean_daily_kwh", D, "Scale of the household's consumption.", "kWh/day"),
        Column("ev_owner", B, "Planted: owns an EV charged at night."),
        Column("vacant", B, "Planted: premises vacant (near-zero load for long stretches)."),
        Column("bill_shock", B, "Planted: the meter's load surges 1.8-2.4x from `bill_shock_start_date` to the window's end "
               "(bill shock): from the 4th to the 17th-last day of the last bill period, and at least 14 days."),
        Column("credit_rating", S, "Planted: `good`, `medium` or `poor` payment behaviour."),
        Column("payment_channel_pref", S, "Planted: `online`, `offline` or `auto_debit`."),
        Column("interaction_channel_pref", S, "Planted: `app`, `hotline` or `service_hall`."),
        Column("bill_shock_start_date", DT, "Planted: the first day of the bill shock (null: none)."),
        Column("tou_saving_cny", D, "Annual bill on the customer's plan minus the cheapest time-of-use plan's, "
               "priced by the rate advisor's rule from every fault-free reading of the window.", "CNY"),
        Column("tou_saver", B, "Planted by the archetype mix and scored by price: the cheapest plan is a TOU plan "
               "saving at least rate_advisor.min_saving_cny; null within generate.tou_saver_margin_cny of either "
               "threshold (too close to call) or for a customer whose current plan is unmapped."),
    ),
    keys=("meter_id",),
)

TRUTH_FAULTS = TableSpec(
    "truth.faults",
    "Synthetic ground truth: every planted fault, one row per affected reading (interval).",
    (
        Column("meter_id", S, "Meter id.", nullable=False),
        Column("ts", TS, "Start instant of the affected interval (UTC).", nullable=False),
        Column("fault", S, "One of " + ", ".join(f"`{f}`" for f in FAULT_CODES) + ".", nullable=False),
    ),
    keys=("meter_id", "ts", "fault"),
)

TRUTH_CAMPAIGNS = TableSpec(
    "truth.campaigns",
    "Synthetic ground truth per campaign of the snapshot day's cycle: the planted response rates "
    "behind its bronze.campaign_response rows.",
    (
        Column("campaign_id", S, "Campaign id (conf/campaigns.yaml).", nullable=False),
        Column("cycle_as_of", DT, "As-of date of the cycle (the lake's last day).", nullable=False),
        Column("base_rate", D, "Planted response probability in the control group.", nullable=False),
        Column("true_uplift", D, "Planted absolute uplift: treatment probability minus base_rate.", nullable=False),
        Column("holdout_share", D, "Holdout share the treatment/control hash used.", nullable=False),
    ),
    keys=("campaign_id", "cycle_as_of"),
)

TRUTH_CAMPAIGN_OUTCOMES = TableSpec(
    "truth.campaign_outcomes",
    "Synthetic ground truth of the past campaign cycle (generate.outcome_days before the lake's last day): the "
    "effects planted on the treated customers' kWh and account closures (generate.plant_outcomes).",
    (
        Column("campaign_id", S, "Campaign whose treated customers carry the effect (treatment by the pipeline's "
               "holdout hash).", nullable=False),
        Column("cycle_as_of", DT, "As-of date of the past cycle.", nullable=False),
        Column("outcome", S, "`kwh_log_change` (kWh x (1 - x) from the day after the cycle) or `churn` (closure "
               "probability lowered by delta).", nullable=False),
        Column("planted_effect", D, "Treatment minus control as gold.campaign_outcomes measures it: log(1 - x) for "
               "kwh_log_change, -delta for churn.", nullable=False),
        Column("base_rate", D, "Churn: the closure probability over the outcome days without the campaign; null for "
               "kwh_log_change."),
        Column("holdout_share", D, "Holdout share the treatment/control hash used.", nullable=False),
        Column("window_first", DT, "First day of the outcome period (the day after the cycle).", nullable=False),
        Column("window_last", DT, "Last day of the outcome period (the lake's last day).", nullable=False),
    ),
    keys=("campaign_id", "cycle_as_of", "outcome"),
)

# The abnormal-use cases the generator plants (generate.anomaly_share); gold.anomaly_flags' flag names.
ANOMALY_KINDS = ("sustained_drop", "flatline", "zero_run", "reverse_flow", "pattern_change")

TRUTH_ANOMALIES = TableSpec(
    "truth.anomalies",
    "Synthetic ground truth: the abnormal-use cases planted on known, occupied, open archive meters "
    "(generate.anomaly_share, windows of 28 days or more), one row per meter; gold.anomaly_flags is scored "
    "against it. Planted meters have no bill shock, no closure, no planted fault from `start_date` to "
    "`end_date`, and are not EV or electric-heating homes.",
    (
        Column("meter_id", S, "Meter id.", nullable=False),
        Column("customer_id", S, "Customer owning the meter.", nullable=False),
        Column("kind", S, "One of " + ", ".join(f"`{k}`" for k in ANOMALY_KINDS) + ": `sustained_drop` (readings "
               "x 0.25-0.55, shape kept), `flatline` (the same non-zero reading every interval), `zero_run` "
               "(exact zeros), `reverse_flow` (every reading negated: a reversed CT, no PV), `pattern_change` "
               "(the daily shape becomes another archetype's, same energy).", nullable=False),
        Column("start_date", DT, "First local day of the case.", nullable=False),
        Column("end_date", DT, "Last local day of the case (`flatline`, `zero_run`: 4-10 days; the others run to "
               "the window's last day).", nullable=False),
        Column("detail", S, "What was planted: the drop factor (`x0.41`), the constant reading (`0.312 kWh`) or "
               "the new archetype (`to night`); null for zero_run and reverse_flow."),
    ),
    keys=("meter_id",),
    allowed_values={"kind": ANOMALY_KINDS},
)

TRUTH: dict[str, TableSpec] = {s.name: s for s in (TRUTH_METERS, TRUTH_FAULTS, TRUTH_CAMPAIGNS,
                                                   TRUTH_CAMPAIGN_OUTCOMES, TRUTH_ANOMALIES)}
