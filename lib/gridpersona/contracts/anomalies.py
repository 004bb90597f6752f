"""Gold contract of abnormal-use flags for inspection teams (用电检查): gold.anomaly_flags (stage ``anomalies``).

Detectors :mod:`gridpersona.transform.anomalies`; thresholds ``anomalies.*``; docs/anomalies.md.
Only ``customer_id`` identifies anyone: no PII.
"""

from __future__ import annotations

from gridpersona.contracts.base import D, DT, I, S, Column, TableSpec
from gridpersona.contracts.truth import ANOMALY_KINDS

ANOMALY_FLAGS = TableSpec(
    "gold.anomaly_flags",
    "Abnormal-use flags for inspection (seed 002 §1.3, seed 004 §3.4): per as-of, one row per archive meter "
    "and flag whose evidence reaches into the run's window, from the meter's days of silver.daily_load_shape "
    "and its negative readings in silver.ami_quarantine over the window and `anomalies.history_days` before "
    "it. `sustained_drop`: the meter's level, divided by its peers' (`anomalies.peer_keys`), falls to at most "
    "`anomalies.drop_max_ratio` of what it was for `anomalies.drop_min_days` days or more, shape kept; "
    "`flatline`: days on which every reading is the same non-zero value; `zero_run`: days of exact zeros on a "
    "premise whose days before were occupied; `reverse_flow`: days with most readings negative on a premise "
    "not known to have PV; `pattern_change`: the daily shape switches to another, for good. See "
    "docs/anomalies.md.",
    (
        Column("as_of", DT, "As-of date of the run; partition column.", nullable=False),
        Column("meter_id", S, "Meter id.", nullable=False),
        Column("customer_id", S, "Customer owning the meter (archive).", nullable=False),
        Column("flag", S, "One of " + ", ".join(f"`{k}`" for k in ANOMALY_KINDS) + ".", nullable=False),
        Column("start_date", DT, "First day of the evidence (the change point of a drop or pattern change, the "
               "first day of a run).", nullable=False),
        Column("end_date", DT, "Last day of the evidence (a drop or pattern change: the last day used).",
               nullable=False),
        Column("days", I, "Days of evidence: the run's days, or the days used after the change point.", "days",
               nullable=False),
        Column("score", D, "Strength of the evidence, 0..1 (higher: stronger), comparable within a flag: "
               "sustained_drop 1 - peer-adjusted ratio; flatline and zero_run min(1, days / 7); reverse_flow the "
               "share of the evidence days' readings that are negative; pattern_change `shape_shift`.",
               nullable=False),
        Column("reason", S, "What was seen, with the numbers, in a sentence an inspector reads.", nullable=False),
        Column("baseline_kwh", D, "Median daily kWh of the meter's normal days before `start_date` (null: none).",
               "kWh/day"),
        Column("recent_kwh", D, "Median daily kWh over the evidence days (reverse_flow: the negative readings' "
               "daily sum, negative).", "kWh/day"),
        Column("own_ratio", D, "recent_kwh / baseline_kwh (sustained_drop, pattern_change; else null)."),
        Column("peer_ratio", D, "The peers' level over the same days / before (sustained_drop, pattern_change): "
               "near 1 when the drop is the meter's own."),
        Column("shape_shift", D, "Share of the day's energy in other hours between the meter's mean hourly shape "
               "after `start_date` and before (half the L1 distance, 0..1; sustained_drop, pattern_change; else "
               "null)."),
        Column("has_pv", S, "reverse_flow: `no` or `unknown` (the archive's optional has_pv column; absent or "
               "null: unknown; a premise with PV exports by design and is not flagged); null for the other flags."),
    ),
    keys=("as_of", "meter_id", "flag"),
    partition_by=("as_of",),
    allowed_values={"flag": ANOMALY_KINDS, "has_pv": ("no", "unknown")},
)

SPECS = (ANOMALY_FLAGS,)
