"""The per-customer feature view the tag expressions are written over (``view.customer_features``).

Pure transformations: DataFrames in, one DataFrame out, no I/O. Columns, types
and meanings are the contract in :data:`gridpersona.tagspec.FEATURE_VIEW`
(rendered into docs/tags.md). The view is one row per customer of the archive;
every source is aggregated per customer (or meter) first, then left-joined, so
a customer without bills, contacts or load still has a row (counts 0, means
null).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from gridpersona.bronze import local_date
from gridpersona.config import TagFeatures, parse_hhmm_range
from gridpersona.tagspec import FEATURE_VIEW

ONLINE_PAYMENT = ("app", "wechat", "alipay")
OFFLINE_PAYMENT = ("bank_counter", "service_hall")


def _int(c: Column) -> Column:
    return F.coalesce(c, F.lit(0)).cast("int")


def window_ranges(text: str) -> list[tuple[int, int]]:
    """'23:00-05:00' -> [(1380, 1440), (0, 300)]: the local-day minute ranges of a (wrapping) window."""
    start, end = parse_hhmm_range(text)
    return [(start, end)] if start < end else [r for r in ((start, 1440), (0, end)) if r[1] > r[0]]


def hour_window_starts(text: str, interval_minutes: int) -> list[int]:
    """Slot indexes where a 1-hour window lying wholly inside ``text``'s local-day ranges may start."""
    width = 60 // interval_minutes if interval_minutes <= 60 else 1
    starts = []
    for lo, hi in window_ranges(text):
        for i in range(1440 // interval_minutes):
            if i * interval_minutes >= lo and (i + width) * interval_minutes <= hi:
                starts.append(i)
    return sorted(set(starts))


def _hour_power(slot_kwh: str, starts: list[int], width: int) -> Column:
    """array<double>: mean power (kW) of the 1-hour windows starting at ``starts`` (kWh in one hour = kW)."""
    return F.transform(F.array(*[F.lit(i + 1) for i in starts]),
                       lambda s: F.aggregate(F.slice(slot_kwh, s, F.lit(width)), F.lit(0.0), lambda a, x: a + x))


def meter_load_features(daily: DataFrame, *, as_of: dt.date, interval_minutes: int, params: TagFeatures) -> DataFrame:
    """silver.daily_load_shape rows of the window -> one row per meter with the view's load columns.

    ``daily`` needs meter_id, date, slot_kwh, daily_kwh, completeness,
    peak_share, flat_share, valley_share, load_factor, max_kwh, is_weekend.
    """
    n = 1440 // interval_minutes
    width = max(1, 60 // interval_minutes)
    surge_starts = hour_window_starts(params.ev_surge_window, interval_minutes)
    base_starts = hour_window_starts(params.ev_base_window, interval_minutes)
    complete = F.col("completeness") >= F.lit(float(params.min_completeness))
    recent_from = as_of - dt.timedelta(days=params.recent_days - 1)

    day = daily.select(
        "meter_id", "date", "daily_kwh", "peak_share", "flat_share", "valley_share", "load_factor", "max_kwh",
        "is_weekend", complete.alias("complete"),
        F.array_max(_hour_power("slot_kwh", surge_starts, width)).alias("_surge_max"),
        F.array_min(_hour_power("slot_kwh", base_starts, width)).alias("_base_min"),
    ).withColumn("day_surge_kw", F.col("_surge_max") - F.col("_base_min"))
    surge_day = ((F.col("day_surge_kw") >= F.lit(params.ev_surge_kw))
                 & (F.col("day_surge_kw") >= F.lit(params.ev_surge_ratio) * F.col("_base_min")))
    near_zero = F.col("daily_kwh") < F.lit(params.near_zero_daily_kwh)

    def over_complete(c: Column) -> Column:
        return F.when(F.col("complete"), c)

    wd = F.avg(over_complete(F.when(~F.col("is_weekend"), F.col("daily_kwh"))))
    we = F.avg(over_complete(F.when(F.col("is_weekend"), F.col("daily_kwh"))))
    mean = F.avg(over_complete(F.col("daily_kwh")))
    recent = F.avg(over_complete(F.when(F.col("date") >= F.lit(recent_from), F.col("daily_kwh"))))
    history = F.avg(over_complete(F.when(F.col("date") < F.lit(recent_from), F.col("daily_kwh"))))
    # Runs of near-zero days over the complete days in date order: (current run, longest run).
    runs = F.aggregate(
        F.array_sort(F.collect_list(over_complete(F.struct(F.col("date"), near_zero.alias("nz"))))),
        F.struct(F.lit(0).alias("cur"), F.lit(0).alias("best")),
        lambda acc, d: F.struct(
            F.when(d["nz"], acc["cur"] + 1).otherwise(F.lit(0)).alias("cur"),
            F.greatest(acc["best"], F.when(d["nz"], acc["cur"] + 1).otherwise(F.lit(0))).alias("best")),
    )
    agg = day.groupBy("meter_id").agg(
        F.count(F.lit(1)).cast("int").alias("days_observed"),
        F.count(over_complete(F.lit(1))).cast("int").alias("complete_days"),
        mean.alias("mean_daily_kwh"),
        F.avg(over_complete(F.col("peak_share"))).alias("peak_share"),
        F.avg(over_complete(F.col("flat_share"))).alias("flat_share"),
        F.avg(over_complete(F.col("valley_share"))).alias("valley_share"),
        F.avg(over_complete(F.col("load_factor"))).alias("load_factor"),
        F.when(wd > 0, we / wd).alias("weekend_ratio"),
        F.when(mean > 0, F.stddev_pop(over_complete(F.col("daily_kwh"))) / mean).alias("daily_kwh_cv"),
        F.avg(over_complete(F.when(F.col("daily_kwh") > 0, F.col("max_kwh") / (F.col("daily_kwh") / F.lit(n)))))
        .alias("peak_to_mean"),
        (F.max(over_complete(F.col("max_kwh"))) * F.lit(60.0 / interval_minutes)).alias("peak_demand_kw"),
        F.median(over_complete(F.col("day_surge_kw"))).alias("night_surge_kw"),
        F.avg(over_complete(surge_day.cast("double"))).alias("night_surge_day_share"),
        F.count(over_complete(F.when(near_zero, F.lit(1)))).cast("int").alias("near_zero_days"),
        runs.alias("_runs"),
        recent.alias("recent_daily_kwh"),
        history.alias("history_daily_kwh"),
    )
    return agg.select(
        "*",
        F.col("_runs.cur").cast("int").alias("current_near_zero_run_days"),
        F.col("_runs.best").cast("int").alias("longest_near_zero_run_days"),
        F.when(F.col("history_daily_kwh") > 0, F.col("recent_daily_kwh") / F.col("history_daily_kwh"))
        .alias("recent_vs_history"),
    ).drop("_runs")


def customer_billing_features(billing: DataFrame, *, as_of: dt.date, months: int) -> DataFrame:
    """bronze.billing_payment -> one row per customer: bills due in the ``months`` months up to ``as_of``,
    lateness, arrears (any past-due bill not fully paid by ``as_of``), channels, amounts."""
    as_of_lit = F.lit(as_of)
    in_window = (F.col("due_date") > F.add_months(as_of_lit, -months)) & (F.col("due_date") <= as_of_lit)
    paid_by_as_of = F.col("paid_date").isNotNull() & (F.col("paid_date") <= as_of_lit)
    past_due_unpaid = (F.col("due_date") < as_of_lit) & ~paid_by_as_of
    late = in_window & paid_by_as_of & (F.col("paid_date") > F.col("due_date"))
    days_late = F.datediff(F.when(paid_by_as_of, F.col("paid_date")).otherwise(as_of_lit), F.col("due_date"))
    owed = F.when(F.col("paid_date").isNull(),
                  F.col("bill_amount_cny") - F.coalesce(F.col("paid_amount_cny"), F.lit(0.0))
                  ).otherwise(F.col("bill_amount_cny"))
    paid_in_window = in_window & paid_by_as_of
    last_year_month = F.add_months(F.trunc(as_of_lit, "month"), -12)

    def channel_count(channels) -> Column:
        return F.count(F.when(paid_in_window & F.col("payment_channel").isin(*channels), F.lit(1)))

    kwh_in_window = F.when(in_window, F.col("bill_kwh"))
    mean_kwh = F.avg(kwh_in_window)
    return billing.groupBy("customer_id").agg(
        F.count(F.when(in_window, F.lit(1))).cast("int").alias("bills_12m"),
        F.count(F.when(late, F.lit(1))).cast("int").alias("late_payments_12m"),
        F.count(F.when(past_due_unpaid, F.lit(1))).cast("int").alias("unpaid_bills"),
        F.coalesce(F.sum(F.when(past_due_unpaid, owed)), F.lit(0.0)).alias("arrears_cny"),
        F.max(F.when(in_window & (F.col("due_date") < as_of_lit), F.greatest(days_late, F.lit(0)))).cast("int")
        .alias("max_days_late"),
        F.avg(F.when(in_window, F.col("bill_amount_cny"))).alias("mean_bill_cny"),
        mean_kwh.alias("mean_bill_kwh"),
        F.when(mean_kwh > 0, F.stddev_pop(kwh_in_window) / mean_kwh).alias("bill_kwh_cv"),
        F.max(F.when(F.col("bill_month") == last_year_month, F.col("bill_kwh"))).alias("same_month_last_year_kwh"),
        channel_count(ONLINE_PAYMENT).cast("int").alias("payments_online"),
        channel_count(OFFLINE_PAYMENT).cast("int").alias("payments_offline"),
        channel_count(("auto_debit",)).cast("int").alias("payments_auto_debit"),
    )


def customer_interaction_features(interactions: DataFrame, *, as_of: dt.date, days: int, time_zone: str) -> DataFrame:
    """bronze.service_interaction -> one row per customer: contacts of the last ``days`` local days by channel,
    type and topic."""
    d = local_date(F.col("ts"), time_zone)
    recent = interactions.filter((d > F.lit(as_of - dt.timedelta(days=days))) & (d <= F.lit(as_of)))

    def count(cond: Column) -> Column:
        return F.count(F.when(cond, F.lit(1))).cast("int")

    ch, it, tp = F.col("channel"), F.col("interaction_type"), F.col("topic")
    return recent.groupBy("customer_id").agg(
        F.count(F.lit(1)).cast("int").alias("interactions_12m"),
        count(ch.isin("app", "wechat")).alias("interactions_app"),
        count(ch == "hotline").alias("interactions_hotline"),
        count(ch == "service_hall").alias("interactions_service_hall"),
        count(it == "complaint").alias("complaints_12m"),
        count(it == "repair").alias("repairs_12m"),
        count(tp.isin("bill", "tariff")).alias("topic_bill_tariff_12m"),
        count(tp == "solar").alias("topic_solar_12m"),
        count(tp == "ev").alias("topic_ev_12m"),
        count(tp == "app").alias("topic_app_12m"),
    )


def customer_campaign_features(contacts: DataFrame, responses: DataFrame, *, as_of: dt.date, days: int,
                               time_zone: str) -> DataFrame:
    """bronze.contact_history + bronze.campaign_response -> one row per customer: marketing contacts and
    responses of the last ``days`` days (a response dated after ``as_of`` is not known yet)."""
    since = F.lit(as_of - dt.timedelta(days=days))
    d = local_date(F.col("ts"), time_zone)
    contact_agg = (contacts.filter((d > since) & (d <= F.lit(as_of)))
                   .groupBy("customer_id").agg(
                       F.count(F.lit(1)).cast("int").alias("campaign_contacts_12m"),
                       F.countDistinct("campaign_id").cast("int").alias("campaigns_contacted_12m"),
                       F.datediff(F.lit(as_of), F.max(d)).cast("int").alias("days_since_last_contact")))
    known = F.col("response_ts").isNull() | (local_date(F.col("response_ts"), time_zone) <= F.lit(as_of))
    response_agg = (responses.filter((F.col("cycle_as_of") > since) & (F.col("cycle_as_of") <= F.lit(as_of))
                                     & F.col("responded") & known)
                    .groupBy("customer_id").agg(
                        F.count(F.lit(1)).cast("int").alias("campaign_responses_12m"),
                        F.array_sort(F.collect_set("campaign_id")).alias("responded_campaigns")))
    return contact_agg.join(response_agg, "customer_id", "full")


def customer_feature_view(archive: DataFrame, segments: DataFrame, daily: DataFrame, billing: DataFrame,
                          interactions: DataFrame, contacts: DataFrame, responses: DataFrame, *, as_of: dt.date,
                          interval_minutes: int, time_zone: str, params: TagFeatures) -> DataFrame:
    """Every source -> view.customer_features (one row per archive customer; columns of tagspec.FEATURE_VIEW).

    ``archive``: bronze.customer_archive (its PII columns are never selected);
    ``segments``: gold.customer_segments rows of ``as_of``; ``daily``:
    silver.daily_load_shape rows of the window; the bronze tables whole (each
    is cut to its own look-back here).
    """
    base = archive.select(
        "customer_id", "meter_id", "region", "customer_type", "tariff_type", "age_band", "household_size",
        "housing_type", "contracted_capacity_kva",
        F.filter(F.transform(F.split(F.coalesce(F.col("products_held"), F.lit("")), ";"), lambda x: F.trim(x)),
                 lambda x: x != "").alias("products_held"),
        F.coalesce(F.col("vip"), F.lit(False)).alias("vip"),
        F.coalesce(F.col("do_not_contact"), F.lit(False)).alias("do_not_contact"),
        (F.datediff(F.lit(as_of), F.col("account_open_date")) / F.lit(365.25)).alias("account_tenure_years"),
    )
    seg = segments.select("meter_id", "segment_id", "segment_label")
    load = meter_load_features(daily, as_of=as_of, interval_minutes=interval_minutes, params=params)
    bills = customer_billing_features(billing, as_of=as_of, months=params.billing_months)
    inter = customer_interaction_features(interactions, as_of=as_of, days=params.interaction_days, time_zone=time_zone)
    camp = customer_campaign_features(contacts, responses, as_of=as_of, days=params.campaign_days, time_zone=time_zone)
    df = (base.join(seg, "meter_id", "left").join(load, "meter_id", "left")
          .join(bills, "customer_id", "left").join(inter, "customer_id", "left").join(camp, "customer_id", "left"))

    group = Window.partitionBy("region", "customer_type", F.col("mean_daily_kwh").isNull()).orderBy("mean_daily_kwh")
    projected = F.col("recent_daily_kwh") * F.lit(30.0)
    baseline = F.coalesce(F.col("same_month_last_year_kwh"), F.col("mean_bill_kwh"))
    derived = {
        "as_of": F.lit(as_of),
        "kwh_pct_in_group": F.when(F.col("mean_daily_kwh").isNotNull(), F.percent_rank().over(group)),
        "has_arrears": _int(F.col("unpaid_bills")) > 0,
        "projected_month_kwh": projected,
        "bill_shock_ratio": F.when(baseline > 0, projected / baseline),
        "responded_campaigns": F.coalesce(F.col("responded_campaigns"), F.array().cast("array<string>")),
        "arrears_cny": F.coalesce(F.col("arrears_cny"), F.lit(0.0)),
    }
    zero_filled = {c.name for c in FEATURE_VIEW.columns
                   if not c.nullable and c.dtype.simpleString() == "int"}
    cols = []
    for c in FEATURE_VIEW.columns:
        if c.name in derived:
            expr = derived[c.name]
        elif c.name in zero_filled:
            expr = _int(F.col(c.name))
        else:
            expr = F.col(c.name)
        cols.append(expr.cast(c.dtype).alias(c.name))
    return df.select(*cols)
