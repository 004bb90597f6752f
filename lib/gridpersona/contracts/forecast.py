"""Gold contract of the trend forecasts: gold.segment_forecast (stage ``forecast``).

Monthly kWh per customer group (segment x region, and the per-segment, per-region and overall totals) from
bronze.billing_payment, its forecast for the next months, and a backtest against seasonal-naive. The method
is :mod:`gridpersona.transform.forecast`; docs/forecast.md explains it. Only group keys, no customer.
"""

from __future__ import annotations

from gridpersona.contracts.base import D, DT, I, L, S, Column, TableSpec

FORECAST_LEVELS = ("segment_region", "segment", "region", "all")
FORECAST_KINDS = ("history", "backtest", "forecast", "summary", "overall")
FORECAST_METHODS = ("degree_days_trend", "degree_days_trend_month", "naive_yoy")
FORECAST_REASONS = ("short_history", "no_weather_climatology", "no_backtest")

SEGMENT_FORECAST = TableSpec(
    "gold.segment_forecast",
    "Monthly kWh per customer group and its forecast (seed 000 §2.2.4, seed 004 §3.1). A group is a level "
    "(" + ", ".join(f"`{v}`" for v in FORECAST_LEVELS) + ") and its keys; its monthly kWh is the sum of the "
    "bills (bill_kwh) of its customers billed that month, segment from gold.customer_segments of the as-of, "
    "region from the archive (customers without a segment count only at the region and all levels). "
    "The model forecasts kWh per customer per day from the month's heating and cooling degree-days "
    "(bronze.weather of the group's regions), a linear trend and, with enough history, month effects, and "
    "multiplies by the customers billed in the last month; future months take the climatological degree-days. "
    "Without weather: seasonal-naive times the recent year-over-year ratio. Rows by `kind`: `history` (each "
    "bill month), `backtest` (the last `forecast.backtest_months` months forecast from the months before), "
    "`forecast` (`forecast.horizon_months` months after the last bill month), `summary` (one per group: its "
    "backtest MAPE of model and seasonal-naive), `overall` (one per level: mean of the groups' MAPEs).",
    (
        Column("as_of", DT, "As-of date of the run (bills of months before the as-of's month); partition column.",
               nullable=False),
        Column("level", S, "Group level: `segment_region`, `segment`, `region` or `all`.", nullable=False),
        Column("segment_id", I, "Segment of gold.customer_segments (levels segment_region and segment); null "
               "otherwise."),
        Column("segment_label", S, "The segment's archetype code; null when segment_id is."),
        Column("region", S, "Archive region (levels segment_region and region); null otherwise."),
        Column("kind", S, "`history`, `backtest`, `forecast`, `summary` or `overall`.", nullable=False),
        Column("month", DT, "First day of the month (history, backtest, forecast); null on summary and overall "
               "rows."),
        Column("n_customers", L, "Customers with a bill that month (history, backtest); the customers of the "
               "last month before the forecast's first (forecast: the count the per-customer forecast is "
               "multiplied by); on summary rows, the customers of the last bill month.", "customers"),
        Column("actual_kwh", D, "Billed kWh of the group's customers that month (history, backtest).", "kWh"),
        Column("forecast_kwh", D, "The model's kWh (backtest: fit on the months before the held-out ones; "
               "forecast: on all bill months); null: see `reason`.", "kWh"),
        Column("naive_kwh", D, "Seasonal-naive: the group's billed kWh of the same month a year before; null "
               "without that month.", "kWh"),
        Column("lower_kwh", D, "Lower bound of the prediction interval: forecast x (1 - `forecast.interval_z` "
               "x relative error sd; backtest errors for forecast rows, in-sample residuals for backtest "
               "rows).", "kWh"),
        Column("upper_kwh", D, "Upper bound of the prediction interval (same rule).", "kWh"),
        Column("hdd", D, "Heating degree-days of the month (sum over its days of max(0, `forecast.heating_base_c` "
               "- daily mean); customer-weighted over the group's regions): realised on history rows, "
               "climatological (mean of the same calendar month in the weather before the forecast's first "
               "month) on backtest and forecast rows; null without weather.", "degree-days"),
        Column("cdd", D, "Cooling degree-days of the month (max(0, daily mean - `forecast.cooling_base_c`)), "
               "same rule as `hdd`.", "degree-days"),
        Column("method", S, "How forecast_kwh was made: `degree_days_trend` (regression on degree-days and a "
               "trend), `degree_days_trend_month` (with month effects), `naive_yoy` (no weather: seasonal-naive "
               "x the last `forecast.yoy_months` months' kWh per customer / the same months a year before); null: "
               "see `reason`."),
        Column("reason", S, "Why forecast_kwh is null: `short_history` (too few months for the model and the "
               "fallback), `no_weather_climatology` (weather present but no degree-days for the month's "
               "calendar month and too few months for the fallback); on `overall` rows `no_backtest` (no group of "
               "the level has both backtests, e.g. a lake without bills); null when there is a figure."),
        Column("history_months", I, "Bill months the forecast (backtest: the backtest's fit) rests on.", "months"),
        Column("ape_model_pct", D, "Backtest rows: |forecast - actual| / actual x 100.", "%"),
        Column("ape_naive_pct", D, "Backtest rows: |naive - actual| / actual x 100.", "%"),
        Column("expost_kwh", D, "Backtest rows of the degree-day model: the same fit given the month's realised "
               "degree-days (known by the as-of) instead of the climatological ones: the model's error without "
               "the error of forecasting the weather. Null for the fallback or without the month's weather.",
               "kWh"),
        Column("ape_expost_pct", D, "Backtest rows: |expost - actual| / actual x 100.", "%"),
        Column("mape_model_pct", D, "Summary: mean of the group's backtest ape_model_pct; overall: mean over the "
               "level's groups having both MAPEs.", "%"),
        Column("mape_naive_pct", D, "Summary: mean of the group's backtest ape_naive_pct; overall: same groups "
               "as mape_model_pct.", "%"),
        Column("mape_expost_pct", D, "Summary: mean of the group's backtest ape_expost_pct; overall: mean over "
               "the compared groups that have it.", "%"),
        Column("n_groups", I, "Overall rows: groups of the level compared (both MAPEs known); summary rows: 1 "
               "when the group is compared.", "groups"),
    ),
    keys=("as_of", "level", "segment_id", "region", "kind", "month"),
    partition_by=("as_of",),
    allowed_values={"level": FORECAST_LEVELS, "kind": FORECAST_KINDS, "method": FORECAST_METHODS,
                    "reason": FORECAST_REASONS},
)

SPECS = (SEGMENT_FORECAST,)
