"""The alerts stage: mid-cycle bill-projection and vacancy alerts, at most one per customer, type and period.

``alerts``  silver.daily_load_shape (the periods of the window's days, and `alerts.recent_days` before),
            bronze.customer_archive, bronze.billing_payment (optional: absent, no baseline and no bill alert),
            gold.alert_targets (its own rows outside the window: an alert already stored suppresses later ones)
            -> gold.alert_targets (partition alert_date)

Every day of the window is evaluated in one pass (:mod:`gridpersona.transform.alerts`): the nightly run is
``--window-days 1`` (the daily DAG), a backfill ``--as-of <last day> --window-days N``. The run replaces
exactly its days' partitions, so a rerun of the same days writes the same rows.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from gridpersona.contracts.advice import ALERT_TARGETS
from gridpersona.contracts.bronze import BILLING_PAYMENT, CUSTOMER_ARCHIVE
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.lake import check_schema
from gridpersona.stages.inputs import read_bronze, read_bronze_or_empty
from gridpersona.stages.runner import StageContext, StageResult, compact_dates
from gridpersona.transform import alerts as AL
from gridpersona.transform.shapes import tariff_slot_masks


def run_alerts(ctx: StageContext) -> StageResult:
    """silver.daily_load_shape + archive + bills -> gold.alert_targets for the window's days."""
    s, lake = ctx.settings, ctx.lake
    days = ctx.process_dates
    if not lake.exists(DAILY_LOAD_SHAPE.name):
        raise RuntimeError(f"alerts: {DAILY_LOAD_SHAPE.name} not found under {lake.root}; run `gridpersona run "
                           f"shapes --as-of {ctx.as_of}` first")
    first = AL.read_from(days, s.alerts)
    daily = (lake.read(DAILY_LOAD_SHAPE.name).filter(F.col("date").between(first, max(days)))
             .select("meter_id", "date", "slot_kwh", "daily_kwh", "completeness"))
    archive = read_bronze(lake, CUSTOMER_ARCHIVE.name)
    has_bills = lake.exists(BILLING_PAYMENT.name)
    billing = read_bronze_or_empty(lake, BILLING_PAYMENT.name)
    result = StageResult()

    customers = AL.contactable_customers(archive, s.tariff).localCheckpoint(eager=True)
    periods = sorted({AL.period_start(d) for d in days})
    baselines = AL.bill_baselines(billing, periods, s.alerts.baseline_months).localCheckpoint(eager=True)
    progress = AL.daily_progress(daily, customers, masks=tariff_slot_masks(s.tariff, s.ami.interval_minutes),
                                 params=s.alerts, near_zero_kwh=s.tags.features.near_zero_daily_kwh, days=days)
    priced = AL.priced_progress(progress, baselines, tariff=s.tariff, params=s.alerts)
    candidates = AL.alert_candidates(priced, params=s.alerts).localCheckpoint(eager=True)
    if lake.exists(ALERT_TARGETS.name):
        kept = lake.read(ALERT_TARGETS.name).filter(~F.col("alert_date").isin(days))
    else:
        kept = lake.spark.createDataFrame([], ALERT_TARGETS.schema)
    rows = AL.drop_alerted(candidates, kept)
    check_schema(ALERT_TARGETS.name, ALERT_TARGETS.schema, rows.schema)
    result.outputs[ALERT_TARGETS.name] = lake.replace(rows, ALERT_TARGETS, where={"alert_date": days}).rows

    # Notes: who could not be alerted and why (a handful of counts over the archive and the candidates).
    who = archive.filter(F.col("meter_id").isNotNull()).agg(
        F.count(F.lit(1)).alias("customers"),
        F.count(F.when(F.col("do_not_contact").isNull(), 1)).alias("consent_unknown"),
        F.count(F.when(F.col("do_not_contact"), 1)).alias("opted_out")).first()
    known = customers.agg(F.count(F.lit(1)).alias("n"),
                          F.count(F.when(F.col("plan_id").isNull(), 1)).alias("plan_unknown")).first()
    with_base = {r["period_start"]: r["n"] for r in
                 customers.filter(F.col("plan_id").isNotNull()).join(baselines, "customer_id")
                 .groupBy("period_start").agg(F.count(F.lit(1)).alias("n")).collect()}
    priced_customers = known["n"] - known["plan_unknown"]
    result.rows_in = who["customers"]
    written = (lake.read(ALERT_TARGETS.name).filter(F.col("alert_date").isin(days))
               .groupBy("alert_type", "ab_group").count().collect())
    by = {(r["alert_type"], r["ab_group"]): r["count"] for r in written}
    suppressed = candidates.count() - sum(by.values())
    result.notes.append(
        f"alerts {compact_dates(days)}: {known['n']:,} of {who['customers']:,} customers contactable "
        f"(do_not_contact true {who['opted_out']:,}, unknown {who['consent_unknown']:,}: no row); "
        + "; ".join(f"{t} {by.get((t, 'treatment'), 0):,} to send + {by.get((t, 'control'), 0):,} control"
                    for t in AL.HOLDOUT_IDS)
        + f"; {suppressed:,} suppressed by an alert already stored for the period; no bill alert for "
        f"{known['plan_unknown']:,} with an unknown current plan; a bill baseline for "
        + ", ".join(f"{with_base.get(p, 0):,} of {priced_customers:,} in {p.isoformat()[:7]}" for p in periods)
        + ("" if has_bills else f" ({BILLING_PAYMENT.name} is absent: no bill alert)"))
    return result
