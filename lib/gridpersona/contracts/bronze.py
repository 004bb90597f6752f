"""Bronze contracts: the inputs as landed from the utility's systems, and the rows ingest refused.

Every bronze read and every ingest checks these: a missing column or a wrong type
fails naming the table and the column (:mod:`gridpersona.stages.inputs`,
:mod:`gridpersona.stages.ingest`).
"""

from __future__ import annotations

from gridpersona.contracts.base import B, D, DT, I, S, TS, Column, TableSpec

PAYMENT_CHANNELS = ("app", "wechat", "alipay", "bank_counter", "service_hall", "auto_debit")
INTERACTION_CHANNELS = ("app", "hotline", "service_hall", "wechat")
INTERACTION_TYPES = ("inquiry", "repair", "complaint", "suggestion")
CONTACT_CHANNELS = ("app", "sms", "service_hall", "account_manager")

AMI_INTERVAL = TableSpec(
    "bronze.ami_interval",
    "Raw interval energy readings from the meter-data-management system (MDM), as delivered: "
    "may hold duplicates, gaps, spikes, negative or null values and meters unknown to the archive.",
    (
        Column("meter_id", S, "Meter identifier as used by the MDM.", nullable=False),
        Column("ts", TS, "Start instant of the interval (stored in UTC).", nullable=False),
        Column("kwh", D, "Active energy consumed in the interval (null when the MDM had no value).", "kWh",
               measure=True, non_negative=True, upper_bound_setting="max_interval_kwh"),
        Column("date", DT, "Local calendar date of `ts` in `ami.time_zone`; partition column.", nullable=False),
    ),
    keys=("meter_id", "ts"),
    partition_by=("date",),
    source="MDM interval export, one row per meter and interval (15, 30 or 60 minutes: `ami.interval_minutes`).",
)

CUSTOMER_ARCHIVE = TableSpec(
    "bronze.customer_archive",
    "Customer master data (营销档案): one row per customer account and its meter.",
    (
        Column("customer_id", S, "Customer account number.", nullable=False),
        Column("meter_id", S, "The account's meter.", nullable=False),
        Column("customer_name", S, "Account holder's name.", pii=True),
        Column("phone", S, "Contact phone number.", pii=True),
        Column("address", S, "Supply address.", pii=True),
        Column("region", S, "Supply region / station area code.", nullable=False),
        Column("customer_type", S, "`residential` or `commercial`.", nullable=False),
        Column("tariff_type", S, "Current tariff: `flat_rate`, `tou` (time-of-use) or `tiered`."),
        Column("age_band", S, "Account holder's age band: `18-34`, `35-49`, `50-64`, `65+` (residential)."),
        Column("household_size", I, "Persons in the household (residential).", "persons", non_negative=True),
        Column("housing_type", S, "`apartment`, `house`, `villa` or `shop`/`office` (commercial)."),
        Column("contracted_capacity_kva", D, "Contracted supply capacity.", "kVA", non_negative=True),
        Column("products_held", S, "Semicolon-separated product codes the customer already holds (e.g. `tou;green_power`)."),
        Column("do_not_contact", B, "Customer opted out of marketing contact."),
        Column("vip", B, "Key account / VIP flag."),
        Column("account_open_date", DT, "Date the account was opened."),
        Column("account_close_date", DT, "Date the account was closed (its last day of supply); null while open. "
               "Optional: an archive without any close date leaves churn unknown in gold.campaign_outcomes."),
    ),
    keys=("customer_id",),
    foreign_keys=("meter_id",),
    unique_keys=True,
    source="Customer information / marketing system (营销系统) archive.",
    allowed_values={"customer_type": ("residential", "commercial")},
)

BILLING_PAYMENT = TableSpec(
    "bronze.billing_payment",
    "Monthly bills and their payment: one row per customer and billing month.",
    (
        Column("customer_id", S, "Customer account number.", nullable=False),
        Column("bill_month", DT, "First day of the billed month.", nullable=False),
        Column("bill_kwh", D, "Billed energy.", "kWh", non_negative=True),
        Column("bill_amount_cny", D, "Billed amount.", "CNY"),
        Column("due_date", DT, "Payment due date."),
        Column("paid_date", DT, "Date the bill was paid in full; null while unpaid."),
        Column("paid_amount_cny", D, "Amount paid so far.", "CNY"),
        Column("payment_channel", S, "Channel of the payment: " + ", ".join(f"`{c}`" for c in PAYMENT_CHANNELS) + "; null while unpaid."),
    ),
    keys=("customer_id", "bill_month"),
    unique_keys=True,
    source="Billing and collection system, 12 months history.",
)

SERVICE_INTERACTION = TableSpec(
    "bronze.service_interaction",
    "Service contacts initiated by customers (calls, app tickets, hall visits).",
    (
        Column("interaction_id", S, "Unique interaction id.", nullable=False),
        Column("customer_id", S, "Customer account number.", nullable=False),
        Column("ts", TS, "Instant of the interaction (UTC).", nullable=False),
        Column("channel", S, "One of " + ", ".join(f"`{c}`" for c in INTERACTION_CHANNELS) + ".", nullable=False),
        Column("interaction_type", S, "One of " + ", ".join(f"`{c}`" for c in INTERACTION_TYPES) + ".", nullable=False),
        Column("topic", S, "Free topic code (e.g. `bill`, `outage`, `tariff`, `ev`, `solar`)."),
    ),
    keys=("interaction_id",),
    foreign_keys=("customer_id",),
    unique_keys=True,
    source="Customer service / 95598 hotline and app ticket systems.",
    allowed_values={"channel": INTERACTION_CHANNELS, "interaction_type": INTERACTION_TYPES},
)

CONTACT_HISTORY = TableSpec(
    "bronze.contact_history",
    "Outbound marketing contacts made to customers in earlier campaigns.",
    (
        Column("contact_id", S, "Unique contact id.", nullable=False),
        Column("customer_id", S, "Customer account number.", nullable=False),
        Column("campaign_id", S, "Campaign the contact belonged to.", nullable=False),
        Column("ts", TS, "Instant of the contact (UTC).", nullable=False),
        Column("channel", S, "One of " + ", ".join(f"`{c}`" for c in CONTACT_CHANNELS) + ".", nullable=False),
    ),
    keys=("contact_id",),
    foreign_keys=("customer_id", "campaign_id"),
    unique_keys=True,
    source="CRM / campaign management system.",
    allowed_values={"channel": CONTACT_CHANNELS},
)

CAMPAIGN_RESPONSE = TableSpec(
    "bronze.campaign_response",
    "Outcome per targeted customer of a campaign cycle (treatment and control alike).",
    (
        Column("campaign_id", S, "Campaign id.", nullable=False),
        Column("cycle_as_of", DT, "As-of date of the campaign cycle that targeted the customer.", nullable=False),
        Column("customer_id", S, "Customer account number.", nullable=False),
        Column("responded", B, "Customer took up the offer within the response window.", nullable=False),
        Column("response_ts", TS, "Instant of the response (UTC); null when not responded."),
    ),
    keys=("campaign_id", "cycle_as_of", "customer_id"),
    unique_keys=True,
    source="CRM / campaign management system.",
)

WEATHER = TableSpec(
    "bronze.weather",
    "Daily mean temperature per supply region. Optional: without it the temperature features are null "
    "(reason `no_weather`) and forecasts use no degree-days.",
    (
        Column("region", S, "Supply region / station area code, as the archive's `region` (e.g. `SA01`).",
               nullable=False),
        Column("date", DT, "Local calendar date (`ami.time_zone`).", nullable=False),
        Column("temp_mean_c", D, "Daily mean air temperature; null when the station had no reading.", "deg C",
               measure=True),
    ),
    keys=("region", "date"),
    unique_keys=True,
    source="Meteorological service, the station serving each region (one row per region and day).",
)

HOLIDAY_CALENDAR = TableSpec(
    "bronze.holiday_calendar",
    "Public holidays and make-up working days. Optional: when absent, the built-in calendar of "
    "`calendar.country` applies (`cn` or `none`; lib/gridpersona/config/holidays.py). A date not listed is an "
    "ordinary day (Saturday and Sunday off).",
    (
        Column("date", DT, "The date.", nullable=False),
        Column("holiday_name", S, "The holiday (e.g. `Spring Festival`), also on its make-up working days."),
        Column("day_off", B, "true: a public holiday, off work; false: a make-up working day (调休), a working day "
               "even on a Saturday or Sunday.", measure=True),
    ),
    keys=("date",),
    unique_keys=True,
    source="The State Council's annual holiday arrangement (or the utility's own calendar).",
)

# The landed inputs (ingest's tables), by name.
BRONZE: dict[str, TableSpec] = {
    s.name: s for s in (AMI_INTERVAL, CUSTOMER_ARCHIVE, BILLING_PAYMENT, SERVICE_INTERACTION, CONTACT_HISTORY,
                        CAMPAIGN_RESPONSE, WEATHER, HOLIDAY_CALENDAR)
}

INGEST_REJECTS = TableSpec(
    "bronze.ingest_rejects",
    "Rows of landed files that broke the input contract, with the reason; nothing is dropped silently.",
    (
        Column("ingest_id", S, "Id of the ingest run.", nullable=False),
        Column("target_table", S, "Bronze table the file was landed into.", nullable=False),
        Column("source_file", S, "File the row came from."),
        Column("reason", S, "Why the row was rejected, e.g. `missing_required:meter_id`, `unparseable:kwh`, "
               "`non_finite:kwh`, `negative:kwh`, `absurd_value:kwh`, `key_too_long:meter_id`, `duplicate_key` "
               "(README, Input contract).", nullable=False),
        Column("row_json", S, "The offending row as read, JSON-encoded. For a table with PII columns, values of "
                                  "PII and unknown columns read `***` unless `ingest.rejects_keep_pii`."),
        Column("ingested_at", TS, "Instant of the ingest run (UTC).", nullable=False),
    ),
    partition_by=("target_table",),
)
