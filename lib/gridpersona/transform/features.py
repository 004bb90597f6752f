"""The per-customer feature view the tag expressions are written over (``view.customer_features``).

Pure transformations: DataFrames in, one DataFrame out, no I/O. Columns, types
and meanings are the contract in :data:`gridpersona.contracts.tags.FEATURE_VIEW`
(rendered into docs/tags.md). The view is one row per customer of the archive;
every source is aggregated per customer (or meter) first, then left-joined, so
a customer without bills, contacts or load still has a row. Unknown stays
unknown: a source with no data (absent table, or no bill record for the
customer) gives null features, not 0 / false; a present event table without
rows for the customer gives counts 0 (see :func:`customer_feature_view`).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from gridpersona.transform.validate import local_date
from gridpersona.config import TagFeatures, parse_hhmm_range
from gridpersona.contracts.bronze import BILLING_PAYMENT, CAMPAIGN_RESPONSE, CONTACT_HISTORY, SERVICE_INTERACTION
from gridpersona.contracts.tags import FEATURE_VIEW

ONLINE_PAYMENT = ("app", "wechat", "alipay")
OFFLINE_PAYMENT = ("bank_counter", "service_hall")



def degree_days(temp: Column, heating_base_c: float, cooling_base_c: float) -> tuple[Column, Column]:
    """(heating, cooling) degree-days of a daily mean temperature column: max(0, heating base - temp),
    max(0, temp - cooling base); null where the temperature is null."""
    return (F.greatest(F.lit(0.0), F.lit(float(heating_base_c)) - temp),
            F.greatest(F.lit(0.0), temp - F.lit(float(cooling_base_c))))

def _int(c: Column) -> Column:
    return F.coalesce(c, F.lit(0)).cast("int")


def window_ranges(text: str) -> list[tuple[int, int]]:
    """'23:00-05:00' -> [(1380, 1440), (0, 300)]: the local-day minute ranges of a (wrapping) window."""
    start, end = parse_hhmm_range(text)
    return [(start, end)] if start < end else [r for r in ((start, 1440), (0, end)) if r[1] > r[0]]


def night_slot_range(night_window: str, interval_minutes: int) -> tuple[int, int]:
    """'20:00-08:00' -> (evening start slot of the day before, morning end slot of the day): a night's slots are
    the day before's ``[start, n)`` followed by the day's ``[0, end)``."""
    start, end = parse_hhmm_range(night_window)
    return start // interval_minutes, end // interval_minutes


NIGHT_BLOCK_TYPE = "struct<base_kw:double,best_kw:double,block_slots:int,block_start:int>"


def night_blocks(night: pa.Array, *, width: int, kw: float, surge_kw: float, surge_ratio: float) -> pa.StructArray:
    """Each night's interval kWh (a list, null when the night is incomplete) -> its block struct (null likewise):
    base_kw and best_kw (its lowest and highest ``width``-interval mean power), block_slots and block_start
    (interval index from the night's start) of the longest run of intervals at least
    max(``surge_kw``, ``surge_ratio`` x base) above the base; the first run of that length when several tie.

    numpy over every night of the batch at once (an Arrow UDF: Spark's array lambdas were interpreted element
    by element, 12.7 s of the tags stage's 25 s on the default lake). Sums run in interval order, from 0.0,
    as the array expressions summed them, so the figures are the same to the bit.
    """
    rows = len(night)
    valid = night.is_valid().to_numpy(zero_copy_only=False)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(night), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    base = np.zeros(rows)
    best_kw = np.zeros(rows)
    slots = np.zeros(rows, dtype=np.int32)
    start = np.zeros(rows, dtype=np.int32)
    for length in np.unique(lengths[valid]):
        pick = valid & (lengths == length)
        values = pc.list_flatten(night.filter(pa.array(pick)))
        if values.null_count:
            raise ValueError("night_blocks: a night holds a null interval (slot_kwh has none)")
        x = values.to_numpy(zero_copy_only=False).reshape(int(pick.sum()), int(length))
        span = int(length) - width + 1
        acc = np.zeros((x.shape[0], span))
        for j in range(width):
            acc = acc + x[:, j:j + span]
        hours = acc * (kw / width)
        low = hours.min(axis=1)
        threshold = low + np.maximum(surge_kw, surge_ratio * low)
        high = x * kw >= threshold[:, None]
        cur = np.zeros(x.shape[0], dtype=np.int32)
        best = np.zeros(x.shape[0], dtype=np.int32)
        best_end = np.zeros(x.shape[0], dtype=np.int32)
        for i in range(x.shape[1]):
            cur = np.where(high[:, i], cur + 1, 0).astype(np.int32)
            longer = cur > best
            best_end = np.where(longer, i, best_end).astype(np.int32)
            best = np.maximum(best, cur)
        base[pick], best_kw[pick] = low, hours.max(axis=1)
        slots[pick], start[pick] = best, best_end - best + 1
    return pa.StructArray.from_arrays(
        [pa.array(base), pa.array(best_kw), pa.array(slots), pa.array(start)],
        names=["base_kw", "best_kw", "block_slots", "block_start"], mask=pa.array(~valid))


def _with_night_blocks(day: DataFrame, *, interval_minutes: int, width: int, params: TagFeatures) -> DataFrame:
    """``day`` (with ``_night``: the night's interval kWh, null when incomplete) plus ``_nb``, a struct per night
    (:func:`night_blocks`, as an Arrow UDF over the nights of a batch)."""
    kw = 60.0 / interval_minutes
    surge_kw, surge_ratio = float(params.ev_surge_kw), float(params.ev_surge_ratio)

    def blocks(night: pa.Array) -> pa.Array:
        return night_blocks(night, width=width, kw=kw, surge_kw=surge_kw, surge_ratio=surge_ratio)

    udf = F.arrow_udf(blocks, NIGHT_BLOCK_TYPE)
    return day.withColumn("_nb", udf(F.col("_night"))).drop("_night")


DAY_TYPE_CURVES_TYPE = "struct<weekday_curve:array<double>,weekend_curve:array<double>>"


def day_type_curves(days: pa.Array, *, slots: int) -> pa.StructArray:
    """Each meter's complete days (a list of struct<date, is_weekend, slot_kwh>, in date order) -> its
    weekday_curve and weekend_curve: the mean kWh of each of the ``slots`` slots over the days of that type
    (null when the meter has none; a day whose ``is_weekend`` is null counts as neither, as in the view's
    weekend_ratio). numpy over every meter of a batch at once; sums run in list (date) order, so a rerun gives
    the same bits. ValueError when a day's slot array is not ``slots`` long (the contract's wall-clock slots).
    """
    rows = len(days)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(days), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    flat = pc.list_flatten(days)
    meter = np.repeat(np.arange(rows), lengths)
    slot_arrays = pc.struct_field(flat, "slot_kwh")
    widths = pc.fill_null(pc.list_value_length(slot_arrays), -1).to_numpy(zero_copy_only=False)
    if len(widths) and (widths != slots).any():
        raise ValueError(f"day_type_curves: a day's slot_kwh holds {int(widths[widths != slots][0])} slots, "
                         f"expected {slots} (silver.daily_load_shape keeps wall-clock slots)")
    values = pc.list_flatten(slot_arrays).to_numpy(zero_copy_only=False).astype(float).reshape(len(widths), slots)
    weekend = pc.struct_field(flat, "is_weekend")
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * slots)
    curves = []
    for is_weekend in (False, True):
        pick = pc.fill_null(pc.equal(weekend, is_weekend), False).to_numpy(zero_copy_only=False)
        acc = np.zeros((rows, slots))
        np.add.at(acc, meter[pick], values[pick])  # unbuffered: each meter's days added in list order
        counts = np.bincount(meter[pick], minlength=rows)
        mean = acc / np.maximum(counts, 1)[:, None]
        curves.append(pa.ListArray.from_arrays(offsets, pa.array(mean.reshape(-1)), mask=pa.array(counts == 0)))
    return pa.StructArray.from_arrays(curves, names=["weekday_curve", "weekend_curve"])


def meter_load_features(daily: DataFrame, *, as_of: dt.date, interval_minutes: int, params: TagFeatures,
                        holiday_dates: frozenset[dt.date] | set[dt.date] = frozenset()) -> DataFrame:
    """silver.daily_load_shape rows of the window -> one row per meter with the view's load columns.

    ``daily`` needs meter_id, date, slot_kwh, daily_kwh, completeness,
    peak_share, flat_share, valley_share, load_factor, max_kwh, is_weekend; it may carry
    ``temp_mean_c`` (the day's mean temperature in the meter's region, null when unknown; without the
    column every meter's ``weather_reason`` is ``no_weather``).

    ``holiday_dates``: the window's days in a holiday period (:func:`gridpersona.config.holidays.
    holiday_period_dates`). They are left out of ``near_zero_days``, of the near-zero runs (they neither
    extend nor break one: a household away over Spring Festival is not vacant, and a vacant premise stays
    vacant across it) and of the temperature fit.

    Temperature sensitivity: over the complete days outside holiday periods with a temperature
    (``weather_days``), the least-squares fit daily_kwh = a + h x HDD + c x CDD (degree-days against
    ``heating_base_c`` / ``cooling_base_c``) gives ``heating_kwh_per_degree`` = h and
    ``cooling_kwh_per_degree`` = c; a regressor with fewer than 3 non-zero days (no heating in summer) is
    left out of the fit and its slope is null.

    The portrait columns come from the same aggregation: ``peak_valley_rate``
    (the day's (max - min) / max slot kWh, averaged over complete days with
    energy) and ``weekday_curve`` / ``weekend_curve`` (:func:`day_type_curves`
    over the complete days' ``slot_kwh``).

    Night charging features look at nights, not calendar days: a night is the
    ``ev_night_window`` from the evening of the day before to the morning of the
    day (both days present and complete), so a block across midnight is one
    block. On each night the longest run of intervals at least
    max(``ev_surge_kw``, ``ev_surge_ratio`` x base) above the night's lowest
    1-hour power is its block; a surge night has a block of at least
    ``ev_min_block_hours`` starting inside ``ev_start_window``.
    """
    n = 1440 // interval_minutes
    width = max(1, 60 // interval_minutes)
    slot_h = interval_minutes / 60.0
    complete = F.col("completeness") >= F.lit(float(params.min_completeness))
    recent_from = as_of - dt.timedelta(days=params.recent_days - 1)
    evening_from, morning_to = night_slot_range(params.ev_night_window, interval_minutes)
    start_lo, start_hi = parse_hhmm_range(params.ev_start_window)

    holiday = F.col("date").isin(sorted(holiday_dates)) if holiday_dates else F.lit(False)
    temp = F.col("temp_mean_c").cast("double") if "temp_mean_c" in daily.columns else F.lit(None).cast("double")
    by_date = Window.partitionBy("meter_id").orderBy("date")
    prev_ok = (F.lag("date").over(by_date) == F.date_sub(F.col("date"), 1)) & F.lag(complete).over(by_date) & complete
    night = F.when(prev_ok, F.concat(F.slice(F.lag("slot_kwh").over(by_date), evening_from + 1, n - evening_from),
                                     F.slice("slot_kwh", 1, morning_to)))
    day = _with_night_blocks(daily.select(
        "meter_id", "date", "daily_kwh", "peak_share", "flat_share", "valley_share", "load_factor", "max_kwh",
        "is_weekend", complete.alias("complete"), night.alias("_night"), holiday.alias("_holiday"),
        temp.alias("_temp"),
        F.when(F.col("max_kwh") > 0, (F.col("max_kwh") - F.array_min("slot_kwh")) / F.col("max_kwh"))
        .alias("_peak_valley_rate"),
        F.when(complete, F.struct("date", "is_weekend", "slot_kwh")).alias("_complete_day"),
    ), interval_minutes=interval_minutes, width=width, params=params)
    # Block start as minutes of the local clock (0..1440), and as hours from the night's start.
    start_min = (F.lit(evening_from * interval_minutes) + F.col("_nb.block_start") * F.lit(interval_minutes)) % 1440
    in_start_window = ((start_min >= start_lo) & (start_min < start_hi) if start_lo < start_hi
                       else (start_min >= start_lo) | (start_min < start_hi))
    block_h = F.col("_nb.block_slots") * F.lit(slot_h)
    surge_night = F.when(F.col("_nb").isNotNull(),
                         (block_h >= F.lit(float(params.ev_min_block_hours))) & in_start_window)
    near_zero = F.col("daily_kwh") < F.lit(params.near_zero_daily_kwh)

    def over_complete(c: Column) -> Column:
        return F.when(F.col("complete"), c)

    def over_surge(c: Column) -> Column:
        return F.when(surge_night, c)

    def over_counted(c: Column) -> Column:
        """Complete days outside holiday periods: the days vacancy and the temperature fit look at."""
        return F.when(F.col("complete") & ~F.col("_holiday"), c)

    fit_day = F.col("complete") & ~F.col("_holiday") & F.col("_temp").isNotNull()
    hdd, cdd = degree_days(F.col("_temp"), params.heating_base_c, params.cooling_base_c)

    def over_fit(c: Column) -> Column:
        return F.when(fit_day, c)

    wd = F.avg(over_complete(F.when(~F.col("is_weekend"), F.col("daily_kwh"))))
    we = F.avg(over_complete(F.when(F.col("is_weekend"), F.col("daily_kwh"))))
    mean = F.avg(over_complete(F.col("daily_kwh")))
    recent = F.avg(over_complete(F.when(F.col("date") >= F.lit(recent_from), F.col("daily_kwh"))))
    history = F.avg(over_complete(F.when(F.col("date") < F.lit(recent_from), F.col("daily_kwh"))))
    # Runs of near-zero days over the complete days in date order: (current run, longest run).
    runs = F.aggregate(
        F.array_sort(F.collect_list(over_counted(F.struct(F.col("date"), near_zero.alias("nz"))))),
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
        F.avg(over_complete(F.col("_peak_valley_rate"))).alias("peak_valley_rate"),
        # collect_list skips the incomplete days' nulls; sorted, so the curves sum in date order.
        F.array_sort(F.collect_list("_complete_day")).alias("_complete_days"),
        F.count(F.col("_nb")).cast("int").alias("complete_nights"),
        F.median(F.col("_nb.best_kw") - F.col("_nb.base_kw")).alias("night_surge_kw"),
        F.avg(surge_night.cast("double")).alias("night_surge_day_share"),
        F.median(over_surge(block_h)).alias("night_block_hours"),
        F.stddev_pop(over_surge(F.col("_nb.block_start") * F.lit(slot_h))).alias("night_block_start_sd_h"),
        F.count(over_counted(F.when(near_zero, F.lit(1)))).cast("int").alias("near_zero_days"),
        runs.alias("_runs"),
        recent.alias("recent_daily_kwh"),
        history.alias("history_daily_kwh"),
        F.count(F.col("_temp")).alias("_temp_days"),
        F.count(over_fit(F.lit(1))).cast("int").alias("weather_days"),
        F.struct(*[F.sum(over_fit(c)).alias(name) for name, c in (
            ("h", hdd), ("c", cdd), ("y", F.col("daily_kwh")), ("hh", hdd * hdd), ("cc", cdd * cdd),
            ("hc", hdd * cdd), ("hy", hdd * F.col("daily_kwh")), ("cy", cdd * F.col("daily_kwh")))],
                 F.count(over_fit(F.when(hdd > 0, F.lit(1)))).alias("nh"),
                 F.count(over_fit(F.when(cdd > 0, F.lit(1)))).alias("nc")).alias("_fit"),
    )
    curves = F.arrow_udf(lambda d: day_type_curves(d, slots=n), DAY_TYPE_CURVES_TYPE)
    # The UDF's struct as one column first, so that its two fields do not call it twice.
    agg = agg.withColumn("_curves", curves(F.col("_complete_days"))).drop("_complete_days")
    return agg.select(
        "*",
        F.col("_curves.weekday_curve").alias("weekday_curve"),
        F.col("_curves.weekend_curve").alias("weekend_curve"),
        F.col("_runs.cur").cast("int").alias("current_near_zero_run_days"),
        F.col("_runs.best").cast("int").alias("longest_near_zero_run_days"),
        F.when(F.col("history_daily_kwh") > 0, F.col("recent_daily_kwh") / F.col("history_daily_kwh"))
        .alias("recent_vs_history"),
        *degree_day_slopes(F.col("_fit"), F.col("weather_days"), F.col("_temp_days"), params.weather_min_days),
    ).drop("_runs", "_curves", "_fit", "_temp_days")


def degree_day_slopes(fit: Column, days: Column, temp_days: Column, min_days: int) -> list[Column]:
    """``heating_kwh_per_degree``, ``cooling_kwh_per_degree`` and ``weather_reason`` from the sums of a fit.

    ``fit``: a struct of sums over the fit days (h, c, y, hh, cc, hc, hy, cy: degree-days h and c, daily
    kWh y, and their products; nh, nc: days with h > 0, c > 0); ``days``: the fit days; ``temp_days``:
    days with any temperature. Both regressors usable (3+ non-zero days and some spread): the two-variable
    least squares; one usable: its simple slope; the other slope null. Too few days or no temperature:
    both null, with the reason.
    """
    n = days.cast("double")

    def centred(a: str, b: str) -> Column:
        return fit[a + b] - fit[a] * fit[b] / n

    s_hh, s_cc, s_hc = centred("h", "h"), centred("c", "c"), centred("h", "c")
    s_hy, s_cy = fit["hy"] - fit["h"] * fit["y"] / n, fit["cy"] - fit["c"] * fit["y"] / n
    eps = F.lit(1e-9)
    heat_ok = (fit["nh"] >= 3) & (s_hh > eps)
    cool_ok = (fit["nc"] >= 3) & (s_cc > eps)
    det = s_hh * s_cc - s_hc * s_hc
    reason = (F.when(temp_days == 0, F.lit("no_weather"))
              .when(days < F.lit(min_days), F.lit("too_few_days")))
    fitted = reason.isNull()
    heating = (F.when(fitted & heat_ok & cool_ok & (det > eps), (s_cc * s_hy - s_hc * s_cy) / det)
               .when(fitted & heat_ok & ~cool_ok, s_hy / s_hh))
    cooling = (F.when(fitted & heat_ok & cool_ok & (det > eps), (s_hh * s_cy - s_hc * s_hy) / det)
               .when(fitted & cool_ok & ~heat_ok, s_cy / s_cc))
    return [heating.alias("heating_kwh_per_degree"), cooling.alias("cooling_kwh_per_degree"),
            reason.alias("weather_reason")]


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


def customer_contact_features(contacts: DataFrame, *, as_of: dt.date, days: int, time_zone: str) -> DataFrame:
    """bronze.contact_history -> one row per customer contacted in the last ``days`` local days."""
    since = F.lit(as_of - dt.timedelta(days=days))
    d = local_date(F.col("ts"), time_zone)
    return (contacts.filter((d > since) & (d <= F.lit(as_of)))
            .groupBy("customer_id").agg(
                F.count(F.lit(1)).cast("int").alias("campaign_contacts_12m"),
                F.countDistinct("campaign_id").cast("int").alias("campaigns_contacted_12m"),
                F.datediff(F.lit(as_of), F.max(d)).cast("int").alias("days_since_last_contact")))


def customer_response_features(responses: DataFrame, *, as_of: dt.date, days: int, time_zone: str) -> DataFrame:
    """bronze.campaign_response -> one row per customer who responded to a cycle of the last ``days`` days
    (a response dated after ``as_of`` is not known yet)."""
    since = F.lit(as_of - dt.timedelta(days=days))
    known = F.col("response_ts").isNull() | (local_date(F.col("response_ts"), time_zone) <= F.lit(as_of))
    return (responses.filter((F.col("cycle_as_of") > since) & (F.col("cycle_as_of") <= F.lit(as_of))
                             & F.col("responded") & known)
            .groupBy("customer_id").agg(
                F.count(F.lit(1)).cast("int").alias("campaign_responses_12m"),
                F.array_sort(F.collect_set("campaign_id")).alias("responded_campaigns")))


ADVICE_COLUMNS = ("rate_days_used", "rate_reason", "recommended_plan_kind", "tou_annual_saving_cny",
                  "neighbour_complete_days", "neighbour_state", "neighbour_vs_median_pct")


def customer_advice_features(rates: DataFrame | None, peers: DataFrame | None) -> DataFrame | None:
    """gold.rate_comparison and gold.neighbour_comparison rows of one as-of -> one row per customer with
    :data:`ADVICE_COLUMNS` (a table passed as None leaves its columns null); None when both are None."""
    parts = []
    if rates is not None:
        parts.append(rates.groupBy("customer_id").agg(
            F.max("days_used").cast("int").alias("rate_days_used"),
            F.max("reason").alias("rate_reason"),
            F.max(F.when(F.col("plan_id") == F.col("recommended_plan_id"), F.col("plan_kind"))
                  ).alias("recommended_plan_kind"),
            # Annualised from too few priced days, a saving is not a figure to publish.
            F.max(F.when((F.col("plan_kind") == "tou") & (F.coalesce(F.col("reason"), F.lit("")) != "insufficient_data"),
                         F.col("annual_saving_cny"))).cast("double").alias("tou_annual_saving_cny")))
    if peers is not None:
        parts.append(peers.select("customer_id", F.col("complete_days").alias("neighbour_complete_days"),
                                  F.col("state").alias("neighbour_state"),
                                  F.col("vs_median_pct").alias("neighbour_vs_median_pct")))
    if not parts:
        return None
    out = parts[0] if len(parts) == 1 else parts[0].join(parts[1], "customer_id", "full")
    for c in ADVICE_COLUMNS:
        if c not in out.columns:
            out = out.withColumn(c, F.lit(None))
    return out.select("customer_id", *ADVICE_COLUMNS)


# The sources of the view besides the archive, and which view columns each fills. A source that is absent
# (no table, or an empty one) leaves its columns null for every customer: "no data", never "zero events".
OPTIONAL_SOURCES = (BILLING_PAYMENT.name, SERVICE_INTERACTION.name, CONTACT_HISTORY.name, CAMPAIGN_RESPONSE.name)
# Archive columns whose null, when the column carries values for some customers, has a meaning
# (vip null: not a key account; products_held null: holds none). When the archive carries no value at all
# for such a column (a minimal archive), it is absent: `bronze.customer_archive.<column>` in ``absent``.
ARCHIVE_DEFAULTED = ("vip", "products_held")


def customer_feature_view(archive: DataFrame, segments: DataFrame, daily: DataFrame, billing: DataFrame,
                          interactions: DataFrame, contacts: DataFrame, responses: DataFrame, *, as_of: dt.date,
                          interval_minutes: int, time_zone: str, params: TagFeatures,
                          absent: frozenset[str] | set[str] = frozenset(), advice: DataFrame | None = None,
                          weather: DataFrame | None = None,
                          holiday_dates: frozenset[dt.date] | set[dt.date] = frozenset()) -> DataFrame:
    """Every source -> view.customer_features (one row per archive customer; columns of contracts.tags.FEATURE_VIEW).

    ``archive``: bronze.customer_archive (its PII columns are never selected);
    ``segments``: gold.customer_segments rows of ``as_of``; ``daily``:
    silver.daily_load_shape rows of the window; the bronze tables whole (each
    is cut to its own look-back here).

    ``advice``: :func:`customer_advice_features` of the as-of (None: the advice stage has not run; its
    columns are null).

    ``weather``: bronze.weather (region, date, temp_mean_c), joined to each meter's days through the
    archive's region (None: absent; every ``weather_reason`` is ``no_weather``). ``holiday_dates``: the
    window's holiday-period days, which vacancy runs skip (:func:`meter_load_features`).

    ``absent``: names of the sources that carry no data for this run (a table
    of :data:`OPTIONAL_SOURCES` missing or empty; ``bronze.customer_archive.<col>``
    for an archive column of :data:`ARCHIVE_DEFAULTED` with no value at all).
    Unknown stays unknown:

    * an absent source makes all its columns null (``bills_12m``,
      ``has_arrears``, ``interactions_12m``, ... null, not 0 / false), whatever
      frame was passed for it (an empty frame or none of the caller's making);
    * billing: a customer with no bill rows at all has null billing columns (no
      record is no data; a customer with bills but none due in the window has
      ``bills_12m`` 0);
    * interactions, contacts, responses: a present table without rows for a
      customer means zero events (counts 0, ``responded_campaigns`` empty);
    * ``do_not_contact`` null stays null (consent is never assumed); ``vip``
      null reads as false and ``products_held`` null as none, unless the column
      is absent.
    """
    absent = frozenset(absent)
    unknown_sources = sorted(a for a in absent if a not in OPTIONAL_SOURCES
                             and a.removeprefix("bronze.customer_archive.") not in ARCHIVE_DEFAULTED)
    if unknown_sources:
        raise ValueError(f"customer_feature_view: unknown absent source(s) {unknown_sources}; known: "
                         f"{list(OPTIONAL_SOURCES) + [f'bronze.customer_archive.{c}' for c in ARCHIVE_DEFAULTED]}")

    def archive_col(name: str, present: Column) -> Column:
        return F.lit(None) if f"bronze.customer_archive.{name}" in absent else present

    base = archive.select(
        "customer_id", "meter_id", "region", "customer_type", "tariff_type", "age_band", "household_size",
        "housing_type", "contracted_capacity_kva",
        archive_col("products_held", F.filter(
            F.transform(F.split(F.coalesce(F.col("products_held"), F.lit("")), ";"), lambda x: F.trim(x)),
            lambda x: x != "")).cast("array<string>").alias("products_held"),
        archive_col("vip", F.coalesce(F.col("vip"), F.lit(False))).cast("boolean").alias("vip"),
        F.col("do_not_contact"),
        (F.datediff(F.lit(as_of), F.col("account_open_date")) / F.lit(365.25)).alias("account_tenure_years"),
        # No close date (or an archive without the column): the account is open.
        (F.coalesce(F.col("account_close_date") <= F.lit(as_of), F.lit(False)) if "account_close_date" in archive.columns
         else F.lit(False)).alias("account_closed"),
    )
    seg = segments.select("meter_id", "segment_id", "segment_label")
    if weather is not None:
        regions = archive.groupBy("meter_id").agg(F.min("region").alias("_region"))
        temps = weather.filter(F.col("date") <= F.lit(as_of)).select(
            F.col("region").alias("_region"), "date", "temp_mean_c")
        daily = daily.join(regions, "meter_id", "left").join(temps, ["_region", "date"], "left").drop("_region")
    load = meter_load_features(daily, as_of=as_of, interval_minutes=interval_minutes, params=params,
                               holiday_dates=holiday_dates)
    df = base.join(seg, "meter_id", "left").join(load, "meter_id", "left")
    # Each present optional source is joined with a marker: the customer has rows in it (or not).
    sources = {
        BILLING_PAYMENT.name: (billing, lambda d: customer_billing_features(d, as_of=as_of,
                                                                               months=params.billing_months)),
        SERVICE_INTERACTION.name: (interactions, lambda d: customer_interaction_features(
            d, as_of=as_of, days=params.interaction_days, time_zone=time_zone)),
        CONTACT_HISTORY.name: (contacts, lambda d: customer_contact_features(
            d, as_of=as_of, days=params.campaign_days, time_zone=time_zone)),
        CAMPAIGN_RESPONSE.name: (responses, lambda d: customer_response_features(
            d, as_of=as_of, days=params.campaign_days, time_zone=time_zone)),
    }
    if advice is not None:
        df = df.join(advice, "customer_id", "left")
    else:
        df = df.select("*", *[F.lit(None).alias(c) for c in ADVICE_COLUMNS])
    present: dict[str, str] = {}
    for i, (name, (frame, build)) in enumerate(sources.items()):
        if name in absent:
            continue
        marker = f"_has_src{i}"
        df = df.join(build(frame).withColumn(marker, F.lit(True)), "customer_id", "left")
        present[name] = marker
    has_rows = {name: F.col(m).isNotNull() for name, m in present.items()}

    def known_if(source: str, value: Column, *, rows_needed: bool = False) -> Column:
        """``value`` where ``source`` is present (and, with ``rows_needed``, has rows for the customer)."""
        if source not in present:
            return F.lit(None)
        return F.when(has_rows[source], value) if rows_needed else value

    group = Window.partitionBy("region", "customer_type", F.col("mean_daily_kwh").isNull()).orderBy("mean_daily_kwh")
    projected = F.col("recent_daily_kwh") * F.lit(30.0)
    bill_cols = ("bills_12m", "late_payments_12m", "unpaid_bills", "arrears_cny", "max_days_late", "mean_bill_cny",
                 "mean_bill_kwh", "bill_kwh_cv", "same_month_last_year_kwh", "payments_online", "payments_offline",
                 "payments_auto_debit")
    billing_known = {c: known_if(BILLING_PAYMENT.name, F.col(c), rows_needed=True) for c in bill_cols}
    baseline = F.coalesce(billing_known["same_month_last_year_kwh"], billing_known["mean_bill_kwh"])
    derived = {
        "as_of": F.lit(as_of),
        "kwh_pct_in_group": F.when(F.col("mean_daily_kwh").isNotNull(), F.percent_rank().over(group)),
        **billing_known,
        "has_arrears": billing_known["unpaid_bills"] > 0,
        "projected_month_kwh": projected,
        "bill_shock_ratio": F.when(baseline > 0, projected / baseline),
        # A customer without load rows has no fit either: too few days, unless there is no weather at all.
        "weather_reason": F.lit("no_weather") if weather is None else F.coalesce(
            F.col("weather_reason"), F.when(F.col("complete_days").isNull(), F.lit("too_few_days"))),
    }
    for c in ("interactions_12m", "interactions_app", "interactions_hotline", "interactions_service_hall",
              "complaints_12m", "repairs_12m", "topic_bill_tariff_12m", "topic_solar_12m", "topic_ev_12m",
              "topic_app_12m"):
        derived[c] = known_if(SERVICE_INTERACTION.name, _int(F.col(c)))
    for c in ("campaign_contacts_12m", "campaigns_contacted_12m"):
        derived[c] = known_if(CONTACT_HISTORY.name, _int(F.col(c)))
    derived["days_since_last_contact"] = known_if(CONTACT_HISTORY.name, F.col("days_since_last_contact"))
    derived["campaign_responses_12m"] = known_if(CAMPAIGN_RESPONSE.name, _int(F.col("campaign_responses_12m")))
    derived["responded_campaigns"] = known_if(
        CAMPAIGN_RESPONSE.name, F.coalesce(F.col("responded_campaigns"), F.array().cast("array<string>")))
    zero_filled = {c.name for c in FEATURE_VIEW.columns if not c.nullable and c.dtype.simpleString() == "int"}
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
