"""Gold contracts of customer advice: gold.rate_comparison and gold.neighbour_comparison (stage ``advice``),
gold.alert_targets (stage ``alerts``).

Prices and bill periods are :mod:`gridpersona.transform.pricing`; peer groups
:mod:`gridpersona.transform.neighbours`; projections :mod:`gridpersona.transform.alerts`.
Only ``customer_id`` identifies anyone: no PII.
"""

from __future__ import annotations

from pyspark.sql import types as T

from gridpersona.contracts.base import B, D, DT, I, L, S, Column, TableSpec

MONEY = T.DecimalType(14, 2)
RATE_REASONS = ("insufficient_data", "current_plan_unknown", "already_cheapest", "saving_below_min")
NEIGHBOUR_STATES = ("great", "good", "above")
NEIGHBOUR_REASONS = ("insufficient_data", "no_group")
ALERT_TYPES = ("bill_projection", "vacancy")

RATE_COMPARISON = TableSpec(
    "gold.rate_comparison",
    "The rate advisor: each customer's bill over the window under every tariff plan they are eligible for "
    "(`tariff.plans`), priced from their own slot kWh of silver.daily_load_shape, annualised, ranked, and the "
    "plan recommended when the saving is worth it and rests on enough data. A calendar month is a bill period; "
    "a month's kWh is estimated from its priced days (`rate_advisor.min_completeness`) and a partial month pays "
    "its share of the month's bill (docs/tags-and-campaigns.md, Rate advisor).",
    (
        Column("as_of", DT, "As-of date of the run; partition column.", nullable=False),
        Column("customer_id", S, "Customer account number.", nullable=False),
        Column("customer_type", S, "`residential` or `commercial` (archive); customers of unknown type have no "
               "eligible plan and no rows, nor have accounts closed by the as-of (`account_close_date`).",
               nullable=False),
        Column("plan_id", S, "Plan priced (`tariff.plans`).", nullable=False),
        Column("plan_kind", S, "`flat`, `tou` or `tiered`.", nullable=False),
        Column("is_current_plan", B, "The plan the customer is billed on now (archive tariff_type via "
               "`tariff.current_plan`); null when that is unknown."),
        Column("window_first", DT, "First day of the window.", nullable=False),
        Column("window_last", DT, "Last day of the window (the as-of).", nullable=False),
        Column("days_in_window", I, "Window days in the months that had a priced day (the bill covers them).",
               "days", nullable=False),
        Column("days_used", I, "Days priced: complete enough (`rate_advisor.min_completeness`).", "days",
               nullable=False),
        Column("kwh_peak", D, "kWh of the priced days in the peak periods.", "kWh"),
        Column("kwh_flat", D, "kWh of the priced days in the flat periods.", "kWh"),
        Column("kwh_valley", D, "kWh of the priced days in the valley periods.", "kWh"),
        Column("window_bill_cny", MONEY, "Bill for `days_in_window` under the plan: per month, "
               "round_half_up(price(month kWh estimate) x window days / month days, 2), summed; null: no priced "
               "day.", "CNY"),
        Column("annual_bill_cny", MONEY, "`window_bill_cny` x 365 / `days_in_window`, to the cent (a window of "
               "one season is that season's rate).", "CNY"),
        Column("current_plan_id", S, "The customer's current plan; null: unknown (no saving is computed)."),
        Column("annual_saving_cny", MONEY, "Current plan's annual bill minus this plan's (positive: this plan "
               "is cheaper); null when the current plan is unknown.", "CNY"),
        Column("cost_rank", I, "1 = the cheapest eligible plan (ties: plan id); null without a bill."),
        Column("recommended_plan_id", S, "The cheapest plan, when recommended (same on all the customer's rows); "
               "null: see `reason`."),
        Column("recommended_saving_cny", MONEY, "Annual saving of the recommended plan.", "CNY"),
        Column("reason", S, "Why nothing is recommended: " + ", ".join(f"`{r}`" for r in RATE_REASONS)
               + "; null when a plan is recommended."),
        Column("tariff_version", S, "Hash of the tariff configuration the bills were priced with.",
               nullable=False),
    ),
    keys=("as_of", "customer_id", "plan_id"),
    partition_by=("as_of",),
    allowed_values={"plan_kind": ("flat", "tou", "tiered"), "reason": RATE_REASONS},
)

NEIGHBOUR_COMPARISON = TableSpec(
    "gold.neighbour_comparison",
    "Similar-home comparison (seed 000 §2.3.2(2)): each customer's kWh over the window's last "
    "`neighbours.period_days` days against the median and the efficient mark (the "
    "`neighbours.efficient_percentile` percentile, exact) of a peer group of similar homes from the archive. "
    "Accounts closed by the as-of are left out. The group is the finest key list of `neighbours.keys` / `neighbours.fallback` with at least "
    "`neighbours.min_peers` customers that have a figure; a customer whose attributes are unknown at a level "
    "moves to the next. Peer statistics exist only for groups of at least `min_peers`.",
    (
        Column("as_of", DT, "As-of date of the run; partition column.", nullable=False),
        Column("customer_id", S, "Customer account number.", nullable=False),
        Column("customer_type", S, "`residential` or `commercial` (archive)."),
        Column("period_first", DT, "First day compared.", nullable=False),
        Column("period_last", DT, "Last day compared (the as-of).", nullable=False),
        Column("complete_days", I, "Complete days in the period (`neighbours.min_completeness`).", "days",
               nullable=False),
        Column("kwh_period", D, "Mean daily kWh of the complete days x the days compared (`period_first` .. "
               "`period_last`: `neighbours.period_days`, or the run's window when shorter); null below "
               "`neighbours.min_days` complete days.", "kWh"),
        Column("group_level", I, "0 = `neighbours.keys`, 1.. = the fallback lists in order; null: no group.",),
        Column("group_keys", S, "The attributes of the group used, comma-separated."),
        Column("group_key", S, "The customer's values of them, `|`-separated (household size as its band)."),
        Column("peer_count", L, "Customers with a figure in the group (the customer included).", "customers"),
        Column("peer_median_kwh", D, "The group's median `kwh_period` (exact percentile).", "kWh"),
        Column("efficient_kwh", D, "The group's efficient mark: its `efficient_percentile` percentile (exact, "
               "linear interpolation).", "kWh"),
        Column("peer_pct", D, "Share of the group using less than the customer (0 = the lowest)."),
        Column("vs_median_pct", D, "(kwh_period - peer_median_kwh) / peer_median_kwh."),
        Column("state", S, "`great` (at or below the efficient mark), `good` (at or below the median), `above`; "
               "null: see `state_reason`."),
        Column("state_reason", S, "Why there is no state: `insufficient_data` (too few complete days), "
               "`no_group` (no group of min_peers at any level)."),
    ),
    keys=("as_of", "customer_id"),
    partition_by=("as_of",),
    allowed_values={"state": NEIGHBOUR_STATES, "state_reason": NEIGHBOUR_REASONS},
)

ALERT_BASELINE_SOURCES = ("same_month_last_year", "recent_bills_mean")

ALERT_TARGETS = TableSpec(
    "gold.alert_targets",
    "Mid-cycle alerts (seed 000 §2.3.2(1)): on each day of a bill period (the calendar month in "
    "`ami.time_zone`) the period's kWh per tariff period is projected from the complete days so far plus the "
    "mean of the complete days among the last `alerts.recent_days` days for every day missing or left, priced "
    "on the customer's current plan, and compared with the bill of the same month last year (else the mean of "
    "the last `alerts.baseline_months` bills when that is not 0). A `bill_projection` row is written on the "
    "first day the projection reaches max(`alerts.ratio` x baseline, baseline + `alerts.min_increase_cny`), the "
    "baseline scaled by `weather_factor` and `peer_factor` (`alerts.baseline_adjust`), once "
    "`alerts.min_days_elapsed` days of the period have passed; a `vacancy` row on the first day of the period "
    "that ends `alerts.vacancy_run_days` complete near-zero days in a row. At most one row per customer, alert "
    "type and bill period: a stored row for them suppresses every later one. Customers whose do_not_contact is "
    "true or unknown get no row (docs/tags-and-campaigns.md, Mid-cycle alerts).",
    (
        Column("alert_date", DT, "The day whose data crossed the threshold (the alert is sent after it); "
               "partition column.", nullable=False),
        Column("customer_id", S, "Customer account number.", nullable=False),
        Column("alert_type", S, "`bill_projection` (projected bill over the threshold) or `vacancy` (a run of "
               "near-zero days).", nullable=False),
        Column("period_start", DT, "First day of the bill period (a calendar month).", nullable=False),
        Column("period_end", DT, "Last day of the bill period.", nullable=False),
        Column("days_elapsed", I, "Days of the period up to and including `alert_date`.", "days", nullable=False),
        Column("days_left", I, "Days of the period after `alert_date`.", "days", nullable=False),
        Column("complete_days", I, "Days of the period so far with completeness >= `alerts.min_completeness`.",
               "days", nullable=False),
        Column("kwh_so_far", D, "kWh of those complete days.", "kWh", nullable=False),
        Column("projected_kwh", D, "Projected kWh of the whole period: `kwh_so_far` + (days missing or left) x "
               "the recent daily kWh; null: no complete day among the last `alerts.recent_days`.", "kWh"),
        Column("plan_id", S, "The customer's current plan (`tariff.current_plan`); null: unknown (no bill "
               "projection in currency)."),
        Column("projected_bill_cny", MONEY, "The projected period kWh (per tariff period) priced on `plan_id`, "
               "to the cent; null when the plan or the projection is unknown.", "CNY"),
        Column("baseline_cny", MONEY, "The bill the projection is compared with; null: no bill (no bill alert).",
               "CNY"),
        Column("baseline_source", S, "`same_month_last_year` (the bill of the same month a year earlier) or "
               "`recent_bills_mean` (the mean of the last `alerts.baseline_months` bills before the period)."),
        Column("weather_factor", D, "The customer's own degree-day fit (kWh/day of their bill months on the "
               "months' mean heating and cooling degree-days of bronze.weather in their `region`, least squares "
               "over at least `alerts.weather_min_bills` bills before the period) predicted at the period's "
               "degree-days so far (extrapolated like the projection) over predicted at the baseline month's, "
               "clipped to [`alerts.weather_factor_min`, `alerts.weather_factor_max`], 6 decimals. Null: not "
               "applied (`alerts.baseline_adjust` none or peer, bronze.weather absent, fewer bills, no region or "
               "degree-days, a `recent_bills_mean` baseline, or no baseline).", "ratio"),
        Column("peer_factor", D, "The median, over the customers of the same `region` (the archive's; a null "
               "region: everyone) with a baseline and a projected bill on `alert_date`, of projected bill / "
               "baseline (x `weather_factor` when that applies), rounded to 6 decimals: the rise the season "
               "(weather, growth) gives everyone, which scales the baseline in the threshold. Null: not "
               "applied (`alerts.baseline_adjust` none or weather, fewer than `alerts.min_peers` such "
               "customers, or no baseline).", "ratio"),
        Column("threshold_cny", MONEY, "max(`alerts.ratio` x adjusted baseline, adjusted baseline + "
               "`alerts.min_increase_cny`), to the cent, where the adjusted baseline is `baseline_cny` x "
               "`weather_factor` x `peer_factor` (to the cent; a null factor counts 1).", "CNY"),
        Column("near_zero_run_days", I, "Complete near-zero days in a row (`tags.features.near_zero_daily_kwh`) "
               "ending on `alert_date`, within the period (incomplete days neither count nor break the run).",
               "days", nullable=False),
        Column("ab_group", S, "`treatment` (send) or `control` (written, not sent): the holdout hash of the "
               "customer with `bill_alert` / `vacancy_alert` at `alerts.holdout_share`.", nullable=False),
    ),
    keys=("alert_date", "customer_id", "alert_type"),
    partition_by=("alert_date",),
    allowed_values={"alert_type": ALERT_TYPES, "baseline_source": ALERT_BASELINE_SOURCES,
                    "ab_group": ("treatment", "control")},
)

SPECS = (RATE_COMPARISON, NEIGHBOUR_COMPARISON, ALERT_TARGETS)
