"""Table contracts: each table's schema, keys, partitioning and column meanings.

Written down once here; the data dictionary (docs/data_dictionary.md) is
rendered from these specs and the lake layer checks them where data enters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import types as T

ARCHETYPES = ("evening_peak", "flat", "night", "double_peak", "ev_night", "vacant", "commercial_day", "electric_heating")

FAULT_CODES = ("short_gap", "long_gap", "duplicate", "spike", "negative", "null_value", "unknown_meter")


@dataclass(frozen=True)
class Column:
    name: str
    dtype: T.DataType
    description: str
    unit: str = ""
    nullable: bool = True
    pii: bool = False
    # The measured value the table exists for: its column must be in every landed file, although a
    # single value may be null (unknown). A file without it is refused, never filled with nulls.
    measure: bool = False
    # A value below zero cannot be true (energy consumed, capacity, persons): rejected as `negative`.
    non_negative: bool = False
    # The `ingest.*` setting bounding a plausible value (above it: rejected as `absurd_value`).
    upper_bound_setting: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str  # layer.table
    description: str
    columns: tuple[Column, ...]
    keys: tuple[str, ...] = ()
    partition_by: tuple[str, ...] = ()
    source: str = ""
    allowed_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Columns naming a row of another table (a customer's meter, a contact's customer).
    foreign_keys: tuple[str, ...] = ()
    # One row per key: a second row for a key, within one ingest or against the stored table, is a
    # conflict (ingest.on_duplicate_key). False where duplicates are a known fault that a later stage
    # detects (bronze.ami_interval: clean quarantines them).
    unique_keys: bool = False

    @property
    def schema(self) -> T.StructType:
        return T.StructType([T.StructField(c.name, c.dtype, c.nullable) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if not c.nullable]

    @property
    def identifiers(self) -> list[str]:
        """String columns that identify a row here or elsewhere (keys and foreign keys): length-checked."""
        names = set(self.keys) | set(self.foreign_keys)
        return [c.name for c in self.columns if c.name in names and isinstance(c.dtype, T.StringType)]

    @property
    def fractional(self) -> list[str]:
        """Floating-point columns: NaN and infinities can reach them and are never a reading."""
        return [c.name for c in self.columns if isinstance(c.dtype, (T.DoubleType, T.FloatType))]


S, D, TS, DT, L, I, B = T.StringType(), T.DoubleType(), T.TimestampType(), T.DateType(), T.LongType(), T.IntegerType(), T.BooleanType()

PAYMENT_CHANNELS = ("app", "wechat", "alipay", "bank_counter", "service_hall", "auto_debit")
INTERACTION_CHANNELS = ("app", "hotline", "service_hall", "wechat")
INTERACTION_TYPES = ("inquiry", "repair", "complaint", "suggestion")
CONTACT_CHANNELS = ("app", "sms", "service_hall", "account_manager")

BRONZE: dict[str, TableSpec] = {
    spec.name: spec
    for spec in [
        TableSpec(
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
        ),
        TableSpec(
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
            ),
            keys=("customer_id",),
            foreign_keys=("meter_id",),
            unique_keys=True,
            source="Customer information / marketing system (营销系统) archive.",
            allowed_values={"customer_type": ("residential", "commercial")},
        ),
        TableSpec(
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
        ),
        TableSpec(
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
        ),
        TableSpec(
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
        ),
        TableSpec(
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
        ),
    ]
}

TRUTH: dict[str, TableSpec] = {
    spec.name: spec
    for spec in [
        TableSpec(
            "truth.meters",
            "Synthetic ground truth per meter (written by `generate`, never read by the pipeline).",
            (
                Column("meter_id", S, "Meter id.", nullable=False),
                Column("customer_id", S, "Customer owning the meter; null for meters unknown to the archive."),
                Column("archetype", S, "True load archetype: " + ", ".join(f"`{a}`" for a in ARCHETYPES) + ".", nullable=False),
                Column("in_archive", B, "False for meters planted as unknown to the archive.", nullable=False),
                Column("mean_daily_kwh", D, "Scale of the household's consumption.", "kWh/day"),
                Column("ev_owner", B, "Planted: owns an EV charged at night."),
                Column("vacant", B, "Planted: premises vacant (near-zero load for long stretches)."),
                Column("bill_shock", B, "Planted: the meter's load surges 1.8-2.4x over the window's last 14-21 days (bill shock)."),
                Column("credit_rating", S, "Planted: `good`, `medium` or `poor` payment behaviour."),
                Column("payment_channel_pref", S, "Planted: `online`, `offline` or `auto_debit`."),
                Column("interaction_channel_pref", S, "Planted: `app`, `hotline` or `service_hall`."),
            ),
            keys=("meter_id",),
        ),
        TableSpec(
            "truth.faults",
            "Synthetic ground truth: every planted fault, one row per affected reading (interval).",
            (
                Column("meter_id", S, "Meter id.", nullable=False),
                Column("ts", TS, "Start instant of the affected interval (UTC).", nullable=False),
                Column("fault", S, "One of " + ", ".join(f"`{f}`" for f in FAULT_CODES) + ".", nullable=False),
            ),
            keys=("meter_id", "ts", "fault"),
        ),
        TableSpec(
            "truth.campaigns",
            "Synthetic ground truth per campaign of the snapshot day's cycle: the planted response rates "
            "behind its bronze.campaign_response rows.",
            (
                Column("campaign_id", S, "Campaign id (conf/campaigns.yaml).", nullable=False),
                Column("cycle_as_of", DT, "As-of date of the cycle (the lake's last day).", nullable=False),
                Column("base_rate", D, "Planted response probability in the control group.", nullable=False),
                Column("true_uplift", D, "Planted absolute uplift: treatment probability minus base_rate.", nullable=False),
                Column("holdout_share", D, "Holdout share the treatment/control hash used.", nullable=False),
            ),
            keys=("campaign_id", "cycle_as_of"),
        ),
    ]
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

ALL_SPECS: dict[str, TableSpec] = {**BRONZE, **TRUTH, INGEST_REJECTS.name: INGEST_REJECTS}


def gold_specs() -> dict[str, TableSpec]:
    """Contracts of gold tables that are written down beside their transformation (imported lazily)."""
    from gridpersona.transform.campaign_outcomes import CAMPAIGN_EVALUATION_SPEC

    return {CAMPAIGN_EVALUATION_SPEC.name: CAMPAIGN_EVALUATION_SPEC}


def spec_for(table: str) -> TableSpec | None:
    return ALL_SPECS.get(table) or gold_specs().get(table)


def pii_columns() -> set[str]:
    return {c.name for spec in ALL_SPECS.values() for c in spec.columns if c.pii}
