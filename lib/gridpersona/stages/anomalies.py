"""The anomalies stage: abnormal-use flags for inspection teams (用电检查).

``anomalies``  silver.daily_load_shape and silver.ami_quarantine (the window and `anomalies.history_days`
               before it), bronze.customer_archive
               -> gold.anomaly_flags (partition as_of)

One pass over the meters' days (:mod:`gridpersona.transform.anomalies`): flags whose evidence reaches into
the window, each with a score, a reason and its figures. The run replaces its as-of partition, so a rerun
writes the same rows. docs/anomalies.md.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from gridpersona.contracts.anomalies import ANOMALY_FLAGS
from gridpersona.contracts.bronze import CUSTOMER_ARCHIVE
from gridpersona.contracts.silver import AMI_QUARANTINE, DAILY_LOAD_SHAPE
from gridpersona.contracts.truth import ANOMALY_KINDS
from gridpersona.lake import check_schema
from gridpersona.stages.inputs import read_bronze
from gridpersona.stages.runner import StageContext, StageResult
from gridpersona.transform import anomalies as AN


def run_anomalies(ctx: StageContext) -> StageResult:
    """silver.daily_load_shape + quarantined negatives + archive -> gold.anomaly_flags of the as-of."""
    s, lake, as_of = ctx.settings, ctx.lake, ctx.as_of
    params = s.anomalies
    if not lake.exists(DAILY_LOAD_SHAPE.name):
        raise RuntimeError(f"anomalies: {DAILY_LOAD_SHAPE.name} not found under {lake.root}; run `gridpersona run "
                           f"shapes --as-of {as_of}` first")
    window_first = min(ctx.window_dates)
    first = window_first - dt.timedelta(days=params.history_days)
    daily = (lake.read(DAILY_LOAD_SHAPE.name).filter(F.col("date").between(first, as_of))
             .select("meter_id", "date", "slot_kwh", "daily_kwh", "max_kwh", "min_kwh", "completeness"))
    has_quarantine = lake.exists(AMI_QUARANTINE.name)
    if has_quarantine:
        # Partitioned by the bronze date, which can be a day off the local one.
        quarantine = (lake.read(AMI_QUARANTINE.name)
                      .filter(F.col("date").between(first - dt.timedelta(days=1), as_of + dt.timedelta(days=1))
                              & F.col("local_date").between(first, as_of)))
    else:
        quarantine = lake.spark.createDataFrame([], AMI_QUARANTINE.schema)
    archive = read_bronze(lake, CUSTOMER_ARCHIVE.name)
    result = StageResult()

    # One pass over the shapes: the peer index and the detectors both read the day evidence.
    days = AN.day_evidence(daily, params=params, interval_minutes=s.ami.interval_minutes).localCheckpoint(eager=True)
    flags = (AN.anomaly_flags(days, quarantine, archive, params=params, window_first=window_first,
                              interval_minutes=s.ami.interval_minutes)
             .select(F.lit(as_of).alias("as_of"), *[c for c, _ in AN.FLAG_FIELDS])
             .localCheckpoint(eager=True))
    check_schema(ANOMALY_FLAGS.name, ANOMALY_FLAGS.schema, flags.schema)
    by_flag = {r["flag"]: r["n"] for r in flags.groupBy("flag").agg(F.count(F.lit(1)).alias("n")).collect()}
    result.outputs[ANOMALY_FLAGS.name] = lake.replace(flags, ANOMALY_FLAGS, where={"as_of": [as_of]}).rows
    read = days.agg(F.count(F.lit(1)).alias("days"), F.countDistinct("meter_id").alias("meters")).first()
    result.rows_in = read["days"]  # meter-days read (counted on the checkpoint: no second pass over the shapes)
    pv = "has_pv from the archive" if "has_pv" in archive.columns else "no has_pv in the archive: PV unknown"
    result.notes.append(
        f"anomalies {as_of} (evidence from {window_first}, baselines from {first}; {read['meters']:,} meters, "
        f"{read['days']:,} meter-days): " + ", ".join(f"{k} {by_flag.get(k, 0):,}" for k in ANOMALY_KINDS)
        + f" flags; {pv}" + ("" if has_quarantine else f"; {AMI_QUARANTINE.name} absent: no reverse-flow evidence"))
    return result
