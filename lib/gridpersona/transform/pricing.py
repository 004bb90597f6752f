"""Prices: a customer's bill under each tariff plan, from their own slot kWh (the rate advisor).

A bill period is a calendar month in ``ami.time_zone``. For a month ``m`` of the window with ``D`` calendar
days, ``w`` of them inside the window and ``u`` priced days (complete enough), the month's kWh per tariff
period is estimated as ``observed × D / u`` (rounded to 6 decimals) and the month is billed at
``round_half_up(price(estimate) × w / D, 2)``: a partial month pays its share of a whole month's bill, so a
tiered plan's blocks apply to the month's full consumption. A window bill is the sum of its months; the annual
bill is ``window bill × 365 / window days``. Money is exact ``decimal``: :func:`plan_bill` in Python,
:func:`plan_bill_column` the same arithmetic as a Spark column.

:func:`rate_comparison` builds gold.rate_comparison from silver.daily_load_shape and the archive.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gridpersona.config import RateAdvisorConfig, TariffConfig, TariffPlan

PERIODS = ("peak", "flat", "valley")
CENT = Decimal("0.01")
KWH_SCALE = 6
KWH_TYPE = T.DecimalType(18, KWH_SCALE)
MONEY_TYPE = T.DecimalType(14, 2)
REASONS = ("insufficient_data", "current_plan_unknown", "already_cheapest", "saving_below_min")


def tariff_version(tariff: TariffConfig) -> str:
    """Short hash of the periods and plans: a row priced under other prices says so."""
    blob = json.dumps(tariff.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def eligible_plans(tariff: TariffConfig, customer_type: str | None) -> list[TariffPlan]:
    return [p for p in tariff.plans if customer_type in p.customer_types]


def current_plan_id(tariff: TariffConfig, customer_type: str | None, tariff_type: str | None) -> str | None:
    """The plan a customer is billed on now; None when the archive does not say (unknown, never a guess)."""
    return tariff.current_plan.get(customer_type or "", {}).get(tariff_type or "")


# ------------------------------------------------------------------ exact Python arithmetic

def plan_charge(plan: TariffPlan, kwh: dict[str, Decimal]) -> Decimal:
    """A whole bill period's charge (unrounded, exact) for ``kwh`` = {period: kWh of the period}."""
    total = sum((kwh[p] for p in PERIODS), Decimal(0))
    if plan.kind == "flat":
        return total * plan.price
    if plan.kind == "tou":
        return sum((kwh[p] * plan.prices[p] for p in PERIODS), Decimal(0))
    charge, lower = Decimal(0), Decimal(0)
    for block in plan.blocks:
        upper = block.up_to_kwh
        in_block = max(Decimal(0), (total if upper is None else min(total, upper)) - lower)
        charge += in_block * block.price
        if upper is None or total <= upper:
            break
        lower = upper
    return charge


def month_estimate(observed_kwh: float, days_in_month: int, days_used: int) -> Decimal:
    """The month's kWh of one period from ``days_used`` priced days: observed × D / u, to 6 decimals."""
    return Decimal(repr(observed_kwh * days_in_month / days_used)).quantize(Decimal(1).scaleb(-KWH_SCALE),
                                                                             ROUND_HALF_UP)


def plan_bill(plan: TariffPlan, kwh: dict[str, Decimal], days_in_window: int, days_in_month: int) -> Decimal:
    """One month's bill in CNY for its ``days_in_window`` days: charge(kWh) × w / D, half-up to the cent."""
    return (plan_charge(plan, kwh) * days_in_window / days_in_month).quantize(CENT, ROUND_HALF_UP)


# ------------------------------------------------------------------ the same as Spark columns

def _lit(value: Decimal) -> Column:
    return F.lit(value).cast(T.DecimalType(12, max(0, -value.as_tuple().exponent)))


# A charge is exact at 10 decimals: kWh has 6 and a price at most 4 (config validation). Every term is cast to
# this type before it is added, so Spark's decimal precision never overflows into a loss of scale.
CHARGE_TYPE = T.DecimalType(30, KWH_SCALE + 4)


def plan_charge_column(plan: TariffPlan, kwh: dict[str, Column]) -> Column:
    """:func:`plan_charge` over decimal(18,6) kWh columns: exact decimal arithmetic in Spark, decimal(30,10)."""
    total = kwh["peak"] + kwh["flat"] + kwh["valley"]
    if plan.kind == "flat":
        return (total * _lit(plan.price)).cast(CHARGE_TYPE)
    if plan.kind == "tou":
        terms = [(kwh[p] * _lit(plan.prices[p])).cast(CHARGE_TYPE) for p in PERIODS]
        return (terms[0] + terms[1] + terms[2]).cast(CHARGE_TYPE)
    charge, lower = None, Decimal(0)
    zero = F.lit(0).cast(KWH_TYPE)
    for block in plan.blocks:
        top = total if block.up_to_kwh is None else F.least(total, _lit(block.up_to_kwh))
        part = (F.greatest(zero, top - _lit(lower)) * _lit(block.price)).cast(CHARGE_TYPE)
        charge = part if charge is None else (charge + part).cast(CHARGE_TYPE)
        lower = block.up_to_kwh
    # least/greatest skip nulls: unknown kWh must stay an unknown charge, not the full blocks.
    return F.when(total.isNotNull(), charge)


def plan_bill_column(plan: TariffPlan, kwh: dict[str, Column], days_in_window: Column, days_in_month: Column
                     ) -> Column:
    """:func:`plan_bill` as a column: the exact charge × w / D, half-up to the cent.

    The quotient is carried at 12 decimals (Spark's rule for decimal(36,10) / decimal(2,0)); a charge × w
    with 10 decimals divided by D <= 31 is never within 1e-12 of a half cent unless exactly on it, so the
    cent equals the exact half-up rounding of :func:`plan_bill`."""
    charge = plan_charge_column(plan, kwh) * days_in_window.cast(T.DecimalType(5, 0))
    return F.round(charge / days_in_month.cast(T.DecimalType(2, 0)), 2).cast(MONEY_TYPE)


def bill_by_plan(tariff: TariffConfig, plan_id: Column, kwh: dict[str, Column], days_in_window: Column,
                 days_in_month: Column) -> Column:
    """:func:`plan_bill_column` of the plan a row names in ``plan_id`` (null for a plan not in ``tariff``)."""
    bill = None
    for plan in tariff.plans:
        expr = plan_bill_column(plan, kwh, days_in_window, days_in_month)
        bill = F.when(plan_id == plan.id, expr) if bill is None else bill.when(plan_id == plan.id, expr)
    return bill if bill is not None else F.lit(None).cast(MONEY_TYPE)


def period_kwh_columns(slot_kwh: Column, masks: dict[str, list[float]]) -> dict[str, Column]:
    """{period: the day's kWh in the period}: the slots of its mask added in slot order (a fixed order)."""
    out = {}
    for period in PERIODS:
        mask = F.array(*[F.lit(bool(m)) for m in masks[period]])
        out[period] = F.aggregate(F.zip_with(slot_kwh, mask, lambda x, m: F.when(m, x).otherwise(F.lit(0.0))),
                                  F.lit(0.0), lambda acc, x: acc + x)
    return out


def open_accounts(archive: DataFrame, as_of: dt.date) -> DataFrame:
    """The archive rows of accounts open on ``as_of``: an account closed on or before it is advised nothing
    (and is nobody's peer); a null close date is an open account."""
    return archive.filter(F.col("account_close_date").isNull() | (F.col("account_close_date") > F.lit(as_of)))


def window_months(first: dt.date, last: dt.date) -> list[tuple[dt.date, int, int]]:
    """[(month start, window days in it, calendar days of it)] for the months ``first .. last`` touches."""
    out, day = [], first.replace(day=1)
    while day <= last:
        dim = calendar.monthrange(day.year, day.month)[1]
        end = day.replace(day=dim)
        out.append((day, (min(end, last) - max(day, first)).days + 1, dim))
        day = end + dt.timedelta(days=1)
    return out


def rate_comparison(daily: DataFrame, archive: DataFrame, *, tariff: TariffConfig, params: RateAdvisorConfig,
                    masks: dict[str, list[float]], first: dt.date, last: dt.date, as_of: dt.date,
                    checkpoint: Callable[[DataFrame], DataFrame] = lambda df: df) -> DataFrame:
    """gold.rate_comparison: one row per archive customer (with a meter and a known customer type) and plan
    the customer is eligible for. ``checkpoint`` materializes the per meter-month sums (the stage passes a
    local checkpoint).

    ``daily``: silver.daily_load_shape rows of the window (meter_id, date, slot_kwh, completeness);
    ``archive``: customer_id, meter_id, customer_type, tariff_type, account_close_date (accounts closed
    by ``as_of`` are left out). Days below ``params.min_completeness``
    are not priced; a month without a priced day is not billed, and the window's bill covers the months
    that are (``days_in_window``). A recommendation needs ``params.min_days`` priced days, a known current
    plan, and an annual saving of at least ``params.min_saving_cny``; otherwise ``reason`` says which failed.
    """
    months = window_months(first, last)
    month_rows = daily.sparkSession.createDataFrame(
        [(m, w, d) for m, w, d in months], "month date, window_days int, month_days int")
    per_day = period_kwh_columns(F.col("slot_kwh"), masks)
    priced = (daily.filter(F.col("date").between(first, last) & (F.col("completeness") >= params.min_completeness))
              .select("meter_id", F.trunc("date", "month").alias("month"),
                      *[c.alias(f"kwh_{p}") for p, c in per_day.items()]))
    by_month = (priced.groupBy("meter_id", "month")
                .agg(F.count(F.lit(1)).cast("int").alias("days_used"),
                     *[F.sum(f"kwh_{p}").alias(f"kwh_{p}") for p in PERIODS])
                .join(F.broadcast(month_rows), "month"))
    est = {p: F.round(F.col(f"kwh_{p}") * F.col("month_days") / F.col("days_used"), KWH_SCALE).cast(KWH_TYPE)
           for p in PERIODS}
    by_month = checkpoint(by_month).select("meter_id", "month", "days_used", "window_days", "month_days",
                               *[F.col(f"kwh_{p}") for p in PERIODS], *[c.alias(f"est_{p}") for p, c in est.items()])

    customers = open_accounts(archive, as_of).filter(
        F.col("meter_id").isNotNull() & F.col("customer_type").isNotNull()).select(
        "customer_id", "meter_id", "customer_type", "tariff_type")
    plan_rows = [(p.id, p.kind, t) for p in tariff.plans for t in p.customer_types]
    plans = daily.sparkSession.createDataFrame(plan_rows, "plan_id string, plan_kind string, customer_type string")
    current = [(t, tt, pid) for t, mapping in tariff.current_plan.items() for tt, pid in mapping.items()]
    current_df = daily.sparkSession.createDataFrame(
        current, "customer_type string, tariff_type string, current_plan_id string")
    cust_plans = (customers.join(F.broadcast(plans), "customer_type")
                  .join(F.broadcast(current_df), ["customer_type", "tariff_type"], "left"))

    bill = bill_by_plan(tariff, F.col("plan_id"), {p: F.col(f"est_{p}") for p in PERIODS},
                        F.col("window_days"), F.col("month_days"))
    monthly = cust_plans.join(by_month, "meter_id", "left").withColumn("month_bill", bill)
    agg = (monthly.groupBy("customer_id", "customer_type", "tariff_type", "plan_id", "plan_kind", "current_plan_id")
           .agg(F.sum("window_days").cast("int").alias("days_in_window"),
                F.coalesce(F.sum("days_used"), F.lit(0)).cast("int").alias("days_used"),
                *[F.round(F.sum(f"kwh_{p}"), KWH_SCALE).alias(f"kwh_{p}") for p in PERIODS],
                F.sum("month_bill").cast(MONEY_TYPE).alias("window_bill_cny")))
    annual = F.round(F.col("window_bill_cny") * F.lit(365) / F.col("days_in_window").cast(T.DecimalType(6, 0)),
                     2).cast(MONEY_TYPE)
    agg = agg.withColumn("annual_bill_cny", annual)

    per_customer = Window.partitionBy("customer_id")
    # Ties: the current plan first (a switch that saves nothing is no advice), then the plan id.
    rank_order = Window.partitionBy("customer_id").orderBy(
        F.col("annual_bill_cny").asc_nulls_last(),
        F.coalesce(F.col("plan_id") == F.col("current_plan_id"), F.lit(False)).desc(), F.col("plan_id"))
    current_annual = F.max(F.when(F.col("plan_id") == F.col("current_plan_id"), F.col("annual_bill_cny"))
                           ).over(per_customer)
    enough = F.col("days_used") >= params.min_days
    out = (agg.withColumn("cost_rank", F.when(F.col("annual_bill_cny").isNotNull(), F.row_number().over(rank_order)))
           .withColumn("current_annual", current_annual)
           .withColumn("annual_saving_cny", (F.col("current_annual") - F.col("annual_bill_cny")).cast(MONEY_TYPE)))
    best = F.first(F.when(F.col("cost_rank") == 1, F.struct("plan_id", "annual_saving_cny")), ignorenulls=True
                   ).over(per_customer.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing))
    out = out.withColumn("best", best)
    reason = (F.when(~enough | F.col("best").isNull(), F.lit("insufficient_data"))
              .when(F.col("current_plan_id").isNull(), F.lit("current_plan_unknown"))
              .when((F.col("best.plan_id") == F.col("current_plan_id")) | (F.col("best.annual_saving_cny") <= 0),
                    F.lit("already_cheapest"))
              .when(F.col("best.annual_saving_cny") < F.lit(params.min_saving_cny).cast(MONEY_TYPE),
                    F.lit("saving_below_min")))
    out = out.withColumn("reason", reason)
    return out.select(
        F.lit(as_of).cast("date").alias("as_of"), "customer_id", "customer_type", "plan_id", "plan_kind",
        F.when(F.col("current_plan_id").isNotNull(), F.col("plan_id") == F.col("current_plan_id")
               ).alias("is_current_plan"),
        F.lit(first).cast("date").alias("window_first"), F.lit(last).cast("date").alias("window_last"),
        F.coalesce("days_in_window", F.lit(0)).cast("int").alias("days_in_window"), "days_used",
        *[F.col(f"kwh_{p}") for p in PERIODS],
        "window_bill_cny", "annual_bill_cny", "current_plan_id",
        F.when(F.col("current_plan_id").isNotNull(), F.col("annual_saving_cny")).alias("annual_saving_cny"),
        "cost_rank",
        F.when(F.col("reason").isNull(), F.col("best.plan_id")).alias("recommended_plan_id"),
        F.when(F.col("reason").isNull(), F.col("best.annual_saving_cny")).alias("recommended_saving_cny"),
        "reason", F.lit(tariff_version(tariff)).alias("tariff_version"))
