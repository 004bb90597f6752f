"""Layered, validated configuration.

``conf/base.yaml`` < ``conf/<env>.yaml`` < ``--set key=value`` overrides, merged
key by key and validated against the models below. Every key remembers which
layer set it, so an unknown key or a wrong type is reported with the file (or
``--set``) and the dotted key, before any Spark work starts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CONF_DIR = PROJECT_ROOT / "conf"


class ConfigError(Exception):
    """Configuration is missing, malformed or invalid; the message names file and key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LakeConfig(_Section):
    root: str = "./lake"
    backend: Literal["deltalake", "delta-spark"] = "deltalake"
    # Optional per-table location overrides: {"bronze.ami_interval": "/mnt/mdm/ami"}.
    locations: dict[str, str] = Field(default_factory=dict)

    @field_validator("locations")
    @classmethod
    def _table_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", name):
                raise ValueError(f"table name {name!r} must look like layer.table")
        return v


class SparkConfig(_Section):
    master: str | None = "local[*]"
    app_name: str = "gridpersona"
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = "WARN"
    show_progress: bool = False
    # While a stage runs, log the running Spark stage and its tasks done every this many seconds
    # (0: never), so a long pass is never silent.
    progress_log_seconds: float = Field(30.0, ge=0)
    # Passed to SparkSession.builder.config() unchanged (cluster settings go here).
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)


_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


def parse_hhmm_range(text: str) -> tuple[int, int]:
    """'08:00-11:30' -> (480, 690) minutes after local midnight; '23:00-07:00' wraps."""
    m = _HHMM.match(text)
    if not m:
        raise ValueError(f"time range {text!r} must look like HH:MM-HH:MM")
    start = int(m[1]) * 60 + int(m[2])
    end = int(m[3]) * 60 + int(m[4])
    if start > 1440 or end > 1440 or start == end:
        raise ValueError(f"time range {text!r} is empty or past 24:00")
    return start, end


def range_minutes(text: str) -> list[int]:
    """The minutes after local midnight a time range holds: '23:00-01:00' -> [1380 .. 1439, 0 .. 59]."""
    start, end = parse_hhmm_range(text)
    return [*range(start, end)] if start < end else [*range(start, 1440), *range(0, end)]


def _exact_decimal(v):
    """A price or a kWh limit as written in YAML, exactly: 0.56 is Decimal('0.56'), not the float's binary value."""
    if v is None or isinstance(v, Decimal):
        return v
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    try:
        return Decimal(str(v))
    except InvalidOperation:
        raise ValueError(f"expected a number, got {v!r}") from None


def _at_most_decimals(places: int):
    def check(v):
        if v is not None and -v.as_tuple().exponent > places:
            raise ValueError(f"{v} has more than {places} decimals")
        return v
    return check


class PriceBlock(_Section):
    # A tiered (阶梯) block: kWh of the bill period up to `up_to_kwh` (the last block: no limit) at `price`.
    up_to_kwh: Decimal | None = Field(None, gt=0)
    price: Decimal = Field(ge=0)

    _price = field_validator("price", "up_to_kwh", mode="before")(_exact_decimal)
    # Bills are exact at 10 decimals: kWh carries 6, a price at most 4 (transform/pricing.py).
    _price_places = field_validator("price")(_at_most_decimals(4))
    _kwh_places = field_validator("up_to_kwh")(_at_most_decimals(6))


class TariffPlan(_Section):
    # A plan a customer can be billed on: flat (one price), tou (a price per tariff period) or tiered
    # (monthly kWh blocks). Prices in CNY/kWh, written as exact decimals.
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["flat", "tou", "tiered"]
    customer_types: list[str] = Field(min_length=1)
    price: Decimal | None = Field(None, ge=0)
    prices: dict[Literal["peak", "flat", "valley"], Decimal] | None = None
    blocks: list[PriceBlock] | None = None

    _price = field_validator("price", mode="before")(_exact_decimal)
    _price_places = field_validator("price")(_at_most_decimals(4))

    @field_validator("prices", mode="before")
    @classmethod
    def _exact_prices(cls, v):
        return {k: _exact_decimal(p) for k, p in v.items()} if isinstance(v, dict) else v

    @field_validator("prices")
    @classmethod
    def _prices_places(cls, v):
        for p in (v or {}).values():
            _at_most_decimals(4)(p)
        return v

    @model_validator(mode="after")
    def _fits_kind(self) -> "TariffPlan":
        given = {"price": self.price is not None, "prices": self.prices is not None, "blocks": self.blocks is not None}
        need = {"flat": "price", "tou": "prices", "tiered": "blocks"}[self.kind]
        extra = [k for k, v in given.items() if v and k != need]
        if not given[need] or extra:
            raise ValueError(f"plan {self.id!r}: a {self.kind} plan takes `{need}` only"
                             + (f" (drop {', '.join(extra)})" if extra else ""))
        if self.prices is not None and set(self.prices) != {"peak", "flat", "valley"}:
            raise ValueError(f"plan {self.id!r}: a tou plan needs a price for each of peak, flat and valley")
        if self.blocks is not None:
            limits = [b.up_to_kwh for b in self.blocks]
            if not limits or limits[-1] is not None or any(x is None for x in limits[:-1]):
                raise ValueError(f"plan {self.id!r}: tiered blocks end with one block without up_to_kwh")
            if any(a >= b for a, b in zip(limits[:-2], limits[1:-1])):
                raise ValueError(f"plan {self.id!r}: tiered blocks' up_to_kwh must ascend")
        return self


def _default_plans() -> list[TariffPlan]:
    return [
        TariffPlan(id="res_flat", kind="flat", customer_types=["residential"], price="0.56"),
        TariffPlan(id="res_tiered", kind="tiered", customer_types=["residential"],
                   blocks=[{"up_to_kwh": "260", "price": "0.56"}, {"up_to_kwh": "600", "price": "0.61"},
                           {"price": "0.86"}]),
        TariffPlan(id="res_tou", kind="tou", customer_types=["residential"],
                   prices={"peak": "0.72", "flat": "0.56", "valley": "0.31"}),
        TariffPlan(id="com_flat", kind="flat", customer_types=["commercial"], price="0.80"),
        TariffPlan(id="com_tou", kind="tou", customer_types=["commercial"],
                   prices={"peak": "1.05", "flat": "0.80", "valley": "0.40"}),
    ]


def _default_current_plan() -> dict[str, dict[str, str]]:
    return {"residential": {"flat_rate": "res_flat", "tiered": "res_tiered", "tou": "res_tou"},
            "commercial": {"flat_rate": "com_flat", "tou": "com_tou"}}


class TariffConfig(_Section):
    # Time-of-use periods in local wall-clock time; every minute of the day must
    # fall into exactly one of them.
    peak: list[str] = ["08:00-11:00", "18:00-23:00"]
    flat: list[str] = ["07:00-08:00", "11:00-18:00"]
    valley: list[str] = ["23:00-07:00"]
    # The plans customers can be billed on; a bill period is the calendar month in ami.time_zone.
    plans: list[TariffPlan] = Field(default_factory=_default_plans)
    # bronze.customer_archive (customer_type, tariff_type) -> the plan the customer is billed on now;
    # an unmapped or null pair: the current plan is unknown (no saving, no bill alert in currency).
    current_plan: dict[str, dict[str, str]] = Field(default_factory=_default_current_plan)

    def plan(self, plan_id: str) -> TariffPlan:
        return next(p for p in self.plans if p.id == plan_id)

    @model_validator(mode="after")
    def _plans_known(self) -> "TariffConfig":
        ids = [p.id for p in self.plans]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"tariff.plans: plan id(s) {twice} defined twice")
        for ctype, mapping in self.current_plan.items():
            for tariff_type, plan_id in mapping.items():
                if plan_id not in ids:
                    raise ValueError(f"tariff.current_plan.{ctype}.{tariff_type}: unknown plan {plan_id!r} "
                                     f"(plans: {', '.join(ids)})")
                if ctype not in self.plan(plan_id).customer_types:
                    raise ValueError(f"tariff.current_plan.{ctype}.{tariff_type}: plan {plan_id!r} is not for "
                                     f"{ctype} customers")
        return self

    @model_validator(mode="after")
    def _covers_day_once(self) -> "TariffConfig":
        cover = [0] * 1440
        for ranges in (self.peak, self.flat, self.valley):
            for r in ranges:
                for minute in range_minutes(r):
                    cover[minute] += 1
        bad = [i for i, c in enumerate(cover) if c != 1]
        if bad:
            first = bad[0]
            raise ValueError(
                f"tariff periods must cover each minute of the day exactly once; "
                f"{first // 60:02d}:{first % 60:02d} is covered {cover[first]} times"
            )
        return self


def _check_zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Asia/Shanghai)") from None
    return v


class AmiConfig(_Section):
    interval_minutes: Literal[15, 30, 60] = 15
    # Days are cut in this zone; instants are stored in UTC.
    time_zone: str = "Asia/Shanghai"

    _zone = field_validator("time_zone")(_check_zone)


class FaultRates(_Section):
    """Share of meters (or of readings) that get each planted fault."""

    short_gap_meter_share: float = Field(0.10, ge=0, le=1)
    short_gaps_per_meter: int = Field(3, ge=0)
    long_gap_meter_share: float = Field(0.05, ge=0, le=1)
    duplicate_reading_share: float = Field(0.001, ge=0, le=0.1)
    spike_reading_share: float = Field(0.0005, ge=0, le=0.1)
    negative_reading_share: float = Field(0.0005, ge=0, le=0.1)
    null_reading_share: float = Field(0.0002, ge=0, le=0.1)
    unknown_meter_share: float = Field(0.01, ge=0, le=0.5)


class GenerateConfig(_Section):
    meters: int = Field(3300, ge=1)
    days: int = Field(90, ge=1)
    seed: int = 20240501
    start: dt.date = dt.date(2026, 6, 1)
    # Share of meters per archetype; normalized to sum 1.
    archetype_mix: dict[str, float] = Field(
        default_factory=lambda: {
            "evening_peak": 0.27,
            "flat": 0.16,
            "night": 0.11,
            "double_peak": 0.16,
            "ev_night": 0.08,
            "electric_heating": 0.06,
            "vacant": 0.06,
            "commercial_day": 0.10,
        }
    )
    faults: FaultRates = Field(default_factory=FaultRates)
    # Months of bills (at least 24 gives every bill of the last year its same month a year earlier).
    billing_months: int = Field(24, ge=1, le=60)
    # Consumption growth per year in the bills: a bill's kWh is (1 + annual_growth) ** -(years before the AMI
    # window) of what that month's weather gives (factor 1 over the window, so bills and readings agree).
    annual_growth: float = Field(0.04, ge=-0.5, le=0.5)
    # Share of known residential (non-vacant) meters whose load surges over the window's last 14-21 days.
    bill_shock_share: float = Field(0.04, ge=0, le=1)
    # Share of the known meters given one planted abnormal-use case (truth.anomalies), split evenly over
    # sustained_drop, flatline, zero_run, reverse_flow and pattern_change; 0: none. Windows of 28+ days only.
    anomaly_share: float = Field(0.04, ge=0, le=0.5)
    # Share of occupied homes whose load mixes their archetype with a secondary one at 25-45% (genuinely
    # ambiguous households); the others carry a secondary pattern at 0-20%.
    ambiguous_meter_share: float = Field(0.12, ge=0, le=1)
    # Public holidays (behave like weekends; some households go away): cn = built-in Chinese list, none;
    # null (the default): the calendar of `calendar.country`. bronze.holiday_calendar is written from it.
    holiday_calendar: Literal["cn", "none"] | None = None
    # Optional bronze tables not to write (a minimal lake); the archive and the AMI readings are required.
    omit_tables: list[str] = Field(default_factory=list)
    # Share of customers whose archive lacks each optional attribute (tariff_type, age_band, household_size,
    # housing_type, contracted_capacity_kva, do_not_contact, vip, account_open_date), drawn per attribute.
    archive_attribute_null_share: float = Field(0.02, ge=0, le=1)
    # A past campaign cycle outcome_days before the snapshot with planted outcomes (truth.campaign_outcomes):
    # account closures for everyone (outcome_closure_rate over the outcome days; readings stop after the
    # close date), the treated customers of outcome_kwh_campaign use (1 - outcome_kwh_effect) of their kWh
    # from the day after the cycle, and those of outcome_churn_campaign close with outcome_closure_rate -
    # outcome_churn_effect. Only when the window holds 2 x outcome_days (a pre period as long as the post
    # period); false: no closures and no effects (account_close_date all null).
    # truth.meters.tou_saver is left unknown (null) for a customer whose TOU saving, or the gap between the
    # cheapest TOU and non-TOU plans, is within this of the advisor's threshold: too close to call.
    tou_saver_margin_cny: float = Field(5.0, ge=0)
    plant_outcomes: bool = True
    outcome_days: int = Field(30, ge=7)
    outcome_kwh_campaign: str = "energy_report"
    outcome_kwh_effect: float = Field(0.05, ge=0, lt=1)
    outcome_churn_campaign: str = "churn_risk_care"
    outcome_churn_effect: float = Field(0.02, ge=0, lt=1)
    outcome_closure_rate: float = Field(0.05, ge=0, le=1)

    @field_validator("omit_tables")
    @classmethod
    def _optional_tables(cls, v: list[str]) -> list[str]:
        optional = ("bronze.billing_payment", "bronze.service_interaction", "bronze.contact_history",
                    "bronze.campaign_response", "bronze.weather", "bronze.holiday_calendar")
        wrong = sorted(set(v) - set(optional))
        if wrong:
            raise ValueError(f"cannot omit {wrong}: only optional bronze tables can be omitted {list(optional)}")
        return v

    @model_validator(mode="after")
    def _closure_above_effect(self) -> "GenerateConfig":
        if self.outcome_churn_effect > self.outcome_closure_rate:
            raise ValueError(f"generate.outcome_churn_effect ({self.outcome_churn_effect}) cannot exceed "
                             f"generate.outcome_closure_rate ({self.outcome_closure_rate}): a closure probability "
                             f"would be negative")
        return self

    @field_validator("archetype_mix")
    @classmethod
    def _known_archetypes(cls, v: dict[str, float]) -> dict[str, float]:
        from gridpersona.contracts.truth import ARCHETYPES

        unknown = sorted(set(v) - set(ARCHETYPES))
        if unknown:
            raise ValueError(f"unknown archetype(s) {unknown}; known: {list(ARCHETYPES)}")
        if any(share < 0 for share in v.values()) or sum(v.values()) <= 0:
            raise ValueError("archetype shares must be >= 0 with a positive sum")
        return v


class IngestConfig(_Section):
    # Zone in which zone-less timestamps of landed files are read; null: ami.time_zone (resolved by Settings).
    source_time_zone: str | None = None
    # Per bronze table: {contract column: source column}.
    column_mappings: dict[str, dict[str, str]] = Field(default_factory=dict)
    csv_delimiter: str = ","
    # CSV files are checked to decode in this encoding before Spark reads them (a bad byte names file and line).
    csv_encoding: str = "utf-8"
    # A value above this for one interval cannot be a reading: absurd_value. Null: clean.max_interval_kwh.
    max_interval_kwh: float | None = Field(None, gt=0)
    # Keys and foreign keys (meter_id, customer_id, ...) longer than this are rejected: key_too_long.
    max_key_chars: int = Field(128, ge=1)
    # The CSV parser's bound on one field: a longer field stops the ingest naming file and line, before
    # a giant value can reach Spark's memory or the rejects table.
    max_field_chars: int = Field(1_000_000, ge=1)
    # A second row for a key of a table with unique keys (schemas: unique_keys): reject keeps the stored
    # row and rejects the new one; latest replaces the stored row by the new one (the table is rewritten).
    # Rows of one ingest sharing a key are rejected either way (a batch has no order to pick by).
    on_duplicate_key: Literal["reject", "latest"] = "reject"

    # Rejected rows of a table with PII columns keep those values in bronze.ingest_rejects.row_json only when true
    # (default: masked at write; the analyst SQL view masks them either way).
    rejects_keep_pii: bool = False

    @field_validator("csv_encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        import codecs

        try:
            return codecs.lookup(v).name
        except LookupError:
            raise ValueError(f"unknown encoding {v!r} (e.g. utf-8, gb18030, latin-1)") from None

    @field_validator("source_time_zone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return None if v is None else _check_zone(v)


class CleanConfig(_Section):
    # Outliers (replaced by interpolation) are readings implausible for their meter, never
    # merely high ones: an isolated one-interval spike above outlier_scale_multiple x the
    # meter's look-back scale (scale_lookback_days), floored at outlier_scale_floor_kw x interval hours, and above
    # outlier_neighbour_multiple x both time neighbours; or a reading above
    # capacity_margin x contracted_capacity_kva x interval hours (archive; null: not applied).
    outlier_scale_multiple: float = Field(3.0, gt=0)
    outlier_scale_floor_kw: float = Field(5.0, ge=0)
    outlier_neighbour_multiple: float = Field(3.0, ge=1)
    capacity_margin: float = Field(2.0, gt=0)
    # The meter's scale for a day is the median of its daily largest readings over this many days before it
    # (a bounded look-back, so a day cleaned in a nightly run equals the same day cleaned in a window run).
    scale_lookback_days: int = Field(14, ge=1, le=366)
    # Gaps of at most this many intervals are interpolated; longer ones leave the day incomplete.
    max_interpolate_intervals: int = Field(4, ge=0)
    # A reading above this is physically implausible for one interval and is quarantined.
    max_interval_kwh: float = Field(10000.0, gt=0)
    # Readings per task of the per-meter pass: each task holds its share of the readings in memory (about
    # 40 bytes a reading), so the pass runs max(spark.sql.shuffle.partitions, readings / this) tasks.
    rows_per_task: int = Field(4_000_000, ge=10_000)


class ShapesConfig(_Section):
    # total: slot kWh / daily kWh (shape sums to 1); minmax: (x - min) / (max - min).
    normalization: Literal["total", "minmax"] = "total"
    # Count the stage's input rows for the run log (one more pass over ami_clean).
    count_input: bool = True


class SegmentBound(_Section):
    """Inclusive bounds on one centroid feature; a missing side is open."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "SegmentBound":
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class SegmentLabel(_Section):
    """A segment label: archetype code, display names, and the feature bounds that give it (all must hold)."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    zh: str
    en: str
    when: dict[str, SegmentBound] = Field(default_factory=dict)


SEGMENT_BUILTIN_FEATURES = ("peak_to_mean", "trough_to_mean", "peak_hour", "peak_width_hours", "weekend_ratio",
                            "mean_daily_kwh")


def segment_feature_names(windows) -> set[str]:
    """Centroid features the label rules may test: the built-ins plus <window>_share and weekend_<window>_share."""
    names = set(SEGMENT_BUILTIN_FEATURES)
    for w in windows:
        names |= {f"{w}_share", f"weekend_{w}_share"}
    return names


def _default_segment_labels() -> list[SegmentLabel]:
    rules = [
        ("vacant", "空置型", "Vacant", {"mean_daily_kwh": {"max": 1.5}}),
        ("commercial_day", "日间商业型", "Commercial daytime", {"daytime_share": {"min": 0.55}, "weekend_ratio": {"max": 0.8}}),
        # A block every evening that ends around midnight (electric / storage-heater boost) comes before
        # ev_night: EV charging blocks lie mostly after midnight (small_hours_share >= 0.25).
        ("electric_heating", "电采暖型", "Electric heating",
         {"late_evening_share": {"min": 0.35}, "small_hours_share": {"max": 0.25}, "peak_to_mean": {"min": 2.0}}),
        # Heating that runs from the evening until morning: a heavy evening and night that is still on before
        # dawn; a 1-4 h charging block starting late in the evening has ended by then (predawn at base load).
        ("electric_heating", "电采暖型", "Electric heating",
         {"night_share": {"min": 0.35}, "predawn_share": {"min": 0.13}, "evening_share": {"min": 0.25}}),
        ("ev_night", "夜间充电型", "EV night charging",
         {"small_hours_share": {"min": 0.25}, "evening_share": {"min": 0.15}, "peak_to_mean": {"min": 2.0}}),
        ("night", "低谷型", "Night / valley", {"night_share": {"min": 0.6}}),
        ("double_peak", "双峰型", "Double peak", {"morning_share": {"min": 0.2}, "evening_share": {"min": 0.25}}),
        ("evening_peak", "高峰型", "Evening peak", {"evening_share": {"min": 0.35}}),
        ("flat", "平稳型", "Flat", {"peak_to_mean": {"max": 1.6}, "trough_to_mean": {"min": 0.6}}),
    ]
    return [SegmentLabel(code=c, zh=zh, en=en, when=w) for c, zh, en, w in rules]


class DayPart(_Section):
    """A part of the day (local "HH:MM-HH:MM", may wrap midnight) generated segment labels name a peak after."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    zh: str
    en: str
    hours: str

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: str) -> str:
        parse_hhmm_range(v)
        return v


def _default_day_parts() -> list[DayPart]:
    parts = [("night", "夜间", "Night", "00:00-05:00"), ("morning", "早间", "Morning", "05:00-10:00"),
             ("midday", "午间", "Midday", "10:00-14:00"), ("afternoon", "午后", "Afternoon", "14:00-17:00"),
             ("evening", "傍晚", "Evening", "17:00-21:00"), ("late_evening", "晚间", "Late-evening", "21:00-00:00")]
    return [DayPart(code=c, zh=zh, en=en, hours=h) for c, zh, en, h in parts]


class SegmentDLConfig(_Section):
    """The CNN + GRU segment model (gridpersona.segment.dl; needs the `dl` extra, torch)."""

    # segment-train trains it beside KMeans and segment-assign fills dl_segment_id / dl_probability
    # (always on when segment.method is dl).
    second_opinion: bool = False
    # kmeans: learn the KMeans segments of the training window | truth: learn truth.meters.archetype (a
    # synthetic lake), each archetype mapped to the segment holding most of its meters.
    labels: Literal["kmeans", "truth"] = "kmeans"
    # Days the model sees per meter: the last weeks x 7 days of the window (at most the window).
    weeks: int = Field(12, ge=1, le=52)
    # Training crops: each epoch a meter shows a random run of min_crop_days..all its days, so the model
    # learns to assign meters with few days.
    min_crop_days: int = Field(7, ge=1)
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(64, ge=2)
    learning_rate: float = Field(3e-3, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    # Channels of the two per-day convolutions and the GRU's hidden size.
    conv_channels: tuple[int, int] = (8, 16)
    hidden: int = Field(32, ge=2)
    # TorchDistributor processes (local_mode: on the driver; false: on executors, a cluster).
    num_processes: int = Field(1, ge=1)
    local_mode: bool = True
    seed: int = 20240501
    # Rows per batch of the predict_batch_udf inference.
    predict_batch_size: int = Field(256, ge=1)


class SegmentConfig(_Section):
    # Which model writes segment_id: kmeans | dl (the CNN + GRU model of segment.dl; meters it cannot
    # assign keep their KMeans segment).
    method: Literal["kmeans", "dl"] = "kmeans"
    dl: SegmentDLConfig = Field(default_factory=SegmentDLConfig)
    # Typical shape per meter: mean_shape (mean of the daily normalized shapes) |
    # energy_weighted (kWh per slot summed over the window / the window's kWh).
    typical_shape: Literal["mean_shape", "energy_weighted"] = "mean_shape"
    # Only days at least this complete enter the typical shape.
    min_completeness: float = Field(0.9, ge=0, le=1)
    # Meters with a mean daily kWh below this go to the reserved vacant segment before KMeans (null: no rule).
    vacant_max_daily_kwh: float | None = Field(1.5, gt=0)
    vacant_segment_id: int = Field(0, ge=0)
    # Fixed k, or null to choose k in [k_min, k_max] by silhouette.
    k: int | None = Field(None, ge=2)
    k_min: int = Field(4, ge=2)
    k_max: int = Field(10, ge=2)
    # KMeans trains (and k is chosen) on a deterministic hash sample of at most this many non-vacant
    # meters (0: all of them); every meter is assigned.
    train_sample_meters: int = Field(10000, ge=0)
    # Not used by segment-train: KMeans starts from a Ward agglomeration, no random draw, so the segments
    # do not depend on a seed. Stored with the model; kept so configs and --set segment.seed stay valid.
    seed: int = 20240501
    max_iter: int = Field(40, ge=1)
    # Stop when no center moves more than this (typical-shape centroids lie >= ~0.09 apart).
    tol: float = Field(1e-3, gt=0)
    # Meters the Ward agglomeration that starts KMeans sees (a fixed hash sample; O(n^2) memory).
    ward_sample_meters: int = Field(500, ge=10)
    # Fixed hash splits of the training meters in halves; stability = share of meters keeping their segment
    # when KMeans starts from one half's Ward tree, averaged over the 2 x splits halves.
    stability_splits: int = Field(2, ge=1, le=16)
    # k is the most stable among the k whose silhouette is within this of the best.
    silhouette_tolerance: float = Field(0.02, ge=0)
    # Below this silhouette the model is flagged weak_structure (a partition of a continuum).
    weak_silhouette: float = Field(0.25, ge=-1, le=1)
    # Principal components KMeans clusters on (0: the typical shapes themselves).
    pca_components: int = Field(0, ge=0)
    # Partitions of the feature frame KMeans runs on; 1 keeps sums in a fixed order (bit-identical reruns).
    partitions: int = Field(1, ge=1)
    # Model version segment-assign uses (null: the latest trained on or before the as-of date).
    model_version: str | None = None
    # Named local-time windows; label rules test <name>_share (weekday) and weekend_<name>_share.
    windows: dict[str, str] = Field(default_factory=lambda: {
        "night": "23:00-07:00", "small_hours": "00:00-05:00", "morning": "06:00-10:00",
        "daytime": "08:00-18:00", "evening": "18:00-23:00",
        "late_evening": "21:00-00:00", "predawn": "03:00-07:00"})
    # Ordered: the first rule whose bounds all hold names the centroid; else a label generated from the
    # centroid's curve (peak_<part>[_broad|_sharp], after the part of the day holding its weekday peak).
    labels: list[SegmentLabel] = Field(default_factory=_default_segment_labels)
    peak_parts: list[DayPart] = Field(default_factory=_default_day_parts)
    # Generated labels: _broad below this weekday peak_to_mean, _sharp at or above the next.
    broad_max_peak_to_mean: float = Field(2.0, gt=0)
    sharp_min_peak_to_mean: float = Field(3.0, gt=0)

    @field_validator("model_version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        # Versions look like dates (20260630); YAML and --set read them as numbers.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: dict[str, str]) -> dict[str, str]:
        for name, text in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"window name {name!r} must be lower_snake_case")
            parse_hhmm_range(text)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "SegmentConfig":
        if self.k_min > self.k_max:
            raise ValueError(f"k_min {self.k_min} is above k_max {self.k_max}")
        most = self.k or self.k_max
        if self.ward_sample_meters < 4 * most:
            raise ValueError(f"ward_sample_meters {self.ward_sample_meters} is below 4 x k ({most}): each half of "
                             f"the stability check needs at least 2 meters per cluster")
        known = segment_feature_names(self.windows)
        for i, rule in enumerate(self.labels):
            unknown = sorted(set(rule.when) - known)
            if unknown:
                raise ValueError(f"labels[{i}] ({rule.code}): unknown feature(s) {unknown}; known: {sorted(known)}")
        return self


# ---------------------------------------------------------------- tags (conf/tags.yaml)

_CODE = r"^[a-z][a-z0-9_]*$"
# Validation-context key: gold.customer_tags' columns for the configured tags (what campaign rules may name).
_CUSTOMER_TAGS_COLUMNS = "customer_tags_columns"


class TaxonomyName(_Section):
    zh: str
    en: str


class TaxonomyLevel1(_Section):
    """A level-1 category of the tag system (seed 000 Table 2) and its level-2 categories."""

    zh: str
    en: str
    level2: dict[str, TaxonomyName]


class TagFeatures(_Section):
    """Parameters of the per-customer feature view the tag expressions read (see docs/tags.md)."""

    # Days less complete than this are left out of every load feature.
    min_completeness: float = Field(0.9, ge=0, le=1)
    # A complete day below this daily kWh is near-zero (vacancy runs).
    near_zero_daily_kwh: float = Field(1.5, gt=0)
    # recent_daily_kwh: the window's last this-many days; history: the days before.
    recent_days: int = Field(14, ge=1)
    billing_months: int = Field(12, ge=1, le=60)
    interaction_days: int = Field(365, ge=1)
    campaign_days: int = Field(365, ge=1)
    # Night charging blocks. A night is ev_night_window, from the evening of the day before to the morning of
    # the day (local wall clock; it must span midnight). Its base is its lowest 1-hour mean power; its block is
    # the longest run of intervals at least max(ev_surge_kw, ev_surge_ratio x base) above the base. A surge
    # night has a block of at least ev_min_block_hours starting inside ev_start_window.
    ev_night_window: str = "20:00-08:00"
    ev_start_window: str = "21:00-04:00"
    ev_surge_kw: float = Field(2.2, gt=0)
    ev_surge_ratio: float = Field(1.0, ge=0)
    ev_min_block_hours: float = Field(1.0, gt=0, le=12)
    # Temperature sensitivity (bronze.weather): slopes of daily kWh on heating / cooling degree-days (daily mean
    # temperature below heating_base_c / above cooling_base_c) over at least weather_min_days complete days.
    heating_base_c: float = 16.0
    cooling_base_c: float = 22.0
    weather_min_days: int = Field(10, ge=3)

    @field_validator("ev_night_window")
    @classmethod
    def _night(cls, v: str) -> str:
        start, end = parse_hhmm_range(v)
        if not start > end:
            raise ValueError(f"window {v!r} must span midnight (evening start after morning end, e.g. 20:00-08:00)")
        return v

    @field_validator("ev_start_window")
    @classmethod
    def _window(cls, v: str) -> str:
        start, end = parse_hhmm_range(v)
        if (end - start) % 1440 < 60:
            raise ValueError(f"window {v!r} is shorter than one hour")
        return v


class TagDefinition(_Section):
    """One tag: where it sits in the taxonomy, its values and the Spark SQL expression that computes it."""

    code: str = Field(pattern=_CODE)
    zh: str
    en: str
    level1: str
    level2: str
    type: Literal["string", "boolean", "int", "double"] = "string"
    # Values a string tag may take (null always means "not determinable"); empty: free text.
    values: list[str] = Field(default_factory=list)
    # true: `values` lists the known values only (for docs and colours); others are accepted too
    # (e.g. usage_pattern: generated segment labels).
    open_values: bool = False
    # Sources (SOURCE_MARKERS of gridpersona.contracts.tags) and feature view columns the tag cannot do without:
    # when a source has no data for the customer or a column is null, the tag is null (unknown), whatever expr says.
    needs: list[str] = Field(default_factory=list)
    expr: str
    definition: str

    @model_validator(mode="after")
    def _values_for_strings(self) -> "TagDefinition":
        if self.values and self.type != "string":
            raise ValueError(f"tag '{self.code}': values are for string tags; this one is {self.type}")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"tag '{self.code}': values repeat")
        if self.open_values and not self.values:
            raise ValueError(f"tag '{self.code}': open_values needs the known values listed in values")
        return self


class TagsConfig(_Section):
    """conf/tags.yaml: the taxonomy, the feature view's parameters and the tag definitions (in column order).

    Every expression is parsed (Spark SQL, sqlglot) and its columns checked against
    the documented feature view (``gridpersona.contracts.tags.FEATURE_VIEW``) and the tags
    defined before it, here at load time: no Spark needed.
    """

    taxonomy: dict[str, TaxonomyLevel1] = Field(default_factory=dict)
    features: TagFeatures = Field(default_factory=TagFeatures)
    definitions: list[TagDefinition] = Field(default_factory=list)

    @field_validator("definitions")
    @classmethod
    def _expressions(cls, v: list[TagDefinition]) -> list[TagDefinition]:
        from gridpersona.config.expressions import ExpressionError, check_expression
        from gridpersona.contracts.tags import CUSTOMER_TAGS_CONTEXT, SOURCE_MARKERS, TAG_CATALOG_VERSION, feature_columns

        view = feature_columns()
        known: set[str] = set(view)
        problems = []
        seen: set[str] = set()
        for tag in v:
            if tag.code in seen:
                problems.append(f"tag '{tag.code}': defined twice")
            elif tag.code in CUSTOMER_TAGS_CONTEXT or tag.code == TAG_CATALOG_VERSION:
                problems.append(f"tag '{tag.code}': code is a context column of gold.customer_tags; choose another")
            elif tag.code in view and tag.expr.strip() != tag.code:
                # The view's column would shadow the tag for later expressions.
                problems.append(f"tag '{tag.code}': code is a feature view column; only a pass-through "
                                f"(expr: {tag.code}) may reuse it")
            try:
                check_expression(tag.expr, known)
            except ExpressionError as exc:
                problems.append(f"tag '{tag.code}': expression {exc}")
            bad_needs = [n for n in tag.needs if n not in SOURCE_MARKERS and n not in known]
            if bad_needs:
                problems.append(f"tag '{tag.code}': needs {', '.join(map(repr, bad_needs))}: neither a source "
                                f"({', '.join(SOURCE_MARKERS)}) nor a feature view column or earlier tag")
            seen.add(tag.code)
            # Later tags may use this one (Spark resolves it as a lateral column alias of the same select).
            known.add(tag.code)
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _taxonomy_refs(self) -> "TagsConfig":
        problems = []
        for tag in self.definitions:
            level1 = self.taxonomy.get(tag.level1)
            if level1 is None:
                problems.append(f"tag '{tag.code}': level1 '{tag.level1}' is not in the taxonomy "
                                f"({', '.join(self.taxonomy) or 'empty'})")
            elif tag.level2 not in level1.level2:
                problems.append(f"tag '{tag.code}': level2 '{tag.level2}' is not under level1 '{tag.level1}' "
                                f"({', '.join(level1.level2)})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _offer_columns(self, info: ValidationInfo) -> "TagsConfig":
        # Campaign rules name gold.customer_tags' columns, which these definitions decide: left in the
        # validation context for the campaigns section, validated after this one (Settings' field order).
        if isinstance(info.context, dict):
            from gridpersona.contracts.tags import customer_tags_columns

            info.context[_CUSTOMER_TAGS_COLUMNS] = customer_tags_columns(self.definitions)
        return self

    def by_code(self) -> dict[str, TagDefinition]:
        return {t.code: t for t in self.definitions}


class RateAdvisorConfig(_Section):
    # gold.rate_comparison: each eligible plan priced from the customer's own slot kWh over the window.
    min_days: int = Field(60, ge=1)               # fewer priced days: no recommendation (reason insufficient_data)
    min_completeness: float = Field(0.9, gt=0, le=1)  # a day less complete is not priced (its month is scaled up)
    min_saving_cny: Decimal = Field(Decimal("100"), ge=0)  # annual saving below this: no recommendation

    _money = field_validator("min_saving_cny", mode="before")(_exact_decimal)


class NeighboursConfig(_Section):
    # gold.neighbour_comparison: a customer's recent kWh against similar homes (peer groups from the archive).
    keys: list[Literal["region", "customer_type", "housing_type", "household_size_band"]] = [
        "region", "customer_type", "housing_type", "household_size_band"]
    # A smaller group than min_peers falls back to the next, broader key list; the last must be broad.
    fallback: list[list[Literal["region", "customer_type", "housing_type", "household_size_band"]]] = [
        ["region", "customer_type", "housing_type"], ["region", "customer_type"], ["customer_type"]]
    household_size_bands: list[str] = ["1", "2", "3-4", "5+"]
    min_peers: int = Field(30, ge=2)
    period_days: int = Field(30, ge=1)            # the comparison covers the window's last N days
    min_days: int = Field(20, ge=1)               # complete days needed in them (else no comparison)
    min_completeness: float = Field(0.9, gt=0, le=1)
    efficient_percentile: float = Field(0.2, gt=0, lt=0.5)  # "efficient neighbours": the group's best 20 %

    @field_validator("household_size_bands")
    @classmethod
    def _bands_parse(cls, v: list[str]) -> list[str]:
        for band in v:
            if not re.fullmatch(r"\d+(-\d+|\+)?", band):
                raise ValueError(f"household size band {band!r}: use N, N-M or N+")
        return v

    @model_validator(mode="after")
    def _min_days_fit(self) -> "NeighboursConfig":
        if self.min_days > self.period_days:
            raise ValueError(f"neighbours.min_days ({self.min_days}) exceeds period_days ({self.period_days})")
        return self


class AlertsConfig(_Section):
    # gold.alert_targets: mid-cycle projected-bill alerts (and vacancy alerts), at most one per bill period.
    min_days_elapsed: int = Field(10, ge=1)       # days of the period observed before a projection speaks
    recent_days: int = Field(7, ge=1)             # the projection's daily rate: mean of the complete days among the last N
    min_completeness: float = Field(0.9, gt=0, le=1)
    ratio: float = Field(1.7, gt=1)               # alert when projected bill >= max(ratio x baseline, baseline + min_increase_cny)
    min_increase_cny: Decimal = Field(Decimal("30"), ge=0)
    # No bill for the same month last year: the mean of the last N bills before the period; 0 (the default):
    # no baseline, so no bill alert. A mean of recent months ignores the season: on the default lake, July
    # against April-June alerted 1,061 of 3,009 customers, none with a planted shock.
    baseline_months: int = Field(0, ge=0)
    vacancy_run_days: int = Field(7, ge=1)        # complete near-zero days in a row (tags.features.near_zero_daily_kwh)
    holdout_share: float = Field(0.1, ge=0, lt=1) # control share of alert recipients (written, not sent)
    # How the same-month-last-year baseline is scaled before the threshold (docs/tags-and-campaigns.md):
    # peer: by the region's median projected / baseline bill of the day (peer_factor); weather: by the customer's
    # own degree-day fit, predicted kWh/day now / in the baseline month (weather_factor); weather_peer: both,
    # the peer median taken on the weather-adjusted ratio; none: the plain baseline. Unadjusted, on the
    # default lake 106 of 135 bill alerts had no planted shock (a hotter August than the year before).
    # weather_peer on the 1000-meter weather-driven lake at ratio 1.7: 0 false bill alerts (peer alone: 2 of 27).
    baseline_adjust: Literal["none", "peer", "weather", "weather_peer"] = "weather_peer"
    min_peers: int = Field(20, ge=1)              # fewer customers with a baseline in the region: factor 1 (unadjusted)
    weather_min_bills: int = Field(12, ge=4)      # bills (with kWh and degree-days) a customer's fit needs; fewer: no factor
    weather_factor_min: float = Field(0.5, gt=0)  # the weather factor is clipped to [min, max]
    weather_factor_max: float = Field(3.0, gt=0)

    _money = field_validator("min_increase_cny", mode="before")(_exact_decimal)


class AnomaliesConfig(_Section):
    # gold.anomaly_flags (stage anomalies): abnormal-use flags for inspection teams (docs/anomalies.md).
    history_days: int = Field(60, ge=0)            # days read before the run's window for baselines
    min_completeness: float = Field(0.9, gt=0, le=1)  # a day with fewer of its readings clean is not used
    peer_keys: list[str] = ["region", "customer_type"]  # archive columns of the peer group; [] = everyone
    min_peers: int = Field(20, ge=1)               # a smaller peer group (or a null key) uses everyone instead
    baseline_days: int = Field(10, ge=1)           # normal days needed before a change point (a run: half)
    drop_min_days: int = Field(14, ge=1)           # sustained_drop: normal days after the change point
    drop_max_ratio: float = Field(0.6, gt=0, lt=1) # ... level after / before, divided by the peers', at most this
    drop_day_ratio: float = Field(0.75, gt=0, le=1)  # ... a day after counts as low below this x the baseline
    drop_day_share: float = Field(0.8, gt=0, le=1)   # ... and this share of the days after are low
    drop_below_quantile: float = Field(0.1, ge=0, le=1)  # ... the level after below this quantile of the days before
    drop_max_shape_shift: float = Field(0.15, ge=0, le=1)  # ... shape kept: at most this share of energy moved hours
    flatline_min_days: int = Field(2, ge=1)        # flatline: days in a row with every reading the same value > 0
    flatline_tolerance_kwh: float = Field(0.0005, ge=0)  # ... max - min of the day's readings at most this
    zero_run_min_days: int = Field(3, ge=1)        # zero_run: days in a row of exact zero readings ...
    occupied_min_daily_kwh: float = Field(1.5, ge=0)  # ... after normal days with this median kWh (occupied)
    reverse_min_share: float = Field(0.25, gt=0, le=1)  # reverse_flow: a day with this share of readings negative
    reverse_min_days: int = Field(2, ge=1)         # ... on this many days
    pattern_min_days: int = Field(14, ge=1)        # pattern_change: normal days after the change point
    pattern_min_shift: float = Field(0.2, ge=0, le=1)  # ... at least this share of the day's energy moved hours
    pattern_min_contrast: float = Field(1.8, ge=0)  # ... and at least this x the days' median distance to their mean
    pattern_day_share: float = Field(0.7, gt=0, le=1)  # ... and this share of the days after are nearer the new shape


class ForecastConfig(_Section):
    # gold.segment_forecast: monthly kWh per segment and region from the bills, a degree-day regression with a
    # trend, backtested against seasonal-naive (docs/forecast.md).
    horizon_months: int = Field(3, ge=1, le=12)   # months forecast after the last complete bill month
    # Last months of bills held out and forecast from the months before (fewer when that would leave the model
    # less than min_model_months): 12, a whole year, so one odd month's weather does not decide (docs/forecast.md).
    backtest_months: int = Field(12, ge=1, le=12)
    heating_base_c: float = 16.0                  # heating degree-days: max(0, base - daily mean temperature)
    cooling_base_c: float = 22.0                  # cooling degree-days: max(0, daily mean temperature - base)
    min_weather_coverage: float = Field(0.9, gt=0, le=1)  # share of a month's days with a temperature for its degree-days
    min_model_months: int = Field(12, ge=4)       # months (with degree-days) the regression needs to fit
    month_effects_min_months: int = Field(36, ge=13)  # from this many fit months on, the regression adds month effects
    yoy_months: int = Field(3, ge=1, le=12)       # fallback without weather: naive x (last N months / same N a year before)
    interval_z: float = Field(1.28, gt=0)         # prediction interval: forecast x (1 +- z x relative error sd); 1.28 ~ 80 %
    levels: list[Literal["segment_region", "segment", "region", "all"]] = [
        "segment_region", "segment", "region", "all"]

    @model_validator(mode="after")
    def _bases_ordered(self) -> "ForecastConfig":
        if self.heating_base_c > self.cooling_base_c:
            raise ValueError(f"forecast.heating_base_c ({self.heating_base_c}) exceeds cooling_base_c "
                             f"({self.cooling_base_c}): a day would both heat and cool")
        if not self.levels:
            raise ValueError("forecast.levels is empty: list at least one of segment_region, segment, region, all")
        return self


class CalendarConfig(_Section):
    # The built-in holiday calendar when the lake has no bronze.holiday_calendar (config/holidays.py):
    # cn = China's statutory holidays and make-up working days, none = no holidays.
    country: Literal["cn", "none"] = "cn"


class PipelineConfig(_Section):
    window_days: int = Field(90, ge=1)


class ItemBand(_Section):
    """A numeric figure cut into ``low`` / ``mid`` / ``high`` items (``<feature>=high``) for the association rules."""

    # A column of the meter load summary (daily_kwh, peak_share, flat_share, valley_share, load_factor,
    # weekend_ratio, over the window's complete days) or a numeric (int/double) tag of conf/tags.yaml.
    feature: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    # Two ascending cut points: low < cuts[0] <= mid < cuts[1] <= high. null: the tertiles of the as-of's
    # customers with a known value (each band holds about a third of them).
    cuts: list[float] | None = None

    @field_validator("cuts")
    @classmethod
    def _two_ascending(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != 2 or not v[0] < v[1]):
            raise ValueError(f"cuts {v} must be two ascending numbers [low/mid, mid/high] (or null: tertiles)")
        return v


class AssociationRulesConfig(_Section):
    """gold.tag_association_rules (stage profile): FPGrowth over one basket of tag items per customer."""

    enabled: bool = True
    min_support: float = Field(0.02, gt=0, le=1)     # share of the as-of's customers holding all items of a rule
    min_confidence: float = Field(0.5, ge=0, le=1)
    min_lift: float = Field(1.2, ge=0)
    max_antecedent_items: int = Field(2, ge=1)       # longer left-hand sides are mined but not kept
    # A rule with several antecedent items is kept only when its confidence beats every rule with one item
    # fewer (same consequent) by this much: else it restates the shorter rule.
    min_improvement: float = Field(0.05, ge=0)
    max_rules: int = Field(1000, ge=1)               # the strongest by lift are kept
    report_rules: int = Field(10, ge=0)              # rules shown in the HTML report
    # Tags whose values are items: a true boolean tag gives `code`, a string tag `code=value` (int and double
    # tags only through bands). null: every boolean and string tag of conf/tags.yaml.
    tags: list[str] | None = None
    # A false boolean tag gives an item `code=false` too. Off: "not X" is the common case of most flags, and
    # its rules say little about cross-selling.
    false_items: bool = False
    bands: list[ItemBand] = Field(default_factory=lambda: [ItemBand(feature="valley_share"),
                                                           ItemBand(feature="peak_share")])
    # FPGrowth's partitions (1 keeps its work in one task: baskets are one per customer and small).
    partitions: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _distinct_bands(self) -> "AssociationRulesConfig":
        features = [b.feature for b in self.bands]
        if len(set(features)) != len(features):
            raise ValueError(f"bands: a feature is banded twice ({features})")
        return self


# ---------------------------------------------------------------- campaigns (conf/campaigns.yaml)

# The channels of contracts.bronze.CONTACT_CHANNELS.
ContactChannel = Literal["app", "sms", "service_hall", "account_manager"]


def _tag_columns(info: ValidationInfo) -> list[str] | None:
    """gold.customer_tags' columns for the configured tags (contracts.tags.customer_tags_columns), as the tags
    section left them in the validation context; None when validated without one (a model built directly)
    or when conf/tags.yaml itself is invalid (its error is reported, not one per campaign rule)."""
    return info.context.get(_CUSTOMER_TAGS_COLUMNS) if isinstance(info.context, dict) else None


def _check_sql(what: str, sql: str, columns: list[str] | None) -> None:
    """Parse a campaign rule and, when ``columns`` are known, check it names only those."""
    from gridpersona.config.expressions import ExpressionError, check_expression, parse_row_expression

    try:
        if columns is None:
            parse_row_expression(sql)
        else:
            check_expression(sql, columns)
    except ExpressionError as exc:
        raise ValueError(f"{what} {sql!r}: {exc}") from None


class ChannelRule(_Section):
    """A customer for whom ``when`` (Spark SQL over gold.customer_tags columns) holds is reached via ``channel``."""

    channel: ContactChannel
    when: str


class CampaignExclusions(_Section):
    """Who is never targeted, even when eligible."""

    # do_not_contact true -- or unknown: consent is not assumed.
    do_not_contact: bool = True
    # has_arrears true (any bill past due and not fully paid as of the as-of).
    arrears: bool = True
    # Contacted by any campaign (bronze.contact_history) in the N local days ending on the as-of; null: no limit.
    contacted_within_days: int | None = Field(30, ge=1)
    # Already holds the campaign's offered_product (products_held).
    holds_offered_product: bool = True


class Campaign(_Section):
    """One campaign: who qualifies, who is excluded, how they are ranked, reached and held out.

    Its rules are parsed here; through :func:`load_settings` they must also name only columns of
    gold.customer_tags for the configured tags (the context columns and one per tag of conf/tags.yaml).
    """

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name_zh: str
    name_en: str
    offer_code: str = Field(min_length=1)
    # Product code (as in products_held) the offer sells; null for services that sell none.
    offered_product: str | None = None
    # Spark SQL boolean over gold.customer_tags columns; must hold (null counts as false).
    eligibility: str = "true"
    # Tag code -> Spark SQL boolean; at least one must hold. The codes that hold are the target's qualifying_tags.
    qualifiers: dict[str, str] = Field(min_length=1)
    exclusions: CampaignExclusions = Field(default_factory=CampaignExclusions)
    # 1 is the most important; a customer's campaigns are arbitrated by priority, then score.
    priority: int = Field(ge=1)
    # Spark SQL numeric over gold.customer_tags columns; higher first (null ranks last).
    score: str = "0"
    # Every target of this campaign is reached via this channel; null: campaigns.channel_rules.
    channel: ContactChannel | None = None
    # Top N by score (ties: smaller customer_id first); null: no limit.
    capacity: int | None = Field(None, ge=1)
    # Share of the selected targets held out as control (not contacted), by a hash of (customer, campaign).
    holdout_share: float = Field(0.1, ge=0, lt=1)
    # Response uplift (a share: 0.03 = 3 points) the holdout should detect; null: none stated. gold.campaign_power
    # stores the control share that detects it (transform/power.py, holdout sizing).
    target_effect: float | None = Field(None, gt=0, lt=1)
    # true: hold out that share (at most campaigns.power.max_holdout_share) instead of holdout_share; the
    # campaign keeps holdout_share when the target is infeasible. Needs target_effect.
    size_holdout: bool = False
    enabled: bool = True

    @field_validator("qualifiers")
    @classmethod
    def _codes(cls, v: dict[str, str]) -> dict[str, str]:
        for code in v:
            if not re.fullmatch(r"[a-z][a-z0-9_]*(:[a-z0-9_]+)?", code):
                raise ValueError(f"qualifier code {code!r} must look like tag_code or tag_code:value")
        return v

    @model_validator(mode="after")
    def _expressions(self, info: ValidationInfo) -> "Campaign":
        columns = _tag_columns(info)
        try:
            _check_sql("eligibility", self.eligibility, columns)
            for code, sql in self.qualifiers.items():
                _check_sql(f"qualifiers.{code}", sql, columns)
            _check_sql("score", self.score, columns)
        except ValueError as exc:
            raise ValueError(f"campaign {self.id!r}: {exc}") from None
        if self.size_holdout and self.target_effect is None:
            raise ValueError(f"campaign {self.id!r}: size_holdout: true needs a target_effect (the uplift to detect)")
        return self


def _default_channel_rules() -> list[ChannelRule]:
    return [
        ChannelRule(channel="account_manager", when="vip"),
        ChannelRule(channel="app", when="interaction_channel_pref = 'app' OR payment_channel_pref = 'online'"),
        ChannelRule(channel="service_hall", when="payment_channel_pref = 'offline' OR interaction_channel_pref = 'service_hall'"),
    ]


class CampaignPowerConfig(_Section):
    """Minimum detectable effects written to gold.campaign_power by the campaigns stage (transform/power.py)."""

    # Probability that the evaluate stage's interval excludes 0 at the minimum detectable effect.
    power: float = Field(0.8, gt=0.5, lt=1)
    # Outcomes given an MDE; response's baseline is the campaign's historic control response rate when
    # bronze.campaign_response holds one, else default_baseline; kwh_log_change's spread is the targets' placebo
    # change (the outcome_days ending on the as-of against the outcome_days before, campaigns.outcomes).
    outcomes: list[Literal["response", "churn", "kwh_log_change"]] = Field(
        default_factory=lambda: ["response", "churn", "kwh_log_change"])
    # Baseline rate per proportion outcome when the lake holds none (gold.campaign_power.baseline_source says which).
    default_baseline: dict[str, float] = Field(default_factory=lambda: {"response": 0.05, "churn": 0.01})
    # Cap of a control share sized to a target effect (campaign size_holdout).
    max_holdout_share: float = Field(0.5, gt=0, le=0.5)
    # Control rows of earlier cycles (bronze.campaign_response) needed before their response rate is the baseline.
    min_baseline_units: int = Field(50, ge=1)

    @model_validator(mode="after")
    def _baselines(self) -> "CampaignPowerConfig":
        missing = [o for o in self.outcomes if o != "kwh_log_change" and o not in self.default_baseline]
        if missing:
            raise ValueError(f"campaigns.power.default_baseline lacks {missing}")
        bad = {k: v for k, v in self.default_baseline.items() if not 0 < v < 1}
        if bad:
            raise ValueError(f"campaigns.power.default_baseline rates must be in (0, 1), got {bad}")
        return self


class CampaignOutcomesConfig(_Section):
    """gold.campaign_outcomes (evaluate stage): the periods the business outcomes of a cycle are measured over."""

    # kWh and peak-valley change compare the pre_days ending on the cycle's as-of with the outcome_days after it.
    pre_days: int = Field(30, ge=1)
    # The outcome period: the days after the cycle (cut at the lake's last day; window_complete says so).
    outcome_days: int = Field(30, ge=1)
    # Days of each period with completeness >= min_completeness a customer needs for kWh / peak-valley outcomes.
    min_days: int = Field(20, ge=1)
    min_completeness: float = Field(0.9, gt=0, le=1)
    # A pre-period mean below this (kWh/day) makes the log ratio meaningless: the customer counts as missing.
    min_pre_kwh_per_day: float = Field(0.1, ge=0)


class CampaignsConfig(_Section):
    # M: a customer is a target (treatment or control) of at most this many campaigns per cycle.
    max_per_customer: int = Field(2, ge=1)
    # Ordered; the first rule that holds picks a target's channel, else fallback_channel.
    channel_rules: list[ChannelRule] = Field(default_factory=_default_channel_rules)
    fallback_channel: ContactChannel = "sms"
    # Two-sided level of each uplift interval in gold.campaign_evaluation, and the joint level of the
    # simultaneous (Bonferroni) family intervals: all of a family cover together with this probability.
    confidence: float = Field(0.95, gt=0.5, lt=1)
    power: CampaignPowerConfig = Field(default_factory=CampaignPowerConfig)
    outcomes: CampaignOutcomesConfig = Field(default_factory=CampaignOutcomesConfig)
    definitions: list[Campaign] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> "CampaignsConfig":
        ids = [c.id for c in self.definitions]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"campaign id(s) {dupes} defined more than once")
        for i, rule in enumerate(self.channel_rules):
            try:
                _check_sql(f"channel_rules[{i}] ({rule.channel}) when", rule.when, _tag_columns(info))
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def active(self) -> list[Campaign]:
        """Enabled campaigns in arbitration order (priority, then id)."""
        return sorted((c for c in self.definitions if c.enabled), key=lambda c: (c.priority, c.id))


class SqlServerConfig(_Section):
    # Users of `gridpersona sql-server` (name:role:pbkdf2 hash lines, managed by `gridpersona sql-user`, mode 0600).
    # Absent file: no authentication, loopback binds only.
    users_file: str = "~/.config/gridpersona/sql-users"
    # Spark UI of `sql` / `sql-server` sessions (it shows query text): off unless true, then on 127.0.0.1 only.
    ui: bool = False


class Settings(_Section):
    env: str = "local"
    lake: LakeConfig = Field(default_factory=LakeConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    ami: AmiConfig = Field(default_factory=AmiConfig)
    tariff: TariffConfig = Field(default_factory=TariffConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    shapes: ShapesConfig = Field(default_factory=ShapesConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    calendar: CalendarConfig = Field(default_factory=CalendarConfig)
    rate_advisor: RateAdvisorConfig = Field(default_factory=RateAdvisorConfig)
    neighbours: NeighboursConfig = Field(default_factory=NeighboursConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    anomalies: AnomaliesConfig = Field(default_factory=AnomaliesConfig)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    # conf/tags.yaml (merged after base.yaml, before the environment file).
    tags: TagsConfig = Field(default_factory=TagsConfig)
    campaigns: CampaignsConfig = Field(default_factory=CampaignsConfig)
    sql_server: SqlServerConfig = Field(default_factory=SqlServerConfig)
    association_rules: AssociationRulesConfig = Field(default_factory=AssociationRulesConfig)

    @model_validator(mode="after")
    def _source_zone_follows_ami(self) -> "Settings":
        # Landed files come from the same utility as the meters unless said otherwise: a zone
        # changed in ami.time_zone alone must not leave zone-less timestamps read in another zone.
        if self.ingest.source_time_zone is None:
            self.ingest.source_time_zone = self.ami.time_zone
        # One notion of an impossible reading: what ingest refuses, clean would quarantine.
        if self.ingest.max_interval_kwh is None:
            self.ingest.max_interval_kwh = self.clean.max_interval_kwh
        return self

    def config_hash(self) -> str:
        """Stable short hash of the effective configuration (for run logs)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lake.root=/data/lake")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", key):
        raise ConfigError(f"--set {item!r}: {key!r} is not a dotted key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    # Under a free-form mapping the rest of the key is one name: spark.conf.spark.sql.shuffle.partitions.
    for n in range(1, len(parts)):
        if tuple(parts[:n]) in _OPEN_MAPPINGS:
            return [*parts[:n], ".".join(parts[n:])], value
    return parts, value


# Keys whose values are free-form mappings: their children are not schema keys.
_OPEN_MAPPINGS = {("lake", "locations"), ("spark", "conf"), ("generate", "archetype_mix"), ("ingest", "column_mappings")}


def _merge(base: dict, layer: dict, source: str, origin: dict, prefix: tuple = ()) -> None:
    """Merge ``layer`` into ``base`` in place, recording each leaf's source in ``origin``."""
    for key, value in layer.items():
        path = prefix + (str(key),)
        if isinstance(value, dict) and path not in _OPEN_MAPPINGS and isinstance(base.get(key), dict):
            _merge(base[key], value, source, origin, path)
        elif isinstance(value, dict) and path not in _OPEN_MAPPINGS:
            base[key] = {}
            _merge(base[key], value, source, origin, path)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
            for sub in value:
                origin[path + (str(sub),)] = source
            origin[path] = source
        else:
            base[key] = value
            origin[path] = source


def _source_of(loc: tuple, origin: dict) -> str:
    for n in range(len(loc), 0, -1):
        if loc[:n] in origin:
            return origin[loc[:n]]
    # A section-level error (e.g. tariff periods that overlap): name every layer that set keys in it.
    below = sorted({src for key, src in origin.items() if key[: len(loc)] == loc})
    return " + ".join(below) if below else "defaults"


def _named_key(loc: tuple, merged: dict) -> str:
    """Dotted key of an error location; a list item of tags.definitions is named by its tag code."""
    if len(loc) >= 3 and loc[:2] == ("tags", "definitions") and loc[2].isdigit():
        items = merged.get("tags", {}).get("definitions") or []
        i = int(loc[2])
        code = items[i].get("code") if i < len(items) and isinstance(items[i], dict) else None
        if code:
            loc = (*loc[:2], f"{loc[2]}[{code}]", *loc[3:])
    return ".".join(loc) or "(top level)"


def _campaign_of(loc: tuple, merged: dict) -> str:
    """' (campaign <id>)' for a key under campaigns.definitions[i], so errors name the campaign."""
    if len(loc) >= 3 and loc[:2] == ("campaigns", "definitions") and loc[2].isdigit():
        items = merged.get("campaigns", {}).get("definitions")
        i = int(loc[2])
        if isinstance(items, list) and i < len(items) and isinstance(items[i], dict) and items[i].get("id"):
            return f" (campaign {items[i]['id']!r})"
    return ""


def load_settings(env: str = "local", overrides: list[str] | tuple[str, ...] = (), conf_dir: str | Path | None = None) -> Settings:
    """Load base < env < overrides, validate, and return Settings.

    Raises ConfigError naming the file and dotted key when anything is wrong.
    """
    conf = Path(conf_dir) if conf_dir else DEFAULT_CONF_DIR
    merged: dict[str, Any] = {}
    origin: dict[tuple, str] = {}
    base_path = conf / "base.yaml"
    _merge(merged, _read_yaml(base_path), str(base_path), origin)
    # Campaign definitions live in their own file, under its one top-level key `campaigns`.
    campaigns_path = conf / "campaigns.yaml"
    if campaigns_path.is_file():
        campaigns_data = _read_yaml(campaigns_path)
        stray = sorted(set(campaigns_data) - {"campaigns"})
        if stray:
            raise ConfigError(f"{campaigns_path}: unknown top-level key(s) {stray}; this file holds only 'campaigns'")
        _merge(merged, campaigns_data, str(campaigns_path), origin)
    # conf/tags.yaml holds the `tags` section (its top-level keys: taxonomy, features, definitions).
    tags_path = conf / "tags.yaml"
    if tags_path.is_file():
        _merge(merged, {"tags": _read_yaml(tags_path)}, str(tags_path), origin)
    env_path = conf / f"{env}.yaml"
    if not env_path.is_file():
        known = sorted(p.stem for p in conf.glob("*.yaml") if p.stem not in {"base", "tags", "campaigns"})
        raise ConfigError(f"environment {env!r}: config file not found: {env_path} (known environments: {known})")
    _merge(merged, _read_yaml(env_path), str(env_path), origin)
    for item in overrides:
        keys, value = _parse_override(item)
        nested: dict[str, Any] = value
        for k in reversed(keys):
            nested = {k: nested}
        _merge(merged, nested, f"--set {item}", origin)
    merged["env"] = env
    # Validated even when no file sets it: campaign rules are checked against the columns its tags give.
    merged.setdefault("tags", {})
    try:
        settings = Settings.model_validate(merged, context={})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            key = _named_key(loc, merged)
            source = _source_of(loc, origin)
            campaign = _campaign_of(loc, merged)
            if err["type"] == "extra_forbidden":
                lines.append(f"{source}: unknown key '{key}'{campaign}")
            else:
                got = err.get("input")
                shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
                msg = err["msg"].removeprefix("Value error, ")
                lines.append(f"{source}: key '{key}'{campaign}: {msg}{shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    return settings
