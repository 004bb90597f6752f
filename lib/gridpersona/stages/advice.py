"""The advice stage: the rate advisor and the similar-home comparison, from the window's daily shapes.

``advice``  silver.daily_load_shape (window), bronze.customer_archive
            -> gold.rate_comparison (partition as_of), gold.neighbour_comparison (partition as_of)

Both replace exactly their as-of partition, so a rerun leaves the same rows.
"""

from __future__ import annotations

from collections import Counter

from pyspark.sql import functions as F

from gridpersona.contracts.advice import NEIGHBOUR_COMPARISON, RATE_COMPARISON
from gridpersona.contracts.bronze import CUSTOMER_ARCHIVE
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.lake import check_schema
from gridpersona.stages.inputs import read_bronze
from gridpersona.stages.runner import StageContext, StageResult
from gridpersona.transform import neighbours as NB
from gridpersona.transform import pricing as PR
from gridpersona.transform.shapes import tariff_slot_masks


def _local(df):
    return df.localCheckpoint(eager=True)


def run_advice(ctx: StageContext) -> StageResult:
    """silver.daily_load_shape (window) + archive -> gold.rate_comparison, gold.neighbour_comparison (as-of)."""
    s, lake = ctx.settings, ctx.lake
    first, last = ctx.window
    if not lake.exists(DAILY_LOAD_SHAPE.name):
        raise RuntimeError(f"advice: {DAILY_LOAD_SHAPE.name} not found under {lake.root}; run `gridpersona run "
                           f"shapes --as-of {ctx.as_of}` first")
    daily = (lake.read(DAILY_LOAD_SHAPE.name).filter(F.col("date").between(first, last))
             .select("meter_id", "date", "slot_kwh", "daily_kwh", "completeness"))
    archive = read_bronze(lake, CUSTOMER_ARCHIVE.name)
    result = StageResult()
    closed = archive.filter(F.col("account_close_date") <= F.lit(ctx.as_of)).count()
    if closed:
        result.notes.append(f"{closed:,} accounts closed on or before {ctx.as_of}: not advised, nobody's peer")

    rates = PR.rate_comparison(daily, archive, tariff=s.tariff, params=s.rate_advisor,
                               masks=tariff_slot_masks(s.tariff, s.ami.interval_minutes),
                               first=first, last=last, as_of=ctx.as_of, checkpoint=_local)
    check_schema(RATE_COMPARISON.name, RATE_COMPARISON.schema, rates.schema)
    result.outputs[RATE_COMPARISON.name] = lake.replace(rates, RATE_COMPARISON, where={"as_of": ctx.as_of}).rows
    stored = lake.read(RATE_COMPARISON.name).filter(F.col("as_of") == F.lit(ctx.as_of))
    per_customer = (stored.groupBy("customer_id")
                    .agg(F.first("reason").alias("reason"), F.first("recommended_plan_id").alias("plan"),
                         F.max("recommended_saving_cny").alias("saving"))
                    .groupBy("reason", "plan").agg(F.count(F.lit(1)).alias("n"), F.sum("saving").alias("saving"))
                    .collect())
    customers = sum(r["n"] for r in per_customer)
    result.rows_in = customers
    recommended = sorted((r for r in per_customer if r["reason"] is None), key=lambda r: r["plan"])
    reasons = Counter({r["reason"]: r["n"] for r in per_customer if r["reason"] is not None})
    result.notes.append(
        f"rate advisor: {customers:,} customers priced under {len(s.tariff.plans)} plans; "
        + (", ".join(f"{r['plan']} recommended to {r['n']:,} (saving {r['saving']:,.0f} CNY/yr in all)"
                     for r in recommended) or "no plan recommended")
        + "; none: " + (", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items())) or "-"))

    # A window shorter than the comparison period compares the window (period_first says which days).
    period_days = min(s.neighbours.period_days, ctx.window_days)
    peers = NB.neighbour_comparison(daily, archive, params=s.neighbours, as_of=ctx.as_of, period_days=period_days,
                                    checkpoint=_local)
    check_schema(NEIGHBOUR_COMPARISON.name, NEIGHBOUR_COMPARISON.schema, peers.schema)
    result.outputs[NEIGHBOUR_COMPARISON.name] = lake.replace(peers, NEIGHBOUR_COMPARISON,
                                                             where={"as_of": ctx.as_of}).rows
    stored = lake.read(NEIGHBOUR_COMPARISON.name).filter(F.col("as_of") == F.lit(ctx.as_of))
    rows = stored.groupBy("group_level", "state", "state_reason").count().collect()
    states = Counter()
    for r in rows:
        states[r["state"] or f"none ({r['state_reason']})"] += r["count"]
    levels = Counter()
    for r in rows:
        if r["group_level"] is not None:
            levels[r["group_level"]] += r["count"]
    result.notes.append(
        f"similar homes: {sum(states.values()):,} customers; "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(states.items()))
        + "; group level " + (", ".join(f"{k}: {v:,}" for k, v in sorted(levels.items())) or "none")
        + f" (min {s.neighbours.min_peers} peers)")
    return result
