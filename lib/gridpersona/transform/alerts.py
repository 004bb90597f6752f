"""Mid-cycle alerts: a projected bill over its threshold, or a run of near-zero days, once per bill period.

A bill period is the calendar month in ``ami.time_zone`` (as in :mod:`gridpersona.transform.pricing`). For a
day ``t`` of a period that starts on ``S`` and has ``D`` days, with ``e = t - S + 1`` days elapsed, ``c`` of
them complete (completeness >= ``alerts.min_completeness``) and ``D - e`` days left, the period's kWh of each
tariff period ``p`` is projected as

    projected_p = observed_p + (e - c + D - e) x recent_p

where ``observed_p`` is the kWh of the complete days so far and ``recent_p`` the mean kWh of the complete days
among the ``alerts.recent_days`` calendar days ending on ``t`` (they may reach into the previous month). The
projection is rounded to 6 decimals and priced on the customer's current plan for the whole period
(:func:`gridpersona.transform.pricing.bill_by_plan` with ``w = D``). The baseline is the bill of the same
month a year earlier, else (``alerts.baseline_months`` > 0) the mean of that many bills before the period; the
threshold is ``max(ratio x baseline, baseline + min_increase_cny)``, both to the cent.

:func:`alert_candidates` evaluates every day of a run in one pass (window functions over a meter x day grid)
and keeps each customer's first crossing day per alert type and period; :func:`drop_alerted` removes the
ones an earlier run already stored. Only customers whose do_not_contact is false are considered: true or
unknown consent gets no row at all.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gridpersona.config import AlertsConfig, TariffConfig
from gridpersona.contracts.advice import ALERT_TARGETS
from gridpersona.transform.holdout import ab_group_col
from gridpersona.transform.pricing import KWH_SCALE, KWH_TYPE, MONEY_TYPE, PERIODS, period_kwh_columns, \
    bill_by_plan

# Holdout ids of the two alert types (transform/holdout.py): a customer's arm is fixed per type.
HOLDOUT_IDS = {"bill_projection": "bill_alert", "vacancy": "vacancy_alert"}


def period_start(day: dt.date) -> dt.date:
    """First day of the bill period (calendar month) holding ``day``."""
    return day.replace(day=1)


def read_from(days: list[dt.date], params: AlertsConfig) -> dt.date:
    """First day of silver.daily_load_shape the projections of ``days`` need: the earliest period start,
    less the recent-rate look-back."""
    return min(period_start(d) for d in days) - dt.timedelta(days=params.recent_days - 1)


def contactable_customers(archive: DataFrame, tariff: TariffConfig) -> DataFrame:
    """Archive customers with a meter and consent (do_not_contact false; true or null never), with their
    current plan (``plan_id``, null when ``tariff.current_plan`` does not map their type and tariff).

    ``archive``: customer_id, meter_id, customer_type, tariff_type, do_not_contact, account_close_date.
    Returns customer_id, meter_id, plan_id, account_close_date.
    """
    current = [(t, tt, pid) for t, mapping in tariff.current_plan.items() for tt, pid in mapping.items()]
    current_df = archive.sparkSession.createDataFrame(
        current, "customer_type string, tariff_type string, plan_id string")
    return (archive.filter(F.col("meter_id").isNotNull() & (F.col("do_not_contact") == F.lit(False)))
            .join(F.broadcast(current_df), ["customer_type", "tariff_type"], "left")
            .select("customer_id", "meter_id", "plan_id", "account_close_date"))


def bill_baselines(billing: DataFrame, periods: list[dt.date], months: int) -> DataFrame:
    """(customer_id, period_start) -> baseline_cny decimal(14,2), baseline_source, from bronze.billing_payment.

    The bill of the month a year before the period when there is one (with an amount), else the mean of the
    customer's last ``months`` bills before the period (0: no such fallback), half-up to the cent; a
    customer without either has no row.
    """
    spark = billing.sparkSession
    starts = spark.createDataFrame([(p,) for p in sorted(set(periods))], "period_start date")
    bills = (billing.filter(F.col("bill_amount_cny").isNotNull())
             .select("customer_id", "bill_month",
                     F.round(F.col("bill_amount_cny").cast(T.DecimalType(16, 4)), 2).cast(MONEY_TYPE).alias("amount"))
             .join(F.broadcast(starts), F.col("bill_month") < F.col("period_start")))
    latest = Window.partitionBy("customer_id", "period_start").orderBy(F.col("bill_month").desc())
    ranked = bills.withColumn("_rank", F.row_number().over(latest))
    agg = ranked.groupBy("customer_id", "period_start").agg(
        F.max(F.when(F.col("bill_month") == F.add_months(F.col("period_start"), -12), F.col("amount"))).alias("_same"),
        F.avg(F.when(F.col("_rank") <= months, F.col("amount"))).alias("_mean"))
    return agg.select(
        "customer_id", "period_start",
        F.coalesce(F.col("_same"), F.round(F.col("_mean"), 2).cast(MONEY_TYPE)).cast(MONEY_TYPE).alias("baseline_cny"),
        F.when(F.col("_same").isNotNull(), F.lit("same_month_last_year"))
        .otherwise(F.lit("recent_bills_mean")).alias("baseline_source")).filter(F.col("baseline_cny").isNotNull())


def _money_lit(value: Decimal) -> Column:
    return F.lit(value).cast(T.DecimalType(12, max(0, -value.as_tuple().exponent)))


def daily_progress(daily: DataFrame, customers: DataFrame, *, masks: dict[str, list[float]],
                   params: AlertsConfig, near_zero_kwh: float, days: list[dt.date]) -> DataFrame:
    """One row per (customer, day of ``days``): the period so far and its projection in kWh.

    ``daily``: silver.daily_load_shape rows (meter_id, date, slot_kwh, daily_kwh, completeness) from
    :func:`read_from` to the last of ``days``; ``customers`` from :func:`contactable_customers`. Returns
    customer_id, plan_id, account_close_date, date, period_start, period_end, days_in_period, days_elapsed,
    days_left, complete_days, kwh_so_far, kwh_<period> so far, projected_<period> decimal(18,6),
    projected_kwh, near_zero_run_days.
    """
    spark = daily.sparkSession
    first, last = read_from(days, params), max(days)
    grid_days = spark.createDataFrame([(first + dt.timedelta(days=i),) for i in range((last - first).days + 1)],
                                      "date date")
    meters = customers.select("meter_id").distinct()
    complete = F.col("completeness") >= F.lit(float(params.min_completeness))
    per_day = period_kwh_columns(F.col("slot_kwh"), masks)
    observed = (daily.filter(F.col("date").between(first, last))
                .select("meter_id", "date", complete.alias("complete"),
                        *[F.when(complete, c).alias(f"d_{p}") for p, c in per_day.items()],
                        F.when(complete, F.col("daily_kwh") < F.lit(float(near_zero_kwh))).alias("near_zero")))
    # Every day of every meter, read or not: a missing day is projected like a day still to come.
    grid = (meters.crossJoin(F.broadcast(grid_days)).join(observed, ["meter_id", "date"], "left")
            .withColumn("period_start", F.trunc("date", "month"))
            .withColumn("complete", F.coalesce(F.col("complete"), F.lit(False))))

    so_far = Window.partitionBy("meter_id", "period_start").orderBy("date").rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    # The grid has one row per calendar day, so N rows back is N calendar days back.
    recent = Window.partitionBy("meter_id").orderBy("date").rowsBetween(-(params.recent_days - 1), Window.currentRow)
    nz = F.col("near_zero") & F.col("complete")
    grid = grid.select(
        "meter_id", "date", "period_start", "complete", "near_zero",
        *[F.coalesce(F.sum(f"d_{p}").over(so_far), F.lit(0.0)).alias(f"kwh_{p}") for p in PERIODS],
        *[F.avg(f"d_{p}").over(recent).alias(f"recent_{p}") for p in PERIODS],
        F.count(F.when(F.col("complete"), 1)).over(so_far).cast("int").alias("complete_days"),
        F.count(F.when(nz, 1)).over(so_far).alias("_nz_count"))
    # The run of near-zero complete days ending on the day: near-zero days since the last complete day that
    # was not near-zero (the count is non-decreasing, so its max at such days is its value at the last one).
    grid = grid.withColumn("_nz_at_break", F.max(F.when(F.col("complete") & ~F.col("near_zero"), F.col("_nz_count")))
                           .over(so_far))

    elapsed = F.datediff(F.col("date"), F.col("period_start")) + 1
    month_days = F.dayofmonth(F.last_day(F.col("date")))
    out = (grid.filter(F.col("date").isin(list(days)))
           .withColumn("days_in_period", month_days.cast("int"))
           .withColumn("days_elapsed", elapsed.cast("int"))
           .withColumn("days_left", (F.col("days_in_period") - F.col("days_elapsed")).cast("int"))
           .withColumn("_to_project", F.col("days_in_period") - F.col("complete_days")))
    projected = {p: F.round(F.col(f"kwh_{p}") + F.col("_to_project") * F.col(f"recent_{p}"), KWH_SCALE
                            ).cast(KWH_TYPE) for p in PERIODS}
    out = out.select(
        "meter_id", "date", "period_start", F.last_day("date").alias("period_end"), "days_in_period",
        "days_elapsed", "days_left", "complete_days",
        *[F.col(f"kwh_{p}") for p in PERIODS],
        F.round(F.col("kwh_peak") + F.col("kwh_flat") + F.col("kwh_valley"), KWH_SCALE).alias("kwh_so_far"),
        *[c.alias(f"projected_{p}") for p, c in projected.items()],
        (F.col("_nz_count") - F.coalesce(F.col("_nz_at_break"), F.lit(0))).cast("int").alias("near_zero_run_days"))
    out = out.withColumn("projected_kwh", (F.col("projected_peak") + F.col("projected_flat")
                                           + F.col("projected_valley")).cast("double"))
    return customers.join(out, "meter_id").drop("meter_id")


def priced_progress(progress: DataFrame, baselines: DataFrame, *, tariff: TariffConfig,
                    params: AlertsConfig) -> DataFrame:
    """:func:`daily_progress` rows with projected_bill_cny (the projection priced on ``plan_id`` for the
    whole period), the baseline of :func:`bill_baselines` and threshold_cny, all decimal(14,2)."""
    bill = bill_by_plan(tariff, F.col("plan_id"), {p: F.col(f"projected_{p}") for p in PERIODS},
                        F.col("days_in_period"), F.col("days_in_period"))
    ratio = Decimal(str(params.ratio))
    threshold = F.greatest(F.round(F.col("baseline_cny") * _money_lit(ratio), 2),
                           F.col("baseline_cny") + _money_lit(params.min_increase_cny))
    # Guarded: the tiered column's least()/greatest() skip nulls, so an unknown projection would price as
    # if the blocks were full.
    known = F.col("projected_peak").isNotNull() & F.col("projected_flat").isNotNull() \
        & F.col("projected_valley").isNotNull()
    return (progress.join(baselines, ["customer_id", "period_start"], "left")
            .withColumn("projected_bill_cny", F.when(known, bill).cast(MONEY_TYPE))
            .withColumn("threshold_cny", threshold.cast(MONEY_TYPE)))


def alert_candidates(priced: DataFrame, *, params: AlertsConfig) -> DataFrame:
    """The first crossing day of each (customer, alert type, period) among :func:`priced_progress` rows, as
    rows of gold.alert_targets.

    ``bill_projection``: ``days_elapsed >= params.min_days_elapsed`` and projected bill >= threshold (a
    known plan, projection and baseline). ``vacancy``: ``near_zero_run_days >= params.vacancy_run_days``. A
    closed account (``account_close_date`` before the day) is not alerted.
    """
    open_account = F.col("account_close_date").isNull() | (F.col("date") <= F.col("account_close_date"))
    bill = (F.col("days_elapsed") >= params.min_days_elapsed) & (F.col("projected_bill_cny") >= F.col("threshold_cny"))
    vacancy = F.col("near_zero_run_days") >= params.vacancy_run_days
    crossed = priced.filter(open_account).withColumn(
        "_types", F.array_compact(F.array(F.when(bill, F.lit("bill_projection")),
                                          F.when(vacancy, F.lit("vacancy")))))
    rows = crossed.filter(F.size("_types") > 0).withColumn("alert_type", F.explode("_types"))
    first = Window.partitionBy("customer_id", "alert_type", "period_start").orderBy("date")
    rows = rows.withColumn("_n", F.row_number().over(first)).filter(F.col("_n") == 1)
    holdout = F.when(F.col("alert_type") == "bill_projection", F.lit(HOLDOUT_IDS["bill_projection"])
                     ).otherwise(F.lit(HOLDOUT_IDS["vacancy"]))
    rows = rows.withColumn("ab_group", ab_group_col("customer_id", holdout, params.holdout_share))
    return rows.select(
        F.col("date").alias("alert_date"), "customer_id", "alert_type", "period_start", "period_end",
        "days_elapsed", "days_left", "complete_days", F.col("kwh_so_far").cast("double").alias("kwh_so_far"),
        "projected_kwh", "plan_id", "projected_bill_cny", "baseline_cny", "baseline_source", "threshold_cny",
        "near_zero_run_days", "ab_group")


def drop_alerted(candidates: DataFrame, stored: DataFrame) -> DataFrame:
    """``candidates`` without the (customer, alert type, period) that ``stored`` (gold.alert_targets rows
    the run keeps, i.e. outside the partitions it replaces) already holds: at most one alert per period."""
    seen = stored.select("customer_id", "alert_type", "period_start").distinct()
    return candidates.join(seen, ["customer_id", "alert_type", "period_start"], "left_anti").select(
        *ALERT_TARGETS.column_names)
