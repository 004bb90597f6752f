"""The alerts stage: mid-cycle bill-projection and vacancy alerts, at most one per customer, type and period.

``alerts``  silver.daily_load_shape (the periods of the window's days, and `alerts.recent_days` before),
            bronze.customer_archive, bronze.billing_payment (optional: absent, no baseline and no bill alert),
            bronze.holiday_calendar (optional: absent, the built-in calendar of `calendar.country`; vacancy
            runs skip holiday periods),
            bronze.weather (optional, read when `alerts.baseline_adjust` is weather or weather_peer: absent,
            no weather factor),
            gold.alert_targets (its own rows outside the window: an alert already stored suppresses later ones)
            -> gold.alert_targets (partition alert_date)

Every day of the window is evaluated in one pass (:mod:`gridpersona.transform.alerts`): the nightly run is
``--window-days 1`` (the daily DAG), a backfill ``--as-of <last day> --window-days N``. The run replaces
exactly its days' partitions, so a rerun of the same days writes the same rows.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from gridpersona.contracts.advice import ALERT_TARGETS
from gridpersona.contracts.bronze import BILLING_PAYMENT, CUSTOMER_ARCHIVE, WEATHER
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.lake import check_schema
from gridpersona.stages.calendar import holiday_calendar
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
    holidays = holiday_calendar(lake, s, first, max(days))
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
                                 params=s.alerts, near_zero_kwh=s.tags.features.near_zero_daily_kwh, days=days,
                                 holiday_dates=holidays.period_dates())
    bills = AL.priced_bills(progress, baselines, tariff=s.tariff)
    has_weather = lake.exists(WEATHER.name)
    if AL.uses_weather(s.alerts) and has_weather:
        weather = AL.weather_inputs(billing, customers, read_bronze(lake, WEATHER.name), days=days,
                                    params=s.alerts, heating_base_c=s.forecast.heating_base_c,
                                    cooling_base_c=s.forecast.cooling_base_c,
                                    min_coverage=s.forecast.min_weather_coverage)
        bills = AL.with_weather_factor(bills, weather, params=s.alerts)
    factor_rows = None
    if AL.uses_weather(s.alerts) or AL.uses_peer(s.alerts):
        # The rows feed the peer medians, the weather note and the threshold: computed once.
        bills = bills.localCheckpoint(eager=True)
    if AL.uses_peer(s.alerts):
        factors = AL.peer_factors(bills, params=s.alerts)
        factor_rows = factors.collect()  # a handful of rows per day (regions + everyone)
        factors = lake.spark.createDataFrame(factor_rows, factors.schema) if factor_rows else \
            lake.spark.createDataFrame([], factors.schema)
    priced = AL.with_threshold(bills, factors if factor_rows is not None else None, params=s.alerts)
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
    result.notes.append(_weather_note(s.alerts, bills, has_weather))
    result.notes.append(_peer_note(s.alerts, factor_rows, weather_applied=AL.uses_weather(s.alerts) and has_weather))
    result.notes.append(holidays.note)
    return result


def _weather_note(params, bills, has_weather: bool) -> str:
    """One line on the weather factors of the run's (checkpointed) priced rows: one aggregation."""
    if not AL.uses_weather(params):
        return f"alerts: alerts.baseline_adjust is {params.baseline_adjust}: no weather factor (weather_factor null)"
    if not has_weather:
        return (f"alerts: {WEATHER.name} is absent: no weather factor (weather_factor null); "
                + ("the peer factor alone scales the baseline" if AL.uses_peer(params)
                   else "the plain baseline"))
    r = bills.filter(F.col("projected_bill_cny").isNotNull() & F.col("baseline_cny").isNotNull()).agg(
        F.count(F.lit(1)).alias("n"), F.count("weather_factor").alias("known"),
        F.count(F.when(F.col("baseline_source") != "same_month_last_year", 1)).alias("mean_base"),
        F.expr("percentile_approx(weather_factor, array(0.05, 0.5, 0.95))").alias("q"),
        F.count(F.when((F.col("weather_factor") <= params.weather_factor_min)
                       | (F.col("weather_factor") >= params.weather_factor_max), 1)).alias("clipped")).first()
    text = (f"alerts: weather factor (own degree-day fit, kWh/day now / in the baseline month) on {r['known']:,} "
            f"of {r['n']:,} customer-days with a projected bill and a baseline")
    if r["known"]:
        q = r["q"]
        text += f" (5/50/95 %: {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}; {r['clipped']:,} clipped)"
    if r["known"] == r["n"]:
        return text
    return text + (f"; the others unscaled by the weather: fewer than {params.weather_min_bills} bills with "
                   f"degree-days, no region or weather for the day or the baseline month"
                   + (f", or a recent-bills-mean baseline ({r['mean_base']:,})" if r["mean_base"] else ""))


def _peer_note(params, factor_rows, *, weather_applied: bool) -> str:
    """One line on the peer factors of the run (:func:`gridpersona.transform.alerts.peer_factors` rows)."""
    if factor_rows is None:
        return (f"alerts: alerts.baseline_adjust is {params.baseline_adjust}: no peer factor (peer_factor null)")
    regional = [r for r in factor_rows if r["region"] is not None]
    known = sorted(r["peer_factor"] for r in regional if r["peer_factor"] is not None)
    few = [r for r in regional if r["peer_factor"] is None]
    what = "weather-adjusted baseline" if weather_applied else "baseline"
    text = (f"alerts: peer factor (region's median projected bill / {what}) over {len(regional):,} region-days: "
            + (f"{known[0]:.3f} .. {known[-1]:.3f}, median {known[len(known) // 2]:.3f}" if known else "none known"))
    if few:
        text += (f"; {len(few):,} region-days with fewer than {params.min_peers} customers with a baseline "
                 f"({sum(r['peers'] for r in few):,} customer-days): factor null, the plain baseline")
    return text
