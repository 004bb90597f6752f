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
threshold is ``max(ratio x B, B + min_increase_cny)``, both to the cent, where ``B`` is the baseline scaled
(``alerts.baseline_adjust``) by a weather factor, a peer factor, both or neither:

- weather factor (:func:`with_weather_factor`): each customer's own least-squares fit of kWh/day of a bill
  month on the month's mean heating and cooling degree-days (bronze.weather of the customer's region, at
  least ``alerts.weather_min_bills`` bills), predicted at the current period's degree-days so far over
  predicted at the baseline month's, clipped. A customer who heats or cools more than the others gets a
  larger factor in a colder or hotter month; a bill shock is not in the weather.
- peer factor (:func:`peer_factors`): the median, over the customers of the same archive ``region`` (a null
  region: everyone) with a baseline and a projected bill that day, of projected bill / baseline (the
  weather-adjusted baseline with both). A hotter month or a year's growth moves everyone's projection and so
  the median; a bill shock moves one customer's and barely the median. With fewer than ``alerts.min_peers``
  such customers the factor is null.

A null factor leaves ``B`` unscaled by it.

:func:`alert_candidates` evaluates every day of a run in one pass (window functions over a meter x day grid)
and keeps each customer's first crossing day per alert type and period; :func:`drop_alerted` removes the
ones an earlier run already stored. Only customers whose do_not_contact is false are considered: true or
unknown consent gets no row at all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gridpersona.config import AlertsConfig, TariffConfig
from gridpersona.contracts.advice import ALERT_TARGETS
from gridpersona.transform.features import degree_days
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
    Returns customer_id, meter_id, region, plan_id, account_close_date.
    """
    current = [(t, tt, pid) for t, mapping in tariff.current_plan.items() for tt, pid in mapping.items()]
    current_df = archive.sparkSession.createDataFrame(
        current, "customer_type string, tariff_type string, plan_id string")
    return (archive.filter(F.col("meter_id").isNotNull() & (F.col("do_not_contact") == F.lit(False)))
            .join(F.broadcast(current_df), ["customer_type", "tariff_type"], "left")
            .select("customer_id", "meter_id", "region", "plan_id", "account_close_date"))


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
                   params: AlertsConfig, near_zero_kwh: float, days: list[dt.date],
                   holiday_dates: frozenset[dt.date] | set[dt.date] = frozenset()) -> DataFrame:
    """One row per (customer, day of ``days``): the period so far and its projection in kWh.

    ``holiday_dates``: days in a holiday period (from :func:`read_from` to the last of ``days``), which
    the near-zero run neither extends nor breaks, like incomplete days: a household away over a holiday
    is not vacant, and a vacant premise's run goes on across it.

    ``daily``: silver.daily_load_shape rows (meter_id, date, slot_kwh, daily_kwh, completeness) from
    :func:`read_from` to the last of ``days``; ``customers`` from :func:`contactable_customers`. Returns
    customer_id, region, plan_id, account_close_date, date, period_start, period_end, days_in_period, days_elapsed,
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
    counted = F.col("complete") & ~F.col("date").isin(sorted(holiday_dates)) if holiday_dates else F.col("complete")
    nz = F.col("near_zero") & counted
    grid = grid.select(
        "meter_id", "date", "period_start", "complete", "near_zero",
        *[F.coalesce(F.sum(f"d_{p}").over(so_far), F.lit(0.0)).alias(f"kwh_{p}") for p in PERIODS],
        *[F.avg(f"d_{p}").over(recent).alias(f"recent_{p}") for p in PERIODS],
        F.count(F.when(F.col("complete"), 1)).over(so_far).cast("int").alias("complete_days"),
        F.count(F.when(nz, 1)).over(so_far).alias("_nz_count"))
    # The run of near-zero complete days ending on the day: near-zero days since the last complete day that
    # was not near-zero (the count is non-decreasing, so its max at such days is its value at the last one).
    grid = grid.withColumn("_nz_at_break", F.max(F.when(counted & ~F.col("near_zero"), F.col("_nz_count")))
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


def priced_bills(progress: DataFrame, baselines: DataFrame, *, tariff: TariffConfig) -> DataFrame:
    """:func:`daily_progress` rows with projected_bill_cny (the projection priced on ``plan_id`` for the
    whole period) and the baseline of :func:`bill_baselines` (baseline_cny, baseline_source), decimal(14,2)."""
    bill = bill_by_plan(tariff, F.col("plan_id"), {p: F.col(f"projected_{p}") for p in PERIODS},
                        F.col("days_in_period"), F.col("days_in_period"))
    # Guarded: the tiered column's least()/greatest() skip nulls, so an unknown projection would price as
    # if the blocks were full.
    known = F.col("projected_peak").isNotNull() & F.col("projected_flat").isNotNull() \
        & F.col("projected_valley").isNotNull()
    return (progress.join(baselines, ["customer_id", "period_start"], "left")
            .withColumn("projected_bill_cny", F.when(known, bill).cast(MONEY_TYPE)))


FACTOR_TYPE = T.DecimalType(12, 6)


def peer_factors(bills: DataFrame, *, params: AlertsConfig) -> DataFrame:
    """The peer factor of each (date, region) of :func:`priced_bills` rows, and of everyone (``region`` null).
    With a ``weather_factor`` column (:func:`with_weather_factor`) the ratios are projected bill / (baseline x
    weather factor, 1 when null).

    Returns date, region (null: every customer, what a customer without a region uses), peers (customers with
    a projected bill and a baseline > 0), peer_factor (the median of their projected bill / baseline, to 6
    decimals; null when peers < ``params.min_peers``). One aggregation (a rollup) over the rows.
    """
    base = F.col("baseline_cny")
    if "weather_factor" in bills.columns:
        # weather_peer: the peers' median of what the weather leaves unexplained (growth, a region-wide change).
        base = base * F.coalesce(F.col("weather_factor"), F.lit(1.0))
    ratio = F.when(F.col("baseline_cny") > 0, F.col("projected_bill_cny") / base).cast("double")
    agg = (bills.withColumn("_ratio", ratio).filter(F.col("_ratio").isNotNull())
           .rollup("date", "region")
           .agg(F.grouping("region").alias("_everyone"), F.count(F.lit(1)).alias("peers"),
                F.median("_ratio").alias("_median"))
           # The rollup's grand total (no date) is no group; a null region of its own is covered by everyone.
           .filter(F.col("date").isNotNull() & (F.col("region").isNotNull() | (F.col("_everyone") == 1))))
    return agg.select("date", "region", "peers", F.when(
        F.col("peers") >= params.min_peers, F.round("_median", 6)).alias("peer_factor"))


def with_threshold(bills: DataFrame, factors: DataFrame | None, *, params: AlertsConfig) -> DataFrame:
    """:func:`priced_bills` rows with peer_factor (double; from ``factors`` of :func:`peer_factors`, by date and
    region, everyone's for a null region; null with ``factors`` None), weather_factor (kept from
    :func:`with_weather_factor`, else null) and threshold_cny decimal(14,2): max(ratio x B, B +
    min_increase_cny), B = baseline x weather_factor x peer_factor to the cent (a null factor counts 1)."""
    if factors is None:
        out = bills.withColumn("peer_factor", F.lit(None).cast("double"))
    else:
        small = F.broadcast(factors.select("date", "region", "peer_factor"))
        by_region = small.filter(F.col("region").isNotNull())
        everyone = small.filter(F.col("region").isNull()).select("date", F.col("peer_factor").alias("_all"))
        out = (bills.join(by_region, ["date", "region"], "left").join(everyone, "date", "left")
               .withColumn("peer_factor", F.when(F.col("region").isNull(), F.col("_all"))
                           .otherwise(F.col("peer_factor")).cast("double")).drop("_all"))
        # No baseline, no factor: nothing was scaled.
        out = out.withColumn("peer_factor", F.when(F.col("baseline_cny").isNotNull(), F.col("peer_factor")))
    if "weather_factor" not in out.columns:
        out = out.withColumn("weather_factor", F.lit(None).cast("double"))
    factor = (F.coalesce(F.col("weather_factor"), F.lit(1.0)).cast(FACTOR_TYPE)
              * F.coalesce(F.col("peer_factor"), F.lit(1.0)).cast(FACTOR_TYPE))
    base = F.round(F.col("baseline_cny") * factor, 2).cast(MONEY_TYPE)
    ratio = Decimal(str(params.ratio))
    threshold = F.greatest(F.round(base * _money_lit(ratio), 2), base + _money_lit(params.min_increase_cny))
    return out.withColumn("threshold_cny", threshold.cast(MONEY_TYPE))


# Weather factor (alerts.baseline_adjust weather | weather_peer): each customer's own daily kWh of a bill month
# fitted on the month's mean daily heating and cooling degree-days, kWh/day = w0 + w1 x hdd + w2 x cdd, by
# least squares over the bills before the period. A tiny ridge on w1, w2 keeps the 3x3 solvable when a
# region never heats (or cools) in the history; it is far below any real sum of squares.
RIDGE = 1e-3


@dataclass(frozen=True)
class WeatherInputs:
    """What :func:`with_weather_factor` joins: ``fits`` (customer_id, period_start, fit_bills, w0, w1, w2),
    ``monthly`` (region, month, hdd_day, cdd_day) and ``current`` (region, date, hdd_day, cdd_day)."""
    fits: DataFrame
    monthly: DataFrame
    current: DataFrame


def daily_degree_days(weather: DataFrame, *, heating_base_c: float, cooling_base_c: float) -> DataFrame:
    """bronze.weather (region, date, temp_mean_c) -> region, date, hdd, cdd: max(0, heating base - mean),
    max(0, mean - cooling base); days without a temperature have no row."""
    t = F.col("temp_mean_c").cast("double")
    hdd, cdd = degree_days(F.col("_t"), heating_base_c, cooling_base_c)
    return (weather.filter(t.isNotNull() & F.col("region").isNotNull())
            .groupBy("region", "date").agg(F.avg(t).alias("_t"))
            .select("region", "date", hdd.alias("hdd"), cdd.alias("cdd")))


def monthly_degree_days(dd: DataFrame, *, min_coverage: float) -> DataFrame:
    """:func:`daily_degree_days` rows -> region, month (first day), hdd_day, cdd_day: the month's mean daily
    degree-days, for months with a temperature on at least ``min_coverage`` of their days (else no row)."""
    month = F.trunc("date", "month")
    g = dd.groupBy("region", month.alias("month")).agg(
        F.count(F.lit(1)).alias("_n"), F.avg("hdd").alias("hdd_day"), F.avg("cdd").alias("cdd_day"))
    return g.filter(F.col("_n") >= F.lit(float(min_coverage)) * F.dayofmonth(F.last_day("month"))).select(
        "region", "month", "hdd_day", "cdd_day")


def current_degree_days(dd: DataFrame, *, days: list[dt.date], params: AlertsConfig) -> DataFrame:
    """The period's mean daily degree-days as the projection sees them on each of ``days``: region, date,
    hdd_day, cdd_day = (sum over the period's days so far + (D - those days) x the mean of the last
    ``alerts.recent_days`` days) / D, D the days of the period, like the kWh projection (:func:`daily_progress`)
    extrapolates its recent rate. ``dd``: :func:`daily_degree_days` rows from :func:`read_from` on; a day
    with no temperature among the recent days: no row."""
    first, last = read_from(days, params), max(days)
    spark = dd.sparkSession
    grid_days = spark.createDataFrame([(first + dt.timedelta(days=i),) for i in range((last - first).days + 1)],
                                      "date date")
    grid = (dd.select("region").distinct().crossJoin(F.broadcast(grid_days))
            .join(dd.filter(F.col("date").between(first, last)), ["region", "date"], "left")
            .withColumn("period_start", F.trunc("date", "month")))
    so_far = Window.partitionBy("region", "period_start").orderBy("date").rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    recent = Window.partitionBy("region").orderBy("date").rowsBetween(-(params.recent_days - 1), Window.currentRow)
    month_days = F.dayofmonth(F.last_day("date"))
    out = grid.select("region", "date", month_days.alias("_d"), F.count("hdd").over(so_far).alias("_n"),
                      *[F.sum(c).over(so_far).alias(f"_s_{c}") for c in ("hdd", "cdd")],
                      *[F.avg(c).over(recent).alias(f"_r_{c}") for c in ("hdd", "cdd")])
    out = out.filter(F.col("date").isin(list(days)))
    return out.select("region", "date", *[
        ((F.coalesce(F.col(f"_s_{c}"), F.lit(0.0)) + (F.col("_d") - F.col("_n")) * F.col(f"_r_{c}")) / F.col("_d"))
        .alias(f"{c}_day") for c in ("hdd", "cdd")]).filter(F.col("hdd_day").isNotNull())


def weather_fits(billing: DataFrame, customers: DataFrame, monthly: DataFrame, periods: list[dt.date], *,
                 params: AlertsConfig) -> DataFrame:
    """Each customer's degree-day fit per period: customer_id, period_start, fit_bills, w0, w1, w2.

    ``billing``: bronze.billing_payment; ``customers``: :func:`contactable_customers` (its ``region``);
    ``monthly``: :func:`monthly_degree_days`. y = bill_kwh / days of the bill month, x = (1, hdd_day, cdd_day)
    of the customer's region that month, over the bills before the period with both; one groupBy of the
    normal-equation sums, the 3x3 solved in closed form (adjugate). Fewer than ``alerts.weather_min_bills``
    such bills (or a singular system): no row.
    """
    spark = billing.sparkSession
    starts = spark.createDataFrame([(p,) for p in sorted(set(periods))], "period_start date")
    y = F.col("bill_kwh").cast("double") / F.dayofmonth(F.last_day("bill_month"))
    rows = (billing.filter(F.col("bill_kwh").isNotNull())
            .select("customer_id", "bill_month", y.alias("y"))
            .join(customers.select("customer_id", "region"), "customer_id")
            .join(F.broadcast(monthly), (F.col("region") == F.col("m_region")) & (F.col("bill_month") == F.col("month")))
            .join(F.broadcast(starts), F.col("bill_month") < F.col("period_start")))
    h, c = F.col("hdd_day"), F.col("cdd_day")
    g = rows.groupBy("customer_id", "period_start").agg(
        F.count(F.lit(1)).alias("fit_bills"), F.sum(h).alias("sh"), F.sum(c).alias("sc"),
        F.sum(h * h).alias("shh"), F.sum(h * c).alias("shc"), F.sum(c * c).alias("scc"),
        F.sum("y").alias("sy"), F.sum(h * F.col("y")).alias("shy"), F.sum(c * F.col("y")).alias("scy"))
    g = g.filter(F.col("fit_bills") >= params.weather_min_bills)
    # [[a, b, c], [b, d, e], [c, e, f]] (symmetric) x w = (p, q, r).
    a, b, cc = F.col("fit_bills").cast("double"), F.col("sh"), F.col("sc")
    d, e, f = F.col("shh") + F.lit(RIDGE), F.col("shc"), F.col("scc") + F.lit(RIDGE)
    p, q, r = F.col("sy"), F.col("shy"), F.col("scy")
    A11, A12, A13 = d * f - e * e, cc * e - b * f, b * e - cc * d
    A22, A23, A33 = a * f - cc * cc, b * cc - a * e, a * d - b * b
    det = a * A11 + b * A12 + cc * A13
    g = g.withColumn("_det", det).filter(F.abs(F.col("_det")) > F.lit(1e-9))
    D_ = F.col("_det")
    return g.select("customer_id", "period_start", "fit_bills",
                    ((A11 * p + A12 * q + A13 * r) / D_).alias("w0"),
                    ((A12 * p + A22 * q + A23 * r) / D_).alias("w1"),
                    ((A13 * p + A23 * q + A33 * r) / D_).alias("w2"))


def weather_inputs(billing: DataFrame, customers: DataFrame, weather: DataFrame, *, days: list[dt.date],
                   params: AlertsConfig, heating_base_c: float, cooling_base_c: float,
                   min_coverage: float) -> WeatherInputs:
    """The three small frames :func:`with_weather_factor` needs, from bronze.billing_payment, the
    :func:`contactable_customers` and bronze.weather (degree-day bases and month coverage: the stage passes
    ``forecast.heating_base_c``, ``cooling_base_c``, ``min_weather_coverage``)."""
    dd = daily_degree_days(weather, heating_base_c=heating_base_c, cooling_base_c=cooling_base_c)
    monthly = monthly_degree_days(dd, min_coverage=min_coverage)
    periods = sorted({period_start(d) for d in days})
    fits = weather_fits(billing, customers, monthly.withColumnRenamed("region", "m_region"), periods,
                        params=params)
    return WeatherInputs(fits=fits, monthly=monthly,
                         current=current_degree_days(dd, days=days, params=params))


def with_weather_factor(bills: DataFrame, weather: WeatherInputs, *, params: AlertsConfig) -> DataFrame:
    """:func:`priced_bills` rows with weather_factor (double, 6 decimals): the customer's fit
    (:func:`weather_fits`) at the period's degree-days so far (:func:`current_degree_days`) over the fit at
    the baseline month's (same month last year), clipped to [``weather_factor_min``, ``weather_factor_max``].
    Null (the baseline unscaled by the weather): no baseline or a ``recent_bills_mean`` one, no fit (fewer
    than ``weather_min_bills`` bills with degree-days), no region or degree-days for the day or the
    baseline month, or a fit predicting no use in the baseline month."""
    base_dd = weather.monthly.select(F.col("region").alias("_br"), F.col("month").alias("_bm"),
                                     F.col("hdd_day").alias("_bh"), F.col("cdd_day").alias("_bc"))
    cur = weather.current.select("region", "date", F.col("hdd_day").alias("_ch"), F.col("cdd_day").alias("_cc"))
    fits = weather.fits.select("customer_id", "period_start", "w0", "w1", "w2")
    out = (bills.join(fits, ["customer_id", "period_start"], "left")
           .join(F.broadcast(cur), ["region", "date"], "left")
           .join(F.broadcast(base_dd), (F.col("region") == F.col("_br"))
                 & (F.add_months(F.col("period_start"), -12) == F.col("_bm")), "left"))
    now = F.col("w0") + F.col("w1") * F.col("_ch") + F.col("w2") * F.col("_cc")
    then = F.col("w0") + F.col("w1") * F.col("_bh") + F.col("w2") * F.col("_bc")
    clipped = F.least(F.lit(float(params.weather_factor_max)),
                      F.greatest(F.lit(float(params.weather_factor_min)), now / then))
    factor = F.when((F.col("baseline_source") == "same_month_last_year") & (then > 0), F.round(clipped, 6))
    return out.withColumn("weather_factor", factor.cast("double")).drop(
        "w0", "w1", "w2", "_ch", "_cc", "_br", "_bm", "_bh", "_bc")



def uses_peer(params: AlertsConfig) -> bool:
    """Whether ``alerts.baseline_adjust`` applies the peer factor."""
    return params.baseline_adjust in ("peer", "weather_peer")


def uses_weather(params: AlertsConfig) -> bool:
    """Whether ``alerts.baseline_adjust`` applies the weather factor."""
    return params.baseline_adjust in ("weather", "weather_peer")


def priced_progress(progress: DataFrame, baselines: DataFrame, *, tariff: TariffConfig,
                    params: AlertsConfig, weather: "WeatherInputs | None" = None) -> DataFrame:
    """:func:`daily_progress` rows priced (:func:`priced_bills`) with their weather factor (when
    ``alerts.baseline_adjust`` uses it and ``weather`` of :func:`weather_inputs` is given), peer factor (when
    it uses that) and threshold (:func:`with_threshold`). ``progress`` is read twice: cache or checkpoint it
    (or use the functions one by one, as the stage does)."""
    bills = priced_bills(progress, baselines, tariff=tariff)
    if uses_weather(params) and weather is not None:
        bills = with_weather_factor(bills, weather, params=params)
    factors = peer_factors(bills, params=params) if uses_peer(params) else None
    return with_threshold(bills, factors, params=params)


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
        "projected_kwh", "plan_id", "projected_bill_cny", "baseline_cny", "baseline_source", "weather_factor",
        "peer_factor", "threshold_cny",
        "near_zero_run_days", "ab_group")


def drop_alerted(candidates: DataFrame, stored: DataFrame) -> DataFrame:
    """``candidates`` without the (customer, alert type, period) that ``stored`` (gold.alert_targets rows
    the run keeps, i.e. outside the partitions it replaces) already holds: at most one alert per period."""
    seen = stored.select("customer_id", "alert_type", "period_start").distinct()
    return candidates.join(seen, ["customer_id", "alert_type", "period_start"], "left_anti").select(
        *ALERT_TARGETS.column_names)
