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
        Column("bill_shock", B, "Planted: the meter's load surges 1.8-2.4x over the window's last 14-21 days (bill shock)."),
        Column("credit_rating", S, "Planted: `good`, `medium` or `poor` payment behaviour."),
        Column("payment_channel_pref", S, "Planted: `online`, `offline` or `auto_debit`."),
        Column("interaction_channel_pref", S, "Planted: `app`, `hotline` or `service_hall`."),
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

TRUTH: dict[str, TableSpec] = {s.name: s for s in (TRUTH_METERS, TRUTH_FAULTS, TRUTH_CAMPAIGNS)}
