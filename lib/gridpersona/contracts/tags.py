"""Gold contracts of the tag engine: the per-customer feature view and the tables the tags stage writes.

Written down once here. ``conf/tags.yaml`` expressions may name the feature view's
columns (checked at config load, without Spark) and tags defined earlier in the
file; ``docs/tags.md`` is rendered from these specs and ``conf/tags.yaml``
(``python -m gridpersona.config.tagdocs``), and a test keeps the two equal.

Importing this module needs no SparkSession (only ``pyspark.sql.types``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from pyspark.sql import types as T

from gridpersona.contracts.base import ARR_S, B, D, DT, I, L, S, Column, TableSpec

ARR_D = T.ArrayType(D, True)

# Tag value types a definition may declare, and their Spark types.
TAG_TYPES: dict[str, T.DataType] = {"string": S, "boolean": B, "int": I, "double": D}

FEATURE_VIEW = TableSpec(
    "view.customer_features",
    "One row per customer of the archive for an as-of date: the facts every tag expression is written "
    "over. Built in memory by `transform.features.customer_feature_view` (never stored). Windows end on the "
    "as-of date: load features over the run's window (`--window-days`), bills due in the last "
    "`tags.features.billing_months` months, interactions and campaigns of the last `interaction_days` / "
    "`campaign_days` days. Days count only when at least `tags.features.min_completeness` complete. "
    "Unknown stays unknown: billing columns are null when bronze.billing_payment is absent or holds no bill "
    "for the customer; interaction and campaign columns are null when their table is absent or empty "
    "(0 when present without rows for the customer: no events).",
    (
        # archive (no PII) and segment
        Column("as_of", DT, "The as-of date (last local day of the window).", nullable=False),
        Column("customer_id", S, "Customer account number.", nullable=False),
        Column("meter_id", S, "The account's meter.", nullable=False),
        Column("region", S, "Supply region / station area code.", nullable=False),
        Column("customer_type", S, "`residential` or `commercial`.", nullable=False),
        Column("tariff_type", S, "Current tariff: `flat_rate`, `tou` or `tiered`."),
        Column("age_band", S, "Account holder's age band (archive)."),
        Column("household_size", I, "Persons in the household (archive).", "persons"),
        Column("housing_type", S, "`apartment`, `house`, `villa`, `shop`, `office` (archive)."),
        Column("contracted_capacity_kva", D, "Contracted supply capacity.", "kVA"),
        Column("products_held", ARR_S, "Product codes already held (archive `products_held` split on `;`); empty when "
               "none; null when the archive carries no `products_held` for anyone (column absent)."),
        Column("vip", B, "Key account / VIP flag (archive; null read as false; null when the column is absent)."),
        Column("do_not_contact", B, "Opted out of marketing contact (archive). Null: unknown, never read as false "
               "(campaigns treat unknown consent as opted out)."),
        Column("account_tenure_years", D, "Years from `account_open_date` to the as-of date.", "years"),
        Column("account_closed", B, "The account was closed on or before the as-of date (archive "
               "`account_close_date`; no date: open). A closed account is never a campaign target.",
               nullable=False),
        Column("segment_id", I, "Load segment of the meter (gold.customer_segments of the as-of); null if none."),
        Column("segment_label", S, "The segment's archetype code (`evening_peak`, `ev_night`, `vacant`, ...); null if none."),
        # load shape (silver.daily_load_shape over the window)
        Column("days_observed", I, "Days of the window with a daily_load_shape row.", "days", nullable=False),
        Column("complete_days", I, "Days at least `min_completeness` complete; the load features below use only these.",
               "days", nullable=False),
        Column("mean_daily_kwh", D, "Mean daily energy over complete days.", "kWh/day"),
        Column("kwh_pct_in_group", D, "Percent rank (0 lowest .. 1 highest) of `mean_daily_kwh` among customers of the "
               "same `region` and `customer_type`; null without complete days."),
        Column("peak_share", D, "Mean share of daily energy in the tariff's peak periods."),
        Column("flat_share", D, "Mean share of daily energy in the tariff's flat periods."),
        Column("valley_share", D, "Mean share of daily energy in the tariff's valley periods."),
        Column("load_factor", D, "Mean daily load factor (mean / max interval kWh)."),
        Column("weekend_ratio", D, "Mean weekend daily kWh / mean weekday daily kWh."),
        Column("daily_kwh_cv", D, "Coefficient of variation (std / mean) of daily kWh over complete days."),
        Column("peak_to_mean", D, "Mean over complete days of the day's max interval kWh / its mean interval kWh."),
        Column("peak_demand_kw", D, "Highest interval demand of the window (max interval kWh x 60 / interval minutes).", "kW"),
        Column("peak_valley_rate", D, "Peak-valley difference rate (峰谷差率): mean over complete days of the day's "
               "(max slot kWh - min slot kWh) / max slot kWh (days without energy left out)."),
        Column("weekday_curve", ARR_D, "Mean kWh of each wall-clock slot over the complete weekdays (the typical weekday "
               "curve); null without a complete weekday.", "kWh"),
        Column("weekend_curve", ARR_D, "Mean kWh of each slot over the complete weekend days; null without one.", "kWh"),
        Column("complete_nights", I, "Nights (`ev_night_window`, evening of one day to the morning of the next) whose "
               "two days are both present and complete.", "nights", nullable=False),
        Column("night_surge_kw", D, "Median over complete nights of the highest 1-hour mean power minus the night's "
               "lowest 1-hour mean power (its base).", "kW"),
        Column("night_surge_day_share", D, "Share of complete nights that are surge nights: the night's block (longest "
               "run of intervals at least max(`ev_surge_kw`, `ev_surge_ratio` x base) above its base) lasts at least "
               "`ev_min_block_hours` and starts inside `ev_start_window`; null without complete nights."),
        Column("night_block_hours", D, "Median block length over the surge nights (null: none).", "hours"),
        Column("night_block_start_sd_h", D, "Standard deviation of the block's start time over the surge nights: near "
               "0 for a timer (storage heating), about 1 h or more for charging that starts when the car is plugged "
               "in (null: no surge night).", "hours"),
        Column("near_zero_days", I, "Complete days with daily kWh below `near_zero_daily_kwh`, outside holiday periods "
               "(a public holiday and the days off next to it: docs/calendar_weather.md).", "days", nullable=False),
        Column("current_near_zero_run_days", I, "Near-zero complete days in a row ending with the last complete day "
               "outside holiday periods (incomplete days and holiday-period days neither break nor extend a run, so "
               "a run of holiday absence alone is 0).", "days", nullable=False),
        Column("longest_near_zero_run_days", I, "Longest run of near-zero complete days in the window, holiday-period "
               "days skipped as in `current_near_zero_run_days`.", "days", nullable=False),
        # temperature sensitivity (bronze.weather of the meter's region)
        Column("weather_days", I, "Complete days outside holiday periods with a temperature for the meter's region "
               "(bronze.weather): the days the two slopes below are fitted on.", "days", nullable=False),
        Column("heating_kwh_per_degree", D, "Extra daily kWh per heating degree-day (`heating_base_c` - daily mean "
               "temperature, when positive): least-squares slope of daily kWh on heating and cooling degree-days "
               "over `weather_days`. Null when `weather_reason` is set or fewer than 3 of the days need heating.",
               "kWh/degC-day"),
        Column("cooling_kwh_per_degree", D, "Extra daily kWh per cooling degree-day (daily mean temperature - "
               "`cooling_base_c`, when positive), from the same fit. Null when `weather_reason` is set or fewer than "
               "3 of the days need cooling.", "kWh/degC-day"),
        Column("weather_reason", S, "Why both slopes are null: `no_weather` (bronze.weather absent or without the "
               "region's days), `too_few_days` (fewer than `weather_min_days` weather days); null when fitted."),
        Column("recent_daily_kwh", D, "Mean daily kWh over the complete days among the last `recent_days` days.", "kWh/day"),
        Column("history_daily_kwh", D, "Mean daily kWh over the complete days of the window before those.", "kWh/day"),
        Column("recent_vs_history", D, "`recent_daily_kwh` / `history_daily_kwh` (null when either is missing or 0)."),
        # billing and payment (bronze.billing_payment)
        Column("bills_12m", I, "Bills due in the `billing_months` months up to the as-of date.", "bills"),
        Column("late_payments_12m", I, "Of those, bills paid in full after their due date.", "bills"),
        Column("unpaid_bills", I, "Bills past due (due before the as-of date) and not fully paid by it.", "bills"),
        Column("has_arrears", B, "`unpaid_bills > 0`; null when billing is unknown."),
        Column("arrears_cny", D, "Amount still owed on past-due bills (null: billing unknown).", "CNY"),
        Column("max_days_late", I, "Most days past due of any bill in the window (unpaid: up to the as-of date).", "days"),
        Column("mean_bill_cny", D, "Mean billed amount of the window's bills.", "CNY"),
        Column("mean_bill_kwh", D, "Mean billed energy of the window's bills.", "kWh/month"),
        Column("bill_kwh_cv", D, "Coefficient of variation of the window's monthly billed kWh."),
        Column("same_month_last_year_kwh", D, "Billed kWh of the as-of's calendar month one year earlier (null if not billed).",
               "kWh"),
        Column("projected_month_kwh", D, "`recent_daily_kwh` x 30: this month's bill at the current rate.", "kWh"),
        Column("bill_shock_ratio", D, "`projected_month_kwh` / (`same_month_last_year_kwh`, else `mean_bill_kwh`)."),
        Column("payments_online", I, "Payments in the window made online (`app`, `wechat`, `alipay`).", "payments"),
        Column("payments_offline", I, "Payments made offline (`bank_counter`, `service_hall`).", "payments"),
        Column("payments_auto_debit", I, "Payments by automatic debit.", "payments"),
        # service interactions (bronze.service_interaction)
        Column("interactions_12m", I, "Service interactions in the last `interaction_days` days.", "contacts"),
        Column("interactions_app", I, "Of those, through the app or WeChat.", "contacts"),
        Column("interactions_hotline", I, "Through the hotline (95598).", "contacts"),
        Column("interactions_service_hall", I, "At a service hall.", "contacts"),
        Column("complaints_12m", I, "Interactions of type `complaint`.", "contacts"),
        Column("repairs_12m", I, "Interactions of type `repair`.", "contacts"),
        Column("topic_bill_tariff_12m", I, "Interactions about `bill` or `tariff`.", "contacts"),
        Column("topic_solar_12m", I, "Interactions about `solar`.", "contacts"),
        Column("topic_ev_12m", I, "Interactions about `ev`.", "contacts"),
        Column("topic_app_12m", I, "Interactions about the `app`.", "contacts"),
        # campaign history (bronze.contact_history, bronze.campaign_response)
        Column("campaign_contacts_12m", I, "Marketing contacts received in the last `campaign_days` days.", "contacts"),
        Column("campaigns_contacted_12m", I, "Distinct campaigns those contacts belonged to.", "campaigns"),
        Column("campaign_responses_12m", I, "Campaign cycles (as-of in the last `campaign_days` days) the customer "
               "responded to.", "responses"),
        Column("responded_campaigns", ARR_S, "Ids of those campaigns, sorted (null: responses unknown)."),
        Column("days_since_last_contact", I, "Days from the last marketing contact to the as-of date (null: none).", "days"),
        # advice (gold.rate_comparison, gold.neighbour_comparison of the as-of; stage advice)
        Column("rate_days_used", I, "Days the rate advisor priced (null: no rate comparison for the customer).", "days"),
        Column("rate_reason", S, "Why no plan is recommended (gold.rate_comparison.reason); null: one is, or no comparison."),
        Column("recommended_plan_kind", S, "Kind (`flat`, `tou`, `tiered`) of the recommended plan; null: none recommended."),
        Column("tou_annual_saving_cny", D, "Annual saving of the cheapest time-of-use plan over the current plan "
               "(negative: TOU costs more); null: no TOU plan, current plan unknown or no data.", "CNY"),
        Column("neighbour_complete_days", I, "Complete days of the similar-home comparison (null: no comparison).", "days"),
        Column("neighbour_state", S, "`great`, `good` or `above` similar homes (gold.neighbour_comparison.state)."),
        Column("neighbour_vs_median_pct", D, "(kWh - peer median) / peer median over the comparison period."),
    ),
    keys=("as_of", "customer_id"),
)

# The sources a tag may name in `needs` (conf/tags.yaml), each with the view column that is null exactly when
# the source has no data for the customer. A tag needing a source is null for such customers.
SOURCE_MARKERS: dict[str, str] = {
    "bronze.billing_payment": "bills_12m",
    "bronze.service_interaction": "interactions_12m",
    "bronze.contact_history": "campaign_contacts_12m",
    "bronze.campaign_response": "campaign_responses_12m",
    "silver.daily_load_shape": "mean_daily_kwh",
    "gold.customer_segments": "segment_id",
    "gold.rate_comparison": "rate_days_used",
    "gold.neighbour_comparison": "neighbour_complete_days",
}

# gold.customer_tags: these context columns of the feature view first (the campaigns stage's targeting reads
# them), then one column per tag of conf/tags.yaml in file order, then tag_catalog_version.
CUSTOMER_TAGS_CONTEXT = ("as_of", "customer_id", "meter_id", "region", "customer_type", "segment_id", "segment_label",
                         "vip", "do_not_contact", "account_closed", "products_held", "has_arrears", "tariff_type")
TAG_CATALOG_VERSION = "tag_catalog_version"

_VIEW_COLUMNS = {c.name: c for c in FEATURE_VIEW.columns}

CUSTOMER_TAGS = TableSpec(
    "gold.customer_tags",
    "One row per archive customer and as-of date: the customer's context (from the feature view, no PII) and "
    "the value of every tag of conf/tags.yaml (null: not determinable). Campaign rules (conf/campaigns.yaml) "
    "are Spark SQL over these columns.",
    (
        *(replace(_VIEW_COLUMNS[c], description=_VIEW_COLUMNS[c].description
                  + (" Partition column." if c == "as_of" else "")) for c in CUSTOMER_TAGS_CONTEXT),
        Column(TAG_CATALOG_VERSION, S, "`catalog_version` of gold.tag_catalog: the tag definitions that computed "
               "the row.", nullable=False),
    ),
    keys=("as_of", "customer_id"),
    partition_by=("as_of",),
    configured_columns="One column per tag of conf/tags.yaml, in file order, between `tariff_type` and "
                       "`tag_catalog_version`: named by the tag's `code`, typed by its `type` (string, boolean, "
                       "int, double), null where the tag is not determinable. The tags and their definitions: "
                       "[docs/tags.md](tags.md).",
)


class TagColumn(Protocol):
    """What a tag column needs of a tag definition (``gridpersona.config.TagDefinition`` has it)."""

    code: str
    type: str
    en: str
    definition: str


def customer_tags_spec(tags: Iterable[TagColumn]) -> TableSpec:
    """gold.customer_tags' contract for these tag definitions (conf/tags.yaml ``definitions``, in order):
    the context columns, one nullable column per tag, then ``tag_catalog_version``."""
    *context, version = CUSTOMER_TAGS.columns
    tag_columns = tuple(Column(t.code, TAG_TYPES[t.type], f"{t.en}: {t.definition}") for t in tags)
    return replace(CUSTOMER_TAGS, columns=(*context, *tag_columns, version), configured_columns="")


def customer_tags_columns(tags: Iterable[TagColumn]) -> list[str]:
    """The column names of gold.customer_tags for these tag definitions: what campaign rules may name."""
    return customer_tags_spec(tags).column_names


# Days in a (mean) month: monthly_mean_kwh = mean_daily_kwh x this.
DAYS_PER_MONTH = 365.25 / 12


def _portrait_column(name: str, extra: str = "") -> Column:
    """A feature view column as gold.customer_portrait carries it (same type, unit and meaning)."""
    c = _VIEW_COLUMNS[name]
    return replace(c, description=c.description + extra)


CUSTOMER_PORTRAIT = TableSpec(
    "gold.customer_portrait",
    "Portrait fields as numbers (seed 003 §4.1, Table 1): per customer and as-of date, the figures behind the "
    "categorical tags of gold.customer_tags, from the same feature view (a select of its columns, written by the "
    "tags stage). No PII. Unknown stays null: load figures are null for a customer without a complete day in "
    "the window (`days_used` 0; `days_observed` tells whether the days were missing or incomplete).",
    (
        _portrait_column("as_of", " Partition column."),
        _portrait_column("customer_id"),
        _portrait_column("customer_type"),
        _portrait_column("region"),
        _portrait_column("segment_id"),
        _portrait_column("segment_label"),
        _portrait_column("days_observed"),
        Column("days_used", I, "Complete days the load figures rest on (`complete_days` of the feature view: days at "
               "least `tags.features.min_completeness` complete); 0: every load figure is null.", "days",
               nullable=False),
        Column("monthly_mean_kwh", D, "Monthly mean energy (月均用电量): `mean_daily_kwh` x 365.25 / 12.", "kWh/month"),
        _portrait_column("mean_daily_kwh"),
        *(_portrait_column(c) for c in ("peak_share", "flat_share", "valley_share", "load_factor", "peak_to_mean",
                                        "peak_valley_rate", "weekend_ratio", "daily_kwh_cv", "peak_demand_kw",
                                        "kwh_pct_in_group", "heating_kwh_per_degree", "cooling_kwh_per_degree",
                                        "weather_reason")),
        Column("payment_channel_pref", S, "The `payment_channel_pref` tag of gold.customer_tags (`online`, `offline`, "
               "`auto_debit`; null: not determinable or no such tag configured)."),
        Column("payment_channel_share", D, "Share of the window's payments (online + offline + auto-debit) made "
               "through the preferred channel family; null with the preference."),
        Column("interaction_channel_pref", S, "The `interaction_channel_pref` tag (`app`, `hotline`, `service_hall`; "
               "null: not determinable or no such tag configured)."),
        Column("interaction_channel_share", D, "Share of the app, hotline and service-hall contacts made through the "
               "preferred channel; null with the preference."),
        _portrait_column("weekday_curve"),
        _portrait_column("weekend_curve"),
    ),
    keys=("as_of", "customer_id"),
    partition_by=("as_of",),
)


TAG_CATALOG = TableSpec(
    "gold.tag_catalog",
    "The tag definitions a tags run used (conf/tags.yaml), one row per tag per as-of date.",
    (
        Column("as_of", DT, "As-of date of the tags run; partition column.", nullable=False),
        Column("catalog_version", S, "Hash of all definitions (taxonomy, features, tags): changes when any changes.",
               nullable=False),
        Column("position", I, "Order of the tag in conf/tags.yaml (and of its column in gold.customer_tags).",
               nullable=False),
        Column("code", S, "Tag code = column name in gold.customer_tags.", nullable=False),
        Column("name_zh", S, "Chinese name.", nullable=False),
        Column("name_en", S, "English name.", nullable=False),
        Column("level1", S, "Level-1 category code (seed 000 Table 2).", nullable=False),
        Column("level1_zh", S, "Level-1 category, Chinese.", nullable=False),
        Column("level1_en", S, "Level-1 category, English.", nullable=False),
        Column("level2", S, "Level-2 category code.", nullable=False),
        Column("level2_zh", S, "Level-2 category, Chinese.", nullable=False),
        Column("level2_en", S, "Level-2 category, English.", nullable=False),
        Column("value_type", S, "`string`, `boolean`, `int` or `double`.", nullable=False),
        Column("allowed_values", ARR_S, "Values a string tag may take (empty: free); null always means not determinable.",
               nullable=False),
        Column("open_values", B, "True: `allowed_values` lists the known values only; others are accepted (e.g. "
               "generated segment labels).", nullable=False),
        Column("needs", ARR_S, "Sources and feature view columns the tag needs (conf/tags.yaml `needs`); without "
               "them the tag is null (unknown) for the customer.", nullable=False),
        Column("coverage", D, "Share of the as-of's customers with a known (non-null) value of the tag."),
        Column("expression", S, "Spark SQL expression over view.customer_features (and earlier tags).", nullable=False),
        Column("definition", S, "One-line definition for people.", nullable=False),
        Column("definition_hash", S, "Hash of this tag's definition alone.", nullable=False),
    ),
    keys=("as_of", "code"),
    partition_by=("as_of",),
)

SEGMENT_TAG_PROFILE = TableSpec(
    "gold.segment_tag_profile",
    "Group portraits (seed 000 §2.2.1): per as-of, load segment and tag, how the segment's customers spread over "
    "the tag's values, against the whole population. Segment -1 / `all` is the whole population.",
    (
        Column("as_of", DT, "As-of date; partition column.", nullable=False),
        Column("segment_id", I, "Load segment (-1: all customers).", nullable=False),
        Column("segment_label", S, "Segment archetype code (`all` for the population, `unsegmented` for customers "
               "without a segment).", nullable=False),
        Column("tag", S, "Tag code (a column of gold.customer_tags).", nullable=False),
        Column("value", S, "Tag value as text (`true`/`false` for boolean tags); null: not determinable."),
        Column("customers", L, "Customers of the segment with that value.", nullable=False),
        Column("share", D, "`customers` / the segment's customers.", nullable=False),
        Column("population_share", D, "Share of the value among all customers.", nullable=False),
        Column("lift", D, "`share` / `population_share`: above 1, the value is over-represented in the segment."),
    ),
    keys=("as_of", "segment_id", "tag", "value"),
    partition_by=("as_of",),
)

CONSUMPTION_PRICE_QUADRANT = TableSpec(
    "gold.consumption_price_quadrant",
    "Consumption level x price sensitivity (seed 000 §2.2.2) per customer type: the 3 x 3 grid of the two tags "
    "with the seed's four quadrants named on the corner cells.",
    (
        Column("as_of", DT, "As-of date; partition column.", nullable=False),
        Column("customer_type", S, "`residential` or `commercial` (consumption level is a percentile within type).",
               nullable=False),
        Column("consumption_level", S, "`high`, `medium`, `low`; null: not determinable."),
        Column("price_sensitivity", S, "`high`, `medium`, `low`; null: not determinable."),
        Column("quadrant", S, "`high_use_high_sensitivity`, `high_use_low_sensitivity`, `low_use_high_sensitivity`, "
               "`low_use_low_sensitivity` on the corner cells; null elsewhere."),
        Column("quadrant_zh", S, "The quadrant's Chinese name (高用电量—高敏感度 ...)."),
        Column("customers", L, "Customers in the cell.", nullable=False),
        Column("share", D, "Of the customer type's customers.", nullable=False),
        Column("mean_daily_kwh", D, "Mean of the cell's customers' mean daily kWh.", "kWh/day"),
        Column("ev_owners", L, "Customers tagged EV owner in the cell.", nullable=False),
        Column("tou_tariff", L, "Customers on a time-of-use tariff in the cell.", nullable=False),
    ),
    keys=("as_of", "customer_type", "consumption_level", "price_sensitivity"),
    partition_by=("as_of",),
)

TAG_ASSOCIATION_RULES = TableSpec(
    "gold.tag_association_rules",
    "Association rules between tag values (seed 000 §2.2.3, seed 003 §4.1: cross-selling groups), mined with "
    "MLlib FPGrowth over one basket per customer of the as-of: the items are the customer's known tag values "
    "(`code` for a true boolean tag, `code=value` for a categorical one) and banded load figures "
    "(`valley_share=high`), as configured in `association_rules`. An unknown (null) value gives no item. "
    "Rules meeting min_support, min_confidence and min_lift (a longer antecedent only when its confidence beats "
    "the rules with one item fewer by min_improvement), the strongest `max_rules` by lift.",
    (
        Column("as_of", DT, "As-of date; partition column.", nullable=False),
        Column("rule_rank", I, "1 = the highest lift (ties: higher confidence, support, then the items' text).",
               nullable=False),
        Column("antecedent", ARR_S, "Items of the rule's left-hand side, sorted.", nullable=False),
        Column("consequent", ARR_S, "The item the rule predicts (one item).", nullable=False),
        Column("support", D, "`rule_count` / `n_customers`: share of customers holding every item of the rule.",
               nullable=False),
        Column("confidence", D, "`rule_count` / `antecedent_count`: of the customers holding the antecedent, the "
               "share also holding the consequent.", nullable=False),
        Column("lift", D, "`confidence` / `consequent_support`: above 1, the antecedent makes the consequent more "
               "likely than in the population.", nullable=False),
        Column("consequent_support", D, "`consequent_count` / `n_customers`.", nullable=False),
        Column("n_customers", L, "Baskets: the as-of's customers in gold.customer_tags (a customer with no known "
               "item counts, with an empty basket).", "customers", nullable=False),
        Column("antecedent_count", L, "Customers holding every antecedent item.", "customers", nullable=False),
        Column("consequent_count", L, "Customers holding the consequent item.", "customers", nullable=False),
        Column("rule_count", L, "Customers holding every item of the rule.", "customers", nullable=False),
        Column("item_bands", S, "The cut points of the banded items this as-of (e.g. `valley_share: low < 0.21 <= "
               "mid < 0.34 <= high`), `;`-separated; null when no band is configured."),
        Column("tag_catalog_version", S, "`catalog_version` of gold.tag_catalog: the tag definitions of the items.",
               nullable=False),
        Column("model_version", S, "Segment model of the as-of's gold.customer_segments (the `usage_pattern` "
               "items); null when the as-of has none."),
    ),
    keys=("as_of", "antecedent", "consequent"),
    partition_by=("as_of",),
)

# The tables beside gold.customer_tags that the tags and profile stages write (docs/tags.md documents them too).
OUTPUT_SPECS = (TAG_CATALOG, CUSTOMER_PORTRAIT, SEGMENT_TAG_PROFILE, CONSUMPTION_PRICE_QUADRANT, TAG_ASSOCIATION_RULES)
SPECS = (CUSTOMER_TAGS, *OUTPUT_SPECS)


def feature_columns() -> dict[str, T.DataType]:
    """Feature view column -> Spark type."""
    return {c.name: c.dtype for c in FEATURE_VIEW.columns}
