"""Silver contracts: the meters' readings cleaned (stage ``clean``) and their days shaped (stage ``shapes``).

Written from :mod:`gridpersona.transform.clean` and :mod:`gridpersona.transform.shapes`;
each stage checks its frames against these before it writes. Partitioned by local
date; a run replaces exactly its window's dates.
"""

from __future__ import annotations

from pyspark.sql import types as T

from gridpersona.contracts.base import B, D, DT, I, S, TS, Column, TableSpec

# Why a raw reading was quarantined: the first that applies, in this order (transform.clean).
QUARANTINE_REASONS = ("null_value", "unknown_meter", "misaligned_ts", "out_of_window", "future_ts",
                      "negative", "out_of_range", "duplicate")
# How a clean reading came to be.
QUALITY_CODES = ("measured", "outlier_replaced", "interpolated")


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(f"`{v}`" for v in values)


AMI_CLEAN = TableSpec(
    "silver.ami_clean",
    "Interval readings fit for analysis: one row per meter and interval, measured, or repaired where a reading "
    "was an outlier or a short gap. Every raw reading of the window is in exactly one of silver.ami_clean and "
    "silver.ami_quarantine.",
    (
        Column("meter_id", S, "Meter id.", nullable=False),
        Column("ts", TS, "Start instant of the interval (UTC).", nullable=False),
        Column("date", DT, "Local calendar date of `ts` in `ami.time_zone`; partition column.", nullable=False),
        Column("slot", I, "Wall-clock slot of the local day (minute of day // interval minutes).", nullable=False),
        Column("kwh", D, "Energy of the interval: the reading, or the interpolated value.", "kWh"),
        Column("kwh_raw", D, "The reading as delivered (an outlier's raw value); null for interpolated rows.", "kWh"),
        Column("quality", S, "One of " + _listed(QUALITY_CODES) + ".", nullable=False),
    ),
    keys=("meter_id", "ts"),
    partition_by=("date",),
    allowed_values={"quality": QUALITY_CODES},
)

AMI_QUARANTINE = TableSpec(
    "silver.ami_quarantine",
    "Raw readings of the window that cannot be used, each with the first reason that applies.",
    (
        Column("meter_id", S, "Meter id as delivered."),
        Column("ts", TS, "Start instant as delivered (UTC)."),
        Column("kwh", D, "The reading as delivered.", "kWh"),
        Column("date", DT, "The bronze.ami_interval partition the reading was read from; partition column."),
        Column("local_date", DT, "Local calendar date of `ts` in `ami.time_zone`."),
        Column("reason", S, "One of " + _listed(QUARANTINE_REASONS) + ".", nullable=False),
    ),
    partition_by=("date",),
    allowed_values={"reason": QUARANTINE_REASONS},
)

METER_DAY_QUALITY = TableSpec(
    "silver.meter_day_quality",
    "One row per archive meter and local day of the window: how many of the day's intervals were measured, "
    "replaced, interpolated, missing or quarantined. A day with no reading at all is all missing.",
    (
        Column("meter_id", S, "Meter id (bronze.customer_archive).", nullable=False),
        Column("date", DT, "Local calendar date; partition column.", nullable=False),
        Column("expected_intervals", I, "Intervals of the local day (92 or 100 on DST change days at 15 minutes).",
               "intervals"),
        Column("measured_intervals", I, "Clean rows `measured`.", "intervals"),
        Column("outlier_intervals", I, "Clean rows `outlier_replaced`.", "intervals"),
        Column("interpolated_intervals", I, "Clean rows `interpolated`.", "intervals"),
        Column("missing_intervals", I, "Expected intervals with no clean row.", "intervals", nullable=False),
        Column("quarantined_readings", I, "Quarantined readings of the meter whose local date is the day.", "readings"),
        Column("complete", B, "No interval missing.", nullable=False),
        Column("day_max_kwh", D, "Largest accepted reading of the day, before outlier decisions; null when the day has "
               "none. The look-back of later days' scales reads it.", "kWh"),
        Column("day_mean_kwh", D, "Mean accepted reading of the day, before outlier decisions; null when none.", "kWh"),
        Column("outlier_scale_kwh", D, "The meter's scale that judged the day's readings: the median `day_max_kwh` "
               "over the `clean.scale_lookback_days` days before it that had readings; null when none had (the "
               "scale floor applies alone).", "kWh"),
        Column("fill_level_kwh", D, "Median `day_mean_kwh` over the same look-back days: the value of an outlier "
               "with no good reading on either side; null when none had readings.", "kWh"),
    ),
    keys=("meter_id", "date"),
    partition_by=("date",),
)

METER_DAY_READINGS = TableSpec(
    "silver.meter_day_readings",
    "One row per meter and local day with clean readings: the day's `silver.ami_clean` readings as one array by "
    "position, as clean computed them. What `shapes` reads (no second aggregation of the readings).",
    (
        Column("meter_id", S, "Meter id.", nullable=False),
        Column("date", DT, "Local calendar date; partition column.", nullable=False),
        Column("kwh_by_position", T.ArrayType(D, True), "Clean kWh of each interval of the local day in time order "
               "from local midnight (92 or 100 positions on DST change days at 15 minutes); null where the day has "
               "no clean reading.", "kWh", nullable=False),
        Column("readings", I, "Clean readings of the day (non-null positions).", "readings", nullable=False),
        Column("imputed", I, "Clean readings that are not `measured` (replaced or interpolated).", "readings",
               nullable=False),
    ),
    keys=("meter_id", "date"),
    partition_by=("date",),
)

DAILY_LOAD_SHAPE = TableSpec(
    "silver.daily_load_shape",
    "One row per meter and local day with clean readings: the day's slot energies, its normalized shape and its "
    "load figures (tariff periods from `tariff.*`).",
    (
        Column("meter_id", S, "Meter id.", nullable=False),
        Column("date", DT, "Local calendar date; partition column.", nullable=False),
        Column("slot_kwh", T.ArrayType(D, False), "Energy per wall-clock slot of the day (a slot without a "
               "reading: 0).", "kWh", nullable=False),
        Column("daily_kwh", D, "Energy of the day (sum of `slot_kwh`).", "kWh", nullable=False),
        Column("shape", T.ArrayType(D, True), "`slot_kwh` normalized (`shapes.normalization`: `total` sums to 1, "
               "`minmax` spans 0..1); uniform for a day without energy.", nullable=False),
        Column("peak_share", D, "Share of the day's energy in the tariff's peak periods (null: no energy)."),
        Column("flat_share", D, "Share in the flat periods."),
        Column("valley_share", D, "Share in the valley periods."),
        Column("max_kwh", D, "Largest slot energy.", "kWh", nullable=False),
        Column("min_kwh", D, "Smallest slot energy.", "kWh", nullable=False),
        Column("load_factor", D, "Mean slot energy / `max_kwh` (null: no energy)."),
        Column("completeness", D, "Clean readings / expected intervals of the day, at most 1.", nullable=False),
        Column("imputed_slots", I, "Clean readings that are not `measured` (replaced or interpolated).", "slots"),
        Column("day_of_week", I, "1 = Monday ... 7 = Sunday."),
        Column("is_weekend", B, "Saturday or Sunday."),
    ),
    keys=("meter_id", "date"),
    partition_by=("date",),
)

SPECS = (AMI_CLEAN, AMI_QUARANTINE, METER_DAY_QUALITY, METER_DAY_READINGS, DAILY_LOAD_SHAPE)
