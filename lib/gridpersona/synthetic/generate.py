"""A realistic synthetic lake with known ground truth (``gridpersona generate``).

``generate_lake`` writes every bronze table plus ``truth.meters`` (each meter's
planted archetype and tags) and ``truth.faults`` (every planted data fault, one
row per affected interval), so cleaning, segmentation, tags and campaigns can be
checked against what was planted.

How the data is made (all in local wall-clock time of ``ami.time_zone``):

- **Time grid.** Each local day runs from its local midnight to the next one in
  steps of ``interval_minutes``; ``ts`` is the interval's start instant in UTC
  and ``date`` its local date, so DST days have 92/100 quarter-hours.
- **Load.** Each meter has a dominant archetype (``schemas.ARCHETYPES``, what
  ``truth.meters.archetype`` records) whose daily shape is a sum of smooth bumps
  and plateaus over the local hour, varied per meter (time shift, amplitude,
  base load), mixed with a secondary archetype's shape (weight 0-20%; for
  ``generate.ambiguous_meter_share`` of the occupied homes 25-45%), with
  weekday/weekend shapes and levels. Public holidays (``generate.holiday_calendar``, default
  ``calendar.country``: :mod:`gridpersona.config.holidays`) are lived like weekends, make-up working days
  like weekdays; ``bronze.holiday_calendar`` holds that calendar for the years the lake touches.
- **Day to day.** Each home's routine runs up to about 1.5 h early or late on a
  given day (the day's shape rotates), its level has lognormal day noise, 3% of
  days are high (x1.3-1.8) and 3% low (out all day: flatter, x0.4-0.65); 15% of
  homes take a 2-9 day trip (standby plus 10-25% of the usual load) and 15% go away over each holiday
  period of 2+ days, shutting the home down (fridge and standby only, 0.6-1.0 kWh a day: near-zero like a
  vacant premise). Readings carry per-interval multiplicative noise.
- **Weather.** A daily mean temperature (the climate curve of Shanghai, so a
  trend across the window, plus an AR(1) anomaly, sd about 2.7 C) drives the
  household level: heating below 16 C, air conditioning above 22 C, scaled by
  each meter's sensitivity; the factor averages to 1 over the window. The series runs back to the first
  bill month (the anomaly drawn backwards from the window's first day, so the window does not depend on
  ``billing_months``) and is written as ``bronze.weather``, per region plus a fixed station offset
  (``_REGION_TEMP_OFFSET_C``) the load does not follow.
- **Appliance bursts.** Three quarters of the occupied homes have a big
  appliance (3-9 kW: electric shower, oven, heater) used 0.2-1.2 times a day
  (at most 20% of the household's energy) for 15 min to 2 h, mornings and
  evenings. Bursts are real load, never faults.
- **Blocks.** ``ev_night`` meters charge at their charger's power (mostly about
  7 kW) for 1-4 h from 21:30-01:00 on 30-70% of the nights they are home.
  ``electric_heating`` meters run a broad block every day: direct heating / air
  conditioning from 17:30-19:30 for 10-12.5 h, or (a quarter of them) night
  storage from about 23:00 for 6.5-8 h, whose energy is a base (water heating)
  plus kWh per heating (and, for direct ones, cooling) degree-day.
  Readings are kWh rounded to the meter's 0.001 kWh resolution.
- **Scale.** ``truth.meters.mean_daily_kwh`` is the expected mean daily kWh over
  the generated AMI window (seasonal and weekday factors average to 1 over the
  window; it includes the expected charging and heating energy). Bills use the
  month's realized temperatures of that series and a consumption growth of ``generate.annual_growth`` a
  year (factor 1 at the window, smaller before it), so bills, readings and weather agree.
- **Bill shocks.** In windows of 28 days or more, ``generate.bill_shock_share``
  of the known residential, non-vacant meters get a new load from a day of the last bill period
  (``_shock_start_range``, ``truth.meters.bill_shock_start_date``) to the window's end: their
  household load grows by 0.8-1.4x the meter's mean daily kWh from then on
  (``truth.meters.bill_shock``).
  Bills, all of earlier months, do not include it; ``mean_daily_kwh`` does.
- **Abnormal use** (``generate.anomaly_share``, windows of 28 days or more; :func:`_plan_anomalies`,
  ``truth.anomalies``): a share of the known, open, non-shock homes of the plain archetypes (no EV, no
  electric heating, not vacant) get one case each, split evenly over the kinds: ``sustained_drop``
  (readings x 0.25-0.55 from the first day on, shape kept), ``flatline`` (4-10 days of one constant
  non-zero reading), ``zero_run`` (4-10 days of exact zeros), ``reverse_flow`` (every reading negated from
  the first day on) and ``pattern_change`` (the main shape becomes another archetype's, same energy). The
  cases that move the level start at least 14 days into the window and, when a past cycle's outcomes are
  planted, end or begin before its pre period, so its kWh effect is measured as before; no fault is
  planted on a case's days. A reverse-flow customer's ``tou_saver`` truth is null (the pipeline sees no
  reading of it); the other kinds are priced as the lake holds them.
- **Archive.** ``generate.archive_attribute_null_share`` of the customers lack
  each optional archive attribute (``ARCHIVE_OPTIONAL_ATTRIBUTES``, drawn per
  attribute); ``generate.omit_tables`` leaves optional bronze tables unwritten.
- **Faults** are planned up front on a (known meter x interval) grid so they
  never overlap: gaps first (each gap's neighbouring intervals stay normal
  readings, so gaps never touch each other or another fault), then point
  faults (duplicate, spike, negative, null) on distinct intervals that are not
  next to a gap. The first and last interval of the window are never faulted.
  Meters unknown to the archive carry no other faults; each of their readings
  is one ``unknown_meter`` truth row.
- **Snapshot date.** The lake is an extract taken at the end of the window's
  last local day. Billing covers the ``billing_months`` months ending with the
  latest month whose due date (15th of the following month) falls on or before
  that day, so every bill is due and its payment state is final; no payment,
  interaction or past cycle's response is dated after it. Service interactions
  cover the 365 days ending on that day; past campaign contacts the 180 days
  before ``start`` plus one cycle 30 days before the snapshot.
- **Campaign cycle of the snapshot day.** Every configured campaign gets a
  response row per archive customer for the cycle whose as-of is the
  snapshot day, with a planted uplift for customers in treatment by the
  pipeline's holdout hash (``truth.campaigns``: base rate, true uplift); those
  responses are dated after the snapshot (what the CRM will report).
- **A past cycle with outcomes** (``generate.plant_outcomes``; :func:`_outcome_plan`). A cycle
  ``outcome_days`` before the snapshot (when the window holds twice that): the treated customers (by the
  same hash) of ``outcome_kwh_campaign`` use (1 - x) of their kWh from the day after it, and account
  closures in the days after it (probability lowered by delta for the treated of
  ``outcome_churn_campaign``) set ``account_close_date`` and stop the meter's readings
  (``truth.campaign_outcomes``).

Everything is deterministic by seed: each table and purpose (and each AMI day)
draws from its own ``numpy`` stream derived from ``(seed, purpose, ...)``, so
the same arguments give identical tables whatever the chunking.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import types as T

from gridpersona.config import FaultRates, Settings, TariffConfig, range_minutes
from gridpersona.config.holidays import default_calendar
from gridpersona.contracts.base import TableSpec
from gridpersona.contracts.bronze import AMI_INTERVAL, BRONZE
from gridpersona.contracts.truth import ANOMALY_KINDS, ARCHETYPES, FAULT_CODES, TRUTH

__all__ = ["arrow_schema", "generate_lake", "TABLES"]

# Write order; also the keys of generate_lake's result.
TABLES = (
    "bronze.customer_archive",
    "bronze.billing_payment",
    "bronze.service_interaction",
    "bronze.contact_history",
    "bronze.campaign_response",
    "truth.campaigns",
    "truth.campaign_outcomes",
    "truth.meters",
    "bronze.ami_interval",
    "truth.faults",
    "truth.anomalies",
    "bronze.weather",
    "bronze.holiday_calendar",
)

_SPARK_TO_ARROW = {
    T.StringType(): pa.string(),
    T.DoubleType(): pa.float64(),
    T.TimestampType(): pa.timestamp("us", tz="UTC"),
    T.DateType(): pa.date32(),
    T.IntegerType(): pa.int32(),
    T.LongType(): pa.int64(),
    T.BooleanType(): pa.bool_(),
}


def arrow_schema(spec: TableSpec) -> pa.Schema:
    """The Arrow schema of a table contract: same names, order, types and nullability."""
    fields = []
    for col in spec.columns:
        try:
            arrow_type = _SPARK_TO_ARROW[col.dtype]
        except KeyError:
            raise ValueError(f"{spec.name}: column '{col.name}' has type {col.dtype.simpleString()}, "
                             f"which has no Arrow mapping in generate.arrow_schema") from None
        fields.append(pa.field(col.name, arrow_type, nullable=col.nullable))
    return pa.schema(fields)


# ------------------------------------------------------------------ randomness

def _rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """Independent stream per (seed, purpose, keys): adding a table or chunking days changes no other stream."""
    entropy = [seed & 0xFFFFFFFFFFFFFFFF, zlib.crc32(purpose.encode()), *[int(k) for k in keys]]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _lognormal_mean1(rng: np.random.Generator, sigma: np.ndarray | float, size) -> np.ndarray:
    """Multiplicative noise with mean 1."""
    sigma = np.asarray(sigma, dtype=np.float64)
    return np.exp(sigma * rng.standard_normal(size) - 0.5 * sigma**2)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


# ------------------------------------------------------------------ time grid

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US = dt.timedelta(microseconds=1)
_US_PER_HOUR = 3_600_000_000


def _local_midnight_us(day: dt.date, tz: ZoneInfo) -> int:
    """UTC instant (microseconds) of ``day``'s local midnight."""
    return (dt.datetime(day.year, day.month, day.day, tzinfo=tz) - _EPOCH) // _US


@dataclass(frozen=True)
class TimeGrid:
    """The window's intervals: local days, each cut from local midnight to the next."""

    dates: tuple[dt.date, ...]
    interval_minutes: int
    day_start_us: np.ndarray  # (D+1,) UTC instants of local midnights; the last one ends the window
    offsets: np.ndarray  # (D+1,) index of each day's first interval in the window
    wall_hours: tuple[np.ndarray, ...]  # per day: local wall-clock hour at each interval start
    prev_day_hours: np.ndarray  # (D,) length in hours of the local day before each day

    @property
    def days(self) -> int:
        return len(self.dates)

    @property
    def total_slots(self) -> int:
        return int(self.offsets[-1])

    def n_slots(self, d: int) -> int:
        return int(self.offsets[d + 1] - self.offsets[d])

    def slot_ts_us(self, d: int) -> np.ndarray:
        step = self.interval_minutes * 60_000_000
        return self.day_start_us[d] + step * np.arange(self.n_slots(d), dtype=np.int64)

    def all_ts_us(self) -> np.ndarray:
        return np.concatenate([self.slot_ts_us(d) for d in range(self.days)])


def build_time_grid(start: dt.date, days: int, interval_minutes: int, time_zone: str) -> TimeGrid:
    """Intervals of ``days`` local days from ``start`` in ``time_zone``.

    A day holds as many whole intervals as fit between its local midnight and the
    next (96 quarter-hours normally, 92/100 on DST change days).
    """
    tz = ZoneInfo(time_zone)
    step = interval_minutes * 60_000_000
    dates = tuple(start + dt.timedelta(days=d) for d in range(days))
    bounds = np.array([_local_midnight_us(start + dt.timedelta(days=d), tz) for d in range(-1, days + 1)], dtype=np.int64)
    day_start = bounds[1:]
    lengths = np.diff(bounds)  # (D+1,): day -1 .. day D-1
    n_slots = lengths[1:] // step
    offsets = np.concatenate([[0], np.cumsum(n_slots)]).astype(np.int64)
    wall = []
    for d in range(days):
        # Per interval of the day (<= 100), not per reading: the local wall clock.
        hours = []
        for j in range(int(n_slots[d])):
            local = dt.datetime.fromtimestamp((int(day_start[d]) + j * step) / 1e6, tz)
            hours.append(local.hour + local.minute / 60.0)
        wall.append(np.array(hours))
    return TimeGrid(dates, interval_minutes, day_start, offsets, tuple(wall), lengths[:-1] / _US_PER_HOUR)


# ------------------------------------------------------------------ load shapes

_ARCH = {name: i for i, name in enumerate(ARCHETYPES)}
_RESIDENTIAL_WITH_SEASON = ("evening_peak", "flat", "night", "double_peak", "ev_night", "electric_heating")
# Occupied homes: day-to-day habits (occupancy shifts, odd days, trips, appliance bursts) apply to them.
_OCCUPIED = _RESIDENTIAL_WITH_SEASON
# The patterns a household may mix into its own (its secondary archetype).
_SECONDARY = ("evening_peak", "flat", "night", "double_peak")


def _circ(h: np.ndarray, c: float) -> np.ndarray:
    """Signed hours from ``c`` to ``h`` on the 24 h circle, in [-12, 12)."""
    return (h - c + 12.0) % 24.0 - 12.0


def _bump(h: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * (_circ(h, center) / width) ** 2)


def _box(h: np.ndarray, begin: float, end: float, edge: float) -> np.ndarray:
    """Smooth plateau from ``begin`` to ``end`` local hours (may wrap midnight; < 12 h long)."""
    return 1.0 / (1.0 + np.exp(-_circ(h, begin) / edge)) / (1.0 + np.exp(_circ(h, end) / edge))


def _shape_parts(archetype: str, h: np.ndarray, weekend: bool) -> tuple[float, np.ndarray]:
    """(base load, variable load) of an archetype at local hours ``h`` (relative units).

    The variable part carries each archetype's signature. ``ev_night`` and
    ``electric_heating`` homes have the evening-peak household load; their
    charging and heating blocks are added separately (see module docstring).
    """
    if archetype in ("evening_peak", "ev_night", "electric_heating"):
        midday = 0.5 if weekend else 0.2
        return 0.25, 0.15 * _bump(h, 7.5, 1.0) + midday * _bump(h, 13.0, 2.5) + 2.6 * _bump(h, 20.5, 1.5)
    if archetype == "double_peak":
        if weekend:  # later, broader morning
            return 0.25, 1.5 * _bump(h, 9.3, 1.2) + 0.3 * _bump(h, 13.0, 2.5) + 1.9 * _bump(h, 19.8, 1.4)
        return 0.25, 1.9 * _bump(h, 7.8, 0.9) + 0.15 * _bump(h, 13.0, 2.5) + 2.0 * _bump(h, 19.8, 1.3)
    if archetype == "flat":
        return 1.0, 0.08 * _bump(h, 14.0, 4.0)
    if archetype == "night":
        # Night shift / storage water heater on the valley tariff: 23-07 h.
        return 0.15, 2.5 * _box(h, 23.0, 7.0, 0.35)
    if archetype == "vacant":
        # Standby (fridge, router) plus a dusk-to-dawn porch light.
        return 1.0, 4.0 * _box(h, 19.0, 5.5, 0.3)
    if archetype == "commercial_day":
        if weekend:
            return 0.15, 0.25 * _box(h, 9.0, 17.0, 0.5)
        return 0.15, 1.0 * _box(h, 8.0, 18.0, 0.4) + 0.15 * _bump(h, 12.5, 1.0)
    raise ValueError(f"unknown archetype {archetype!r}")


# (weekday level, weekend level): a 5+2 week averages to 1.
_WEEK_LEVEL = {"commercial_day": (1.228, 0.43), "vacant": (1.0, 1.0)}
_WEEK_LEVEL_RESIDENTIAL = (0.96, 1.10)
# Per archetype: (log-median daily kWh, log sigma, clip low, clip high, day sigma, interval sigma, season amplitude)
# (for electric_heating the household load only; its heating block comes on top)
_SCALE = {
    "evening_peak": (9.0, 0.45, 2.0, 40.0, 0.12, 0.40, 1.0),
    "flat": (7.0, 0.45, 2.0, 40.0, 0.10, 0.18, 1.0),
    "night": (10.0, 0.45, 2.0, 40.0, 0.12, 0.30, 1.0),
    "double_peak": (10.0, 0.45, 2.0, 40.0, 0.12, 0.40, 1.0),
    "ev_night": (8.0, 0.30, 3.0, 30.0, 0.12, 0.40, 1.0),
    "electric_heating": (8.0, 0.35, 3.0, 30.0, 0.12, 0.40, 0.5),
    "vacant": (0.5, 0.35, 0.2, 1.0, 0.10, 0.15, 0.0),
    "commercial_day": (150.0, 0.60, 30.0, 1500.0, 0.10, 0.15, 0.5),
}


# ------------------------------------------------------------------ climate and calendar

# Monthly mean temperature (deg C) of the default country's reference city (Shanghai).
_CLIMATE_C = np.array([4.8, 6.6, 10.3, 15.8, 21.0, 24.8, 28.8, 28.4, 24.9, 19.9, 14.1, 7.7])
_HEATING_BASE_C, _COOLING_BASE_C = 16.0, 22.0


def _climate_at(days) -> np.ndarray:
    """Climatological temperature per date, interpolated (cyclically) between mid-month values."""
    pos = np.array([(d.month - 1) + (d.day - 0.5) / calendar.monthrange(d.year, d.month)[1] - 0.5 for d in days])
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    return _CLIMATE_C[lo % 12] * (1 - frac) + _CLIMATE_C[(lo + 1) % 12] * frac


def _degree_days(temp_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(heating, cooling) degree-days of daily mean temperatures."""
    return np.maximum(0.0, _HEATING_BASE_C - temp_c), np.maximum(0.0, temp_c - _COOLING_BASE_C)


def _season_factor(temp_c: np.ndarray) -> np.ndarray:
    """Household load relative to a mild day: heating below 16 C, air conditioning above 22 C."""
    hdd, cdd = _degree_days(temp_c)
    return 0.78 + 0.035 * hdd + 0.07 * cdd


@dataclass(frozen=True)
class Weather:
    """The window's daily mean temperature (climate + persistent anomalies) and what follows from it, and
    the same series over the whole span the lake covers (bills before the window, then the window)."""

    temp_c: np.ndarray  # (D,)
    factor: np.ndarray  # (D,) household seasonal factor, window mean 1
    norm: float  # mean of _season_factor over the window (divides every factor, bills too)
    hdd: np.ndarray
    cdd: np.ndarray
    span_start: dt.date | None = None  # first day of span_temp_c (None: the window's first day)
    span_temp_c: np.ndarray | None = None  # daily temperature from span_start to the window's last day

    def temp_on(self, days: list[dt.date]) -> np.ndarray:
        """Temperature of each of ``days`` (all within the span)."""
        start = self.span_start
        series = self.span_temp_c if self.span_temp_c is not None else self.temp_c
        if start is None:
            raise ValueError("Weather.temp_on: the series has no span start")
        idx = np.array([(d - start).days for d in days], dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(series)):
            raise ValueError(f"Weather.temp_on: {days[0]} .. {days[-1]} is outside the generated span "
                             f"{start} .. {start + dt.timedelta(days=len(series) - 1)}")
        return series[idx]


def _weather(dates, seed: int, span_start: dt.date | None = None) -> Weather:
    """Daily temperatures: the climatological curve (a trend across the window, not a step) plus an
    AR(1) anomaly (spells of warm and cool days, sd about 2.7 C).

    ``span_start`` (before the window's first day): the series goes back to it, the anomaly run backwards
    from the window's first day on its own stream (a stationary Gaussian AR(1) reads the same both ways),
    so the window's temperatures, and so its readings, do not depend on how far back the bills go."""
    rng = _rng(seed, "weather")
    shocks = rng.normal(0.0, 1.8, len(dates))
    anomaly = np.zeros(len(dates))
    for i in range(len(dates)):
        anomaly[i] = (0.75 * anomaly[i - 1] if i else 0.0) + shocks[i] * (1.0 if i else 1.5)
    temp = _climate_at(dates) + anomaly
    raw = _season_factor(temp)
    hdd, cdd = _degree_days(temp)
    first = dates[0]
    before = max(0, (first - span_start).days) if span_start is not None else 0
    back = np.zeros(before)
    back_shocks = _rng(seed, "weather_history").normal(0.0, 1.8, before)
    prev = anomaly[0] if len(anomaly) else 0.0
    for i in range(before - 1, -1, -1):
        prev = back[i] = 0.75 * prev + back_shocks[before - 1 - i]
    history = [first - dt.timedelta(days=before - i) for i in range(before)]
    span = np.concatenate([_climate_at(history) + back, temp]) if before else temp
    return Weather(temp, raw / raw.mean(), float(raw.mean()), hdd, cdd, first - dt.timedelta(days=before), span)


# Each region's weather station reads the city's series plus a fixed siting offset (deg C): the city centre
# (SA03) is warmer, the outer district (SA04) cooler. The load follows the city's series.
_REGION_TEMP_OFFSET_C = {"SA01": 0.2, "SA02": 0.0, "SA03": 0.5, "SA04": -0.4}


def _weather_table(weather: Weather) -> pa.Table:
    """bronze.weather: every region's daily mean temperature (city series + the region's offset, to 0.1 C)
    over the whole span (the bills' months and the AMI window)."""
    series = weather.span_temp_c if weather.span_temp_c is not None else weather.temp_c
    start = weather.span_start
    days = np.datetime64(start, "D") + np.arange(len(series)).astype("timedelta64[D]")
    regions = list(_REGION_TEMP_OFFSET_C)
    return pa.Table.from_pydict({
        "region": np.repeat(np.array(regions, dtype=object), len(series)).tolist(),
        "date": np.tile(days, len(regions)),
        "temp_mean_c": np.concatenate([np.round(series + _REGION_TEMP_OFFSET_C[r], 1) for r in regions]),
    }, schema=arrow_schema(BRONZE["bronze.weather"]))


def _holiday_mask(dates, calendar_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(holiday, make-up working day) masks of ``dates`` from the built-in calendar ``calendar_name``
    (:func:`gridpersona.config.holidays.default_calendar`, the one the pipeline falls back to)."""
    rows = default_calendar(calendar_name, dates[0], dates[-1]) if len(dates) else []
    off = {r.date for r in rows if r.day_off}
    work = {r.date for r in rows if not r.day_off}
    return (np.array([d in off for d in dates], dtype=bool), np.array([d in work for d in dates], dtype=bool))


def _holiday_table(first: dt.date, last: dt.date, calendar_name: str) -> pa.Table:
    """bronze.holiday_calendar: the built-in calendar's rows from ``first`` to ``last``."""
    rows = default_calendar(calendar_name, first, last)
    return pa.Table.from_pydict({
        "date": [r.date for r in rows],
        "holiday_name": [r.holiday_name for r in rows],
        "day_off": [r.day_off for r in rows],
    }, schema=arrow_schema(BRONZE["bronze.holiday_calendar"]))


# ------------------------------------------------------------------ meters

@dataclass
class Population:
    """Every meter (known ones first, then those unknown to the archive) and its planted parameters."""

    meter_ids: pa.Array
    archetype: np.ndarray  # int index into ARCHETYPES (the dominant pattern: what truth records)
    n_known: int
    household_kwh: np.ndarray  # mean daily kWh of the household load (without EV charging and heating block)
    mean_daily_kwh: np.ndarray  # expected mean daily kWh over the window (with EV charging and heating)
    shift_h: np.ndarray
    base_f: np.ndarray
    amp: np.ndarray
    day_sigma: np.ndarray
    int_sigma: np.ndarray
    season_amp: np.ndarray
    ev_power_kw: np.ndarray  # 0 unless ev_night
    ev_session_kwh: np.ndarray  # usual energy a charging session tops up
    ev_night_prob: np.ndarray
    secondary: np.ndarray  # int index into ARCHETYPES of the mixed-in pattern
    secondary_w: np.ndarray  # its weight in the daily shape (0 for vacant meters)
    burst_rate: np.ndarray  # appliance bursts per ordinary day
    burst_kw: np.ndarray  # power of the home's big appliance (3-9 kW)
    heat_kind: np.ndarray  # 0 none, 1 direct heating / air conditioning (evening-to-night), 2 night storage
    heat_base_kwh: np.ndarray  # heating block energy on a mild day (water heating, standby)
    heat_kwh_per_hdd: np.ndarray
    heat_kwh_per_cdd: np.ndarray
    heat_start_h: np.ndarray
    heat_hours: np.ndarray

    @property
    def n(self) -> int:
        return len(self.archetype)

    def arch_names(self) -> np.ndarray:
        return np.array(ARCHETYPES, dtype=object)[self.archetype]

    def occupied(self) -> np.ndarray:
        return np.isin(self.arch_names(), _OCCUPIED)

    def ev_kwh_per_day(self) -> np.ndarray:
        """Expected charging energy per day (EV owners at home)."""
        return self.ev_night_prob * self.ev_session_kwh

    def heat_kwh(self, hdd: np.ndarray | float, cdd: np.ndarray | float) -> np.ndarray:
        """(n, days) expected heating-block energy at the given degree-days."""
        hdd, cdd = np.atleast_1d(hdd), np.atleast_1d(cdd)
        return (self.heat_base_kwh[:, None] + self.heat_kwh_per_hdd[:, None] * hdd[None, :]
                + self.heat_kwh_per_cdd[:, None] * cdd[None, :])


def _archetype_counts(mix: dict[str, float], n: int) -> np.ndarray:
    """Exact counts per archetype for ``n`` meters (largest remainder)."""
    shares = np.array([max(mix.get(a, 0.0), 0.0) for a in ARCHETYPES])
    shares = shares / shares.sum()
    raw = shares * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return counts


# Appliance bursts: energy per burst U(0.5, 2.5) kWh at 3-9 kW, lasting 15 min to 2 h.
_BURST_KW = (3.0, 9.0)
_BURST_KWH = (0.5, 2.5)
_BURST_HOURS = (0.25, 2.0)
_BURST_MEAN_KWH = 1.6  # mean energy of a burst once its duration is clipped to _BURST_HOURS


def _population(mix: dict[str, float], meters: int, unknown_share: float, seed: int, weather: Weather,
                ambiguous_share: float = 0.12) -> Population:
    rng = _rng(seed, "population")
    n_unknown = max(1, _round_half_up(unknown_share * meters)) if unknown_share > 0 else 0
    codes = np.repeat(np.arange(len(ARCHETYPES)), _archetype_counts(mix, meters))
    known = rng.permutation(codes)
    shares = np.array([max(mix.get(a, 0.0), 0.0) for a in ARCHETYPES])
    unknown = rng.choice(len(ARCHETYPES), size=n_unknown, p=shares / shares.sum())
    arch = np.concatenate([known, unknown]).astype(np.int8)
    n = len(arch)
    # Known meters M0000010001...; unknown ones from a separate range that cannot collide.
    unknown_base = max(90_000_001, 10_001 + meters + 1)
    numbers = np.concatenate([10_001 + np.arange(meters), unknown_base + np.arange(n_unknown)])
    meter_ids = pa.array([f"M{k:010d}" for k in numbers], pa.string())

    params = np.array([_SCALE[a] for a in ARCHETYPES])[arch]
    median, sigma, lo, hi = params[:, 0], params[:, 1], params[:, 2], params[:, 3]
    household = np.clip(median * np.exp(sigma * rng.standard_normal(n)), lo, hi)
    is_comm = arch == _ARCH["commercial_day"]
    shift = np.clip(rng.normal(0.0, np.where(is_comm, 0.4, 0.3)), -0.75, 0.75)
    base_f = rng.uniform(0.8, 1.25, n)
    amp = rng.uniform(0.8, 1.25, n)
    is_ev = arch == _ARCH["ev_night"]
    # Chargers are mostly ~7 kW wall boxes, some 3.3-3.5 kW.
    power = np.where(is_ev, rng.choice([3.3, 3.5, 6.6, 7.0], n, p=[0.1, 0.1, 0.35, 0.45]) * rng.uniform(0.92, 1.0, n),
                     0.0)
    # A session tops up a few days' driving: 6-24 kWh, 1-4 h at the charger's power; 2-5 nights a week.
    session_kwh = np.where(is_ev, rng.uniform(8.0, 20.0, n), 0.0)
    night_prob = np.where(is_ev, rng.uniform(0.3, 0.7, n), 0.0)
    season_amp = params[:, 6] * rng.uniform(0.5, 1.5, n)

    names = np.array(ARCHETYPES, dtype=object)[arch]
    occupied = np.isin(names, _OCCUPIED)
    # Mixtures: every occupied home carries a secondary pattern (0-20%); a minority is genuinely
    # ambiguous (25-45%). Shops get a little flat load (refrigeration); vacant premises none.
    secondary = np.full(n, _ARCH["flat"], dtype=np.int8)
    sec_pick = rng.integers(0, len(_SECONDARY) - 1, n)
    for a in _OCCUPIED:
        sel = names == a
        own = "evening_peak" if a in ("ev_night", "electric_heating") else a
        options = [s for s in _SECONDARY if s != own]
        secondary[sel] = np.array([_ARCH[s] for s in options])[sec_pick[sel] % len(options)]
    ambiguous = rng.random(n) < ambiguous_share
    weight = np.where(ambiguous, rng.uniform(0.25, 0.45, n), rng.uniform(0.0, 0.2, n))
    secondary_w = np.where(occupied, weight, np.where(is_comm, rng.uniform(0.0, 0.15, n), 0.0))

    # Appliance bursts (shower, oven, heater, kettle batches): up to 20% of the household's energy; a
    # quarter of homes have no such appliance. Each home's big appliance draws 3-9 kW, mostly nearer 3.
    burst_rate = np.where(occupied & (rng.random(n) >= 0.25),
                          np.minimum(rng.uniform(0.2, 1.2, n), 0.2 * household / _BURST_MEAN_KWH), 0.0)
    burst_kw = _BURST_KW[0] + (_BURST_KW[1] - _BURST_KW[0]) * rng.random(n) ** 2

    is_heat = arch == _ARCH["electric_heating"]
    storage = rng.random(n) < 0.25
    heat_kind = np.where(is_heat, np.where(storage, 2, 1), 0).astype(np.int8)
    heat_base = np.where(is_heat, np.where(storage, rng.uniform(3.0, 6.0, n), rng.uniform(1.5, 4.0, n)), 0.0)
    per_hdd = np.where(is_heat, rng.uniform(1.2, 2.5, n), 0.0)
    # Direct heating doubles as air conditioning in summer; storage heaters do not cool.
    per_cdd = np.where(is_heat & ~storage, rng.uniform(1.0, 2.0, n), 0.0)
    # Direct heating / air conditioning runs from the evening until people get up; storage on the valley tariff.
    heat_start = np.where(storage, rng.uniform(22.75, 23.25, n), rng.uniform(17.5, 19.5, n))
    heat_hours = np.where(storage, rng.uniform(6.5, 8.0, n), rng.uniform(10.0, 12.5, n))

    pop = Population(meter_ids, arch, meters, household, household.copy(), shift, base_f, amp,
                     params[:, 4], params[:, 5], season_amp, power, session_kwh, night_prob,
                     secondary, secondary_w, burst_rate, burst_kw, heat_kind, heat_base, per_hdd, per_cdd,
                     np.where(is_heat, heat_start, 0.0), np.where(is_heat, heat_hours, 0.0))
    pop.mean_daily_kwh = household + pop.ev_kwh_per_day() + pop.heat_kwh(weather.hdd, weather.cdd).mean(axis=1)
    return pop


# ------------------------------------------------------------------ fault plan

_CODE = {name: i for i, name in enumerate(FAULT_CODES)}


@dataclass
class FaultPlan:
    """Planted faults of known meters, one entry per affected interval, sorted by interval."""

    meter: np.ndarray  # int64 meter index
    slot: np.ndarray  # int64 interval index in the window
    code: np.ndarray  # int8 index into FAULT_CODES
    spike_add_kwh: np.ndarray  # kWh added to a spiked reading (0 elsewhere)


def _plan_faults(rates: FaultRates, n_known: int, total_slots: int, mean_interval_kwh: np.ndarray,
                 charger_interval_kwh: np.ndarray, seed: int, interval_hours: float = 0.25) -> FaultPlan:
    """Place every fault of the known meters on distinct, non-adjacent-to-gap intervals.

    A spike adds 20-60x the meter's mean interval kWh, at least 5 kWh, at least
    4x what its EV charger can draw in one interval and at least twice what the
    largest appliance burst (9 kW) draws in one, so it stands out even on meters
    whose normal peak is high and is never mistaken for a real burst.
    """
    rng = _rng(seed, "faults")
    n_slots = total_slots
    used = np.zeros((n_known, n_slots), dtype=bool)
    gaps: list[tuple[int, int, int, int]] = []  # meter, start, length, code

    def fits(m: int, s: int, length: int) -> bool:
        # The gap and both neighbours must be free: gaps never touch other faults.
        return not used[m, s - 1 : s + length + 1].any()

    # A gap [s, s+L) needs a normal reading on each side, so 1 <= s and s+L <= n_slots-1.
    max_long = min(96, n_slots - 2)
    n_long = _round_half_up(rates.long_gap_meter_share * n_known)
    if max_long >= 8 and n_long:
        for m in np.sort(rng.choice(n_known, size=n_long, replace=False)):
            length = int(rng.integers(8, max_long + 1))
            s = int(rng.integers(1, n_slots - length))
            used[m, s : s + length] = True
            gaps.append((int(m), s, length, _CODE["long_gap"]))
    n_short = _round_half_up(rates.short_gap_meter_share * n_known)
    if n_slots >= 3 and n_short and rates.short_gaps_per_meter:
        for m in np.sort(rng.choice(n_known, size=n_short, replace=False)):
            for _ in range(rates.short_gaps_per_meter):
                for _attempt in range(30):  # a crowded meter may get fewer gaps; truth records what was planted
                    length = int(rng.integers(1, min(4, n_slots - 2) + 1))
                    s = int(rng.integers(1, n_slots - length))
                    if fits(int(m), s, length):
                        used[m, s : s + length] = True
                        gaps.append((int(m), s, length, _CODE["short_gap"]))
                        break

    # Point faults: distinct intervals, not in or next to a gap, not the window's first/last.
    blocked = used.copy()
    blocked[:, 1:] |= used[:, :-1]
    blocked[:, :-1] |= used[:, 1:]
    blocked[:, 0] = blocked[:, -1] = True
    kinds = [("duplicate", rates.duplicate_reading_share), ("spike", rates.spike_reading_share),
             ("negative", rates.negative_reading_share), ("null_value", rates.null_reading_share)]
    counts = [_round_half_up(share * n_known * n_slots) for _, share in kinds]
    flat_blocked = blocked.ravel()
    free = int(flat_blocked.size - flat_blocked.sum())
    wanted = min(sum(counts), free)
    if wanted > 0.2 * free:
        chosen = rng.choice(np.flatnonzero(~flat_blocked), size=wanted, replace=False)
    else:
        chosen = np.empty(0, dtype=np.int64)
        while len(chosen) < wanted:
            cand = rng.integers(0, flat_blocked.size, size=2 * (wanted - len(chosen)) + 16)
            both = np.concatenate([chosen, cand[~flat_blocked[cand]]])
            _, first = np.unique(both, return_index=True)
            chosen = both[np.sort(first)][:wanted]  # first occurrences, in draw order
    codes = np.repeat([_CODE[k] for k, _ in kinds], counts)[:wanted].astype(np.int8)

    g = np.array(gaps, dtype=np.int64).reshape(-1, 4)
    lengths = g[:, 2]
    gap_meter = np.repeat(g[:, 0], lengths)
    gap_slot = np.repeat(g[:, 1], lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    gap_code = np.repeat(g[:, 3], lengths).astype(np.int8)

    point_meter, point_slot = np.divmod(chosen.astype(np.int64), n_slots)
    spike_add = np.zeros(len(chosen))
    is_spike = codes == _CODE["spike"]
    factor = rng.uniform(20.0, 60.0, is_spike.sum())
    spike_add[is_spike] = np.maximum.reduce([
        factor * mean_interval_kwh[point_meter[is_spike]],
        rng.uniform(5.0, 8.0, is_spike.sum()),
        rng.uniform(4.0, 8.0, is_spike.sum()) * charger_interval_kwh[point_meter[is_spike]],
        # Twice to three times what the largest appliance burst draws in one interval.
        rng.uniform(2.0, 3.0, is_spike.sum()) * _BURST_KW[1] * interval_hours,
    ])

    meter = np.concatenate([gap_meter, point_meter])
    slot = np.concatenate([gap_slot, point_slot])
    order = np.lexsort((meter, slot))
    return FaultPlan(meter[order], slot[order], np.concatenate([gap_code, codes])[order],
                     np.concatenate([np.zeros(len(gap_meter)), spike_add])[order])


# ------------------------------------------------------------------ AMI readings

@dataclass(frozen=True)
class DayPlan:
    """Per (meter, day) habits drawn up front: occupancy shift, level multiplier, odd and away days."""

    shift_slots: np.ndarray  # (n, D) int: the day's load runs this many intervals late (early if < 0)
    level: np.ndarray  # (n, D) multiplicative day level (noise, high days, low days)
    low: np.ndarray  # (n, D) bool: out most of the day (flatter shape)
    away: np.ndarray  # (n, D) bool: away from home (trip, holiday): base load only
    holiday_away: np.ndarray | None = None  # (n, D) bool: of those, away over a holiday period (home shut down)


def _day_plan(pop: Population, grid: TimeGrid, holidays: np.ndarray, seed: int,
              workdays: np.ndarray | None = None) -> DayPlan:
    """Households vary day to day: their routine shifts by up to about 1.5 h, a few days a month are
    unusually high (guests, laundry) or low (out all day), some take a 2-9 day trip, and on public
    holidays some go away for the whole holiday."""
    rng = _rng(seed, "day_plan")
    n, days = pop.n, grid.days
    step_h = grid.interval_minutes / 60.0
    occupied = pop.occupied()
    comm = pop.archetype == _ARCH["commercial_day"]
    sd = np.where(occupied, 0.75, np.where(comm, 0.2, 0.0))
    shift_h = np.clip(rng.normal(0.0, 1.0, (n, days)) * sd[:, None], -1.5, 1.5)
    shift_slots = np.rint(shift_h / step_h).astype(np.int64)
    level = _lognormal_mean1(rng, pop.day_sigma[:, None], (n, days))
    u = rng.random((n, days))
    high = occupied[:, None] & (u < 0.03)
    low = occupied[:, None] & (u >= 0.03) & (u < 0.06)
    level = np.where(high, level * rng.uniform(1.3, 1.8, (n, days)), level)
    level = np.where(low, level * rng.uniform(0.4, 0.65, (n, days)), level)

    away = np.zeros((n, days), dtype=bool)
    trip = occupied & (rng.random(n) < 0.15)
    trip_len = rng.integers(2, 10, n)
    trip_start = rng.integers(-8, max(days, 1), n)
    col = np.arange(days)[None, :]
    away |= trip[:, None] & (col >= trip_start[:, None]) & (col < (trip_start + trip_len)[:, None])
    # A holiday period: consecutive days off (holidays and the weekends next to them) holding a holiday.
    # (the period rule of gridpersona.config.holidays.holiday_period_dates; a make-up working day is not off)
    off = holidays | (np.array([d.weekday() >= 5 for d in grid.dates], dtype=bool)
                      & ~(workdays if workdays is not None else np.zeros(days, dtype=bool)))
    run_id = np.cumsum(np.concatenate([[1], ~off[:-1] | ~off[1:]])) if days else np.zeros(0, int)
    holiday_away = np.zeros((n, days), dtype=bool)
    for rid in np.unique(run_id[holidays]) if holidays.any() else []:
        period = off & (run_id == rid)
        if period.sum() >= 2:
            goes = occupied & (rng.random(n) < 0.15)
            holiday_away |= goes[:, None] & period[None, :]
    away |= holiday_away
    return DayPlan(shift_slots, level, low & ~away, away, holiday_away)


def _block_energy(step_h: float, n_slots: int, prev_len_h: float, power_prev, start_prev, hours_prev,
                  power_cur, start_cur, hours_cur) -> np.ndarray:
    """(m, n_slots) kWh of constant-power blocks: the one that began the evening before (``start_prev``
    in the previous day's hours, spilling past midnight) and the one beginning on this day."""
    t0 = step_h * np.arange(n_slots)[None, :]
    t1 = t0 + step_h

    def overlap(begin, end):
        return np.clip(np.minimum(t1, end[:, None]) - np.maximum(t0, begin[:, None]), 0.0, None)

    s_prev = start_prev - prev_len_h
    return (power_prev[:, None] * overlap(s_prev, s_prev + hours_prev)
            + power_cur[:, None] * overlap(start_cur, start_cur + hours_cur))


def _ami_batches(pop: Population, grid: TimeGrid, plan: FaultPlan, seed: int, counter: dict[str, int],
                 progress: Callable[[str], None] | None, shock: BillShock | None = None,
                 weather: Weather | None = None, holidays: np.ndarray | None = None,
                 periods: PeriodTotals | None = None,
                 anomalies: AnomalyPlan | None = None, workdays: np.ndarray | None = None
                 ) -> Iterator[pa.RecordBatch]:
    """One record batch per local day: every meter's readings with the planned faults applied
    (and the household load of bill-shock meters raised from their first surge day on, and the planted
    abnormal-use cases of ``anomalies`` applied on their days).

    ``periods``, if given, receives each day's fault-free kWh per meter and tariff period (the truth the
    rate advisor is checked against)."""
    schema = arrow_schema(BRONZE["bronze.ami_interval"])
    names = pop.arch_names()
    groups = {a: np.flatnonzero(names == a) for a in ARCHETYPES}
    nominal = 1440 // grid.interval_minutes
    step_h = grid.interval_minutes / 60.0
    weather = weather if weather is not None else _weather(grid.dates, seed)
    holidays = holidays if holidays is not None else np.zeros(grid.days, dtype=bool)
    week_level = np.array([_WEEK_LEVEL.get(a, _WEEK_LEVEL_RESIDENTIAL) for a in ARCHETYPES])[pop.archetype]
    workdays = workdays if workdays is not None else np.zeros(grid.days, dtype=bool)
    days_plan = _day_plan(pop, grid, holidays, seed, workdays)
    # Bursts are part of the household's energy: the smooth load carries the rest.
    smooth_kwh = pop.household_kwh - pop.burst_rate * _BURST_MEAN_KWH
    rows = np.arange(pop.n)[:, None]

    # Night-time blocks: column k is the block that starts on the evening of day k-1 (k = 0 .. D).
    ev = groups["ev_night"]
    ev_rng = _rng(seed, "ev_nights")
    shape_n = (len(ev), grid.days + 1)
    evening = np.concatenate([[0], np.arange(grid.days)])  # the day each column's evening belongs to
    ev_on = (ev_rng.random(shape_n) < pop.ev_night_prob[ev][:, None]) & ~days_plan.away[ev][:, evening]
    # Plugged in after the evening at home, 21:30-01:00 (the valley tariff starts at 23:00).
    ev_start = 21.5 + 0.25 * ev_rng.integers(0, 15, shape_n)
    ev_power = pop.ev_power_kw[ev][:, None] * ev_rng.uniform(0.97, 1.03, shape_n)
    session = pop.ev_session_kwh[ev][:, None] * ev_rng.uniform(0.6, 1.4, shape_n)
    ev_dur = np.clip(session / np.maximum(ev_power, 1e-9), 1.0, 4.0)
    ev_power = np.where(ev_on, ev_power, 0.0)

    heat = np.flatnonzero(pop.heat_kind > 0)
    heat_rng = _rng(seed, "heating")
    shape_h = (len(heat), grid.days + 1)
    heat_energy = (pop.heat_kwh(weather.hdd, weather.cdd)[heat][:, evening]
                   * _lognormal_mean1(heat_rng, 0.12, shape_h))
    heat_energy = np.where(days_plan.away[heat][:, evening], 0.3 * heat_energy, heat_energy)
    heat_energy = np.where(days_plan.holiday_away[heat][:, evening], 0.0, heat_energy)
    direct = (pop.heat_kind[heat] == 1)[:, None]
    heat_start = pop.heat_start_h[heat][:, None] + np.where(direct, heat_rng.uniform(-0.5, 0.5, shape_h), 0.0)
    heat_hours = np.broadcast_to(pop.heat_hours[heat][:, None], shape_h)
    heat_power = heat_energy / heat_hours

    shape_cache: dict[tuple[bytes, bool], np.ndarray] = {}
    bounds = np.searchsorted(plan.slot, grid.offsets)
    report_every = max(1, grid.days // 10)
    for d in range(grid.days):
        n = grid.n_slots(d)
        # A holiday is lived like a Sunday; a make-up working day (a Saturday or Sunday) like a weekday.
        weekend = (grid.dates[d].weekday() >= 5 and not workdays[d]) or bool(holidays[d])
        mid_h = grid.wall_hours[d] + step_h / 2.0
        main, switched = (anomalies.main_codes(pop.archetype, d) if anomalies is not None
                          else (pop.archetype, 0))
        # Pattern changes only ever add meters as days go on: their count names the set.
        key = (mid_h.tobytes(), weekend, switched)
        shape = shape_cache.get(key)
        if shape is None:
            parts = {}
            for role, codes in (("main", main), ("second", pop.secondary)):
                part = np.empty((pop.n, n))
                for code, arch in enumerate(ARCHETYPES):
                    idx = np.flatnonzero(codes == code)
                    if len(idx):
                        h = mid_h[None, :] - pop.shift_h[idx, None]
                        base, var = _shape_parts(arch, h, weekend)
                        part[idx] = base * pop.base_f[idx, None] + pop.amp[idx, None] * var
                parts[role] = part / part.sum(axis=1, keepdims=True)
            w = pop.secondary_w[:, None]
            shape = (1.0 - w) * parts["main"] + w * parts["second"]
            shape *= n / nominal  # a 23 h day holds 23/24 of a day's energy
            shape_cache[key] = shape

        rng = _rng(seed, "ami_day", d)
        # Today's routine runs shift_slots intervals late (a rotation of the day's shape).
        shift = days_plan.shift_slots[:, d]
        shape = shape[rows, (np.arange(n)[None, :] - shift[:, None]) % n]
        low, away = days_plan.low[:, d], days_plan.away[:, d]
        flat = 1.0 / nominal
        for sel, keep in ((np.flatnonzero(low), 0.5), (np.flatnonzero(away), 0.15)):
            shape[sel] = keep * shape[sel] + (1.0 - keep) * flat

        kwh = smooth_kwh
        if shock is not None:
            kwh = kwh + pop.household_kwh * np.where(d >= shock.first_day, shock.factor - 1.0, 0.0)
        season = 1.0 + pop.season_amp * (weather.factor[d] - 1.0)
        level = kwh * week_level[:, 1 if weekend else 0] * season * days_plan.level[:, d]
        # Away: the fridge and standby only (0.6-1.0 kWh a day plus 10-25% of the usual load).
        # Away over a holiday: the home is shut down, the fridge and standby only (0.6-1.0 kWh), near-zero
        # like a vacant premise, which is what the pipeline's holiday rule is there for.
        standby = pop.household_kwh * rng.uniform(0.1, 0.25, pop.n)
        fridge = rng.uniform(0.6, 1.0, pop.n)
        level = np.where(days_plan.holiday_away[:, d], fridge, np.where(away, standby + fridge, level))
        values = level[:, None] * shape * _lognormal_mean1(rng, pop.int_sigma[:, None], (pop.n, n))

        # Appliance bursts on ordinary days at home: 3-9 kW for 15 min to 2 h, mornings and evenings.
        count = rng.poisson(np.where(away, 0.0, pop.burst_rate))
        who = np.repeat(np.arange(pop.n), count)
        if len(who):
            b_kw = np.maximum(_BURST_KW[0], pop.burst_kw[who] * rng.uniform(0.75, 1.0, len(who)))
            b_h = np.clip(rng.uniform(*_BURST_KWH, len(who)) / b_kw, *_BURST_HOURS)
            evening_burst = rng.random(len(who)) < 0.6
            b_start = np.where(evening_burst, rng.normal(19.5, 1.5, len(who)), rng.normal(7.5, 1.0, len(who)))
            b_start = np.clip(b_start + pop.shift_h[who] + shift[who] * step_h, 0.0, 24.0 - b_h)
            t0 = step_h * np.arange(n)[None, :]
            burst = b_kw[:, None] * np.clip(np.minimum(t0 + step_h, (b_start + b_h)[:, None])
                                            - np.maximum(t0, b_start[:, None]), 0.0, None)
            owners, first = np.unique(who, return_index=True)  # ``who`` is sorted: sum each home's bursts
            values[owners] += np.add.reduceat(burst, first, axis=0)
        if len(ev):
            values[ev] += _block_energy(step_h, n, grid.prev_day_hours[d], ev_power[:, d], ev_start[:, d], ev_dur[:, d],
                                        ev_power[:, d + 1], ev_start[:, d + 1], ev_dur[:, d + 1])
        if len(heat):
            block = _block_energy(step_h, n, grid.prev_day_hours[d], heat_power[:, d], heat_start[:, d],
                                  heat_hours[:, d], heat_power[:, d + 1], heat_start[:, d + 1], heat_hours[:, d + 1])
            # Thermostats and compressors cycle: the block is not a flat line.
            values[heat] += block * _lognormal_mean1(rng, 0.2, block.shape)
        values = np.round(values, 3)
        if anomalies is not None:
            values = anomalies.apply_level(d, values)
        if periods is not None:
            periods.add(d, grid.wall_hours[d], values)
        if anomalies is not None:  # after the period totals: a reversed CT does not change what was used
            values = anomalies.apply_reverse(d, values)

        # Faults of this day.
        lo, hi = bounds[d], bounds[d + 1]
        f_meter, f_slot = plan.meter[lo:hi], plan.slot[lo:hi] - grid.offsets[d]
        f_code, f_add = plan.code[lo:hi], plan.spike_add_kwh[lo:hi]
        keep = np.ones((pop.n, n), dtype=bool)
        null = np.zeros((pop.n, n), dtype=bool)
        gap = (f_code == _CODE["short_gap"]) | (f_code == _CODE["long_gap"])
        keep[f_meter[gap], f_slot[gap]] = False
        sel = f_code == _CODE["spike"]
        values[f_meter[sel], f_slot[sel]] = np.round(values[f_meter[sel], f_slot[sel]] + f_add[sel], 3)
        sel = f_code == _CODE["negative"]
        values[f_meter[sel], f_slot[sel]] = np.round(-np.abs(values[f_meter[sel], f_slot[sel]]) - 0.01, 3)
        sel = f_code == _CODE["null_value"]
        null[f_meter[sel], f_slot[sel]] = True
        dup = f_code == _CODE["duplicate"]

        flat = np.flatnonzero(keep.ravel())
        row_meter = np.concatenate([flat // n, f_meter[dup]])
        row_slot = np.concatenate([flat % n, f_slot[dup]])
        kwh = np.concatenate([values.ravel()[flat], values[f_meter[dup], f_slot[dup]]])
        kwh_null = np.concatenate([null.ravel()[flat], np.zeros(int(dup.sum()), dtype=bool)])
        ts = grid.slot_ts_us(d)[row_slot]
        day_num = (grid.dates[d] - dt.date(1970, 1, 1)).days
        batch = pa.RecordBatch.from_arrays([
            pop.meter_ids.take(pa.array(row_meter.astype(np.int32))),
            pa.array(ts, type=pa.timestamp("us", tz="UTC")),
            pa.array(kwh, type=pa.float64(), mask=kwh_null),
            pa.array(np.full(len(ts), day_num, dtype=np.int32), type=pa.date32()),
        ], schema=schema)
        counter["bronze.ami_interval"] = counter.get("bronze.ami_interval", 0) + batch.num_rows
        if progress and ((d + 1) % report_every == 0 or d + 1 == grid.days):
            progress(f"bronze.ami_interval: {d + 1}/{grid.days} days")
        yield batch


@dataclass
class PeriodTotals:
    """Fault-free kWh per meter, calendar month of the window and tariff period (peak, flat, valley)."""

    period_of_minute: np.ndarray  # (1440,) 0 peak, 1 flat, 2 valley: the period holding each wall-clock minute
    month_of_day: np.ndarray  # (days,) index into ``months``
    months: list[dt.date]
    kwh: np.ndarray  # (meters, len(months), 3)
    # What the lake finally holds of day d, per meter (the past cycle's planted kWh effect, nothing after a
    # closure): the readings are added times it. None: all of it.
    day_factor: Callable[[int], np.ndarray] | None = None

    @classmethod
    def for_grid(cls, tariff: TariffConfig, grid: TimeGrid, meters: int) -> "PeriodTotals":
        period = np.full(1440, -1, dtype=np.int64)
        for p, name in enumerate(PRICE_PERIODS):
            for text in getattr(tariff, name):
                period[range_minutes(text)] = p
        months = sorted({d.replace(day=1) for d in grid.dates})
        month_of_day = np.array([months.index(d.replace(day=1)) for d in grid.dates])
        return cls(period, month_of_day, months, np.zeros((meters, len(months), 3)))

    def add(self, d: int, slot_start_hours: np.ndarray, values: np.ndarray) -> None:
        """Add day ``d``'s readings (meters x slots), each slot to the period of its first wall-clock minute."""
        per = self.period_of_minute[np.round(slot_start_hours * 60).astype(np.int64) % 1440]
        if self.day_factor is not None:
            values = values * self.day_factor(d)[:, None]
        for p in range(3):
            self.kwh[:, self.month_of_day[d], p] += values[:, per == p].sum(axis=1)

    def shares(self) -> np.ndarray:
        """(meters, 3): each meter's share of the window's kWh per period (equal thirds for a meter without any)."""
        total = self.kwh.sum(axis=1)
        whole = total.sum(axis=1, keepdims=True)
        return np.where(whole > 0, total / np.where(whole > 0, whole, 1.0), 1.0 / 3.0)


def _truth_faults(pop: Population, grid: TimeGrid, plan: FaultPlan) -> pa.Table:
    ts_all = grid.all_ts_us()
    n_unknown = pop.n - pop.n_known
    unknown_meter = np.repeat(np.arange(pop.n_known, pop.n), grid.total_slots)
    unknown_slot = np.tile(np.arange(grid.total_slots), n_unknown)
    meter = np.concatenate([plan.meter, unknown_meter])
    slot = np.concatenate([plan.slot, unknown_slot])
    code = np.concatenate([plan.code, np.full(len(unknown_meter), _CODE["unknown_meter"], dtype=np.int8)])
    order = np.lexsort((slot, meter))
    return pa.Table.from_arrays([
        pop.meter_ids.take(pa.array(meter[order].astype(np.int32))),
        pa.array(ts_all[slot[order]], type=pa.timestamp("us", tz="UTC")),
        pa.array(FAULT_CODES, pa.string()).take(pa.array(code[order].astype(np.int32))),
    ], schema=arrow_schema(TRUTH["truth.faults"]))


# ------------------------------------------------------------------ customers

_SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹")
_GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
          "秀英", "华", "平", "建华", "志强", "桂英", "玉兰", "海燕", "晓东", "子涵", "浩然", "雨轩", "欣怡"]
_SHOP_PREFIX = ["华联", "鑫达", "百润", "金穗", "东方", "恒泰", "佳和", "长宁", "新世纪", "永兴"]
_SHOP_KIND = ["便利店", "超市", "餐厅", "药房", "贸易有限公司", "科技有限公司", "洗衣店", "面馆", "诊所", "物业服务中心"]
_REGIONS = ("SA01", "SA02", "SA03", "SA04")
_REGION_WEIGHTS = (0.35, 0.30, 0.20, 0.15)
_DISTRICT = {"SA01": "浦东新区", "SA02": "闵行区", "SA03": "徐汇区", "SA04": "嘉定区"}
_ROADS = ["张杨路", "世纪大道", "莲花路", "虹梅路", "漕溪北路", "沪太路", "博乐路", "金桥路", "龙华西路", "春申路"]
_AGE_BANDS = ("18-34", "35-49", "50-64", "65+")
_PRODUCTS = ("tou", "green_power", "smart_home", "ev_charger")
_ONLINE, _OFFLINE, _AUTO = ("app", "wechat", "alipay"), ("bank_counter", "service_hall"), ("auto_debit",)
_PAY_FAMILIES = {"online": _ONLINE, "offline": _OFFLINE, "auto_debit": _AUTO}


@dataclass
class Customers:
    """Known meters' customers (row i owns meter i) and their planted behaviour."""

    customer_id: list[str]
    region: np.ndarray
    commercial: np.ndarray
    age_band: np.ndarray  # object, None for commercial
    tariff_type: np.ndarray
    products: list[set[str]]
    do_not_contact: np.ndarray
    vip: np.ndarray
    credit: np.ndarray  # good / medium / poor
    pay_pref: np.ndarray  # online / offline / auto_debit
    interaction_pref: np.ndarray  # app / hotline / service_hall
    table: pa.Table


def _pick(rng: np.random.Generator, options, probs: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw: probs is (n, k), rows summing to 1."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None]
    idx = np.minimum((u > cum).sum(axis=1), len(options) - 1)
    return np.array(options, dtype=object)[idx]


def _customers(pop: Population, seed: int, open_before: dt.date, null_share: float = 0.0) -> Customers:
    rng = _rng(seed, "customers")
    n = pop.n_known
    arch = pop.arch_names()[:n]
    kwh = pop.mean_daily_kwh[:n]
    commercial = arch == "commercial_day"
    ev = arch == "ev_night"
    vacant = arch == "vacant"
    res_rank = np.zeros(n)
    if (~commercial).any():
        res_kwh = kwh[~commercial]
        res_rank[~commercial] = np.argsort(np.argsort(res_kwh)) / max(1, len(res_kwh) - 1)
    big = res_rank >= 0.9

    customer_id = [f"C{20_001 + i:08d}" for i in range(n)]
    region = np.array(_REGIONS, dtype=object)[rng.choice(len(_REGIONS), n, p=_REGION_WEIGHTS)]
    age_p = np.tile([0.25, 0.32, 0.26, 0.17], (n, 1))
    age_p[vacant] = [0.10, 0.25, 0.35, 0.30]
    age_band = _pick(rng, _AGE_BANDS, age_p)
    age_band[commercial] = None
    old = (age_band == "65+") | (age_band == "50-64")
    size = np.clip(np.round(1.0 + pop.household_kwh[:n] / 6.0 + rng.normal(0, 0.9, n)), 1, 6).astype(int)
    size[vacant] = rng.integers(1, 3, vacant.sum())
    housing = _pick(rng, ("apartment", "house", "villa"),
                    np.where(big[:, None], [0.45, 0.30, 0.25], [0.74, 0.23, 0.03]))
    housing[commercial] = np.where(rng.random(commercial.sum()) < 0.6, "shop", "office")

    # Contracted capacity from the expected peak demand, rounded up to standard sizes.
    heat_kw = np.where(pop.heat_hours[:n] > 0, pop.heat_kwh(12.0, 6.0)[:n, 0] / np.maximum(pop.heat_hours[:n], 1.0), 0.0)
    peak_kw = np.where(commercial, kwh / 24.0 * 2.5,
                       pop.household_kwh[:n] / 24.0 * 8.0 + pop.ev_power_kw[:n] + heat_kw
                       # A home with a big appliance (shower, oven) sizes its supply for it.
                       + np.where(pop.burst_rate[:n] > 0, pop.burst_kw[:n], 0.0))
    res_sizes = np.array([4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0])
    com_sizes = np.array([20.0, 30.0, 50.0, 63.0, 80.0, 100.0, 125.0, 160.0, 200.0, 250.0, 315.0])
    kva = np.where(commercial,
                   com_sizes[np.minimum(np.searchsorted(com_sizes, peak_kw * 1.3), len(com_sizes) - 1)],
                   res_sizes[np.minimum(np.searchsorted(res_sizes, peak_kw * 1.3), len(res_sizes) - 1)])

    p_tou = np.where(ev, 0.40, np.where(commercial, 0.50, np.where(arch == "electric_heating", 0.30, 0.10)))
    p_green = np.where(commercial, 0.15, np.where(big, 0.10, 0.04))
    p_smart = np.where(commercial, 0.02, np.where(old, 0.03, 0.10))
    p_charger = np.where(ev, 0.65, 0.0)
    held = np.stack([rng.random(n) < p for p in (p_tou, p_green, p_smart, p_charger)], axis=1)
    products = [{_PRODUCTS[k] for k in np.flatnonzero(row)} for row in held]
    products_held = [";".join(p for p in _PRODUCTS if p in s) or None for s in products]
    tariff = np.where(held[:, 0], "tou", np.where(commercial, "flat_rate",
                                                  np.where(rng.random(n) < 0.55, "tiered", "flat_rate"))).astype(object)

    dnc = rng.random(n) < 0.05
    vip = rng.random(n) < np.where(commercial, 0.12, np.where(big, 0.06, 0.012))
    span = (open_before - dt.date(2003, 1, 1)).days
    opened = np.datetime64("2003-01-01") + rng.integers(0, max(span, 1), n).astype("timedelta64[D]")

    surname = np.array(_SURNAMES, dtype=object)[rng.integers(0, len(_SURNAMES), n)]
    given = np.array(_GIVEN, dtype=object)[rng.integers(0, len(_GIVEN), n)]
    shop = (np.array(_SHOP_PREFIX, dtype=object)[rng.integers(0, len(_SHOP_PREFIX), n)]
            + np.array(_SHOP_KIND, dtype=object)[rng.integers(0, len(_SHOP_KIND), n)])
    name = np.where(commercial, shop, surname + given)
    phone = [f"13{k:09d}" for k in rng.integers(0, 1_000_000_000, n)]
    road = np.array(_ROADS, dtype=object)[rng.integers(0, len(_ROADS), n)]
    lane, bldg, room = rng.integers(1, 999, n), rng.integers(1, 40, n), rng.integers(101, 2303, n)
    address = [
        f"上海市{_DISTRICT[r]}{rd}{ln}号" if h in ("house", "villa", "shop", "office")
        else f"上海市{_DISTRICT[r]}{rd}{ln}弄{b}号{rm}室"
        for r, rd, ln, b, rm, h in zip(region, road, lane, bldg, room, housing)
    ]

    credit = _pick(rng, ("good", "medium", "poor"), np.tile([0.75, 0.18, 0.07], (n, 1)))
    pay_p = np.where(old[:, None], [0.38, 0.40, 0.22], [0.65, 0.16, 0.19])
    pay_p[commercial] = [0.45, 0.20, 0.35]
    pay_pref = _pick(rng, ("online", "offline", "auto_debit"), pay_p)
    int_p = np.where(old[:, None], [0.25, 0.45, 0.30], [0.58, 0.29, 0.13])
    interaction_pref = _pick(rng, ("app", "hotline", "service_hall"), int_p)

    table = pa.Table.from_pydict({
        "customer_id": customer_id,
        "meter_id": pop.meter_ids.slice(0, n),
        "customer_name": name.tolist(),
        "phone": phone,
        "address": address,
        "region": region.tolist(),
        "customer_type": np.where(commercial, "commercial", "residential").tolist(),
        "tariff_type": tariff.tolist(),
        "age_band": age_band.tolist(),
        "household_size": [None if c else int(s) for c, s in zip(commercial, size)],
        "housing_type": housing.tolist(),
        "contracted_capacity_kva": kva,
        "products_held": products_held,
        "do_not_contact": dnc,
        "vip": vip,
        "account_open_date": opened,
        # Closures are planted with the past cycle's outcomes (_outcome_plan), after the archive is drawn.
        "account_close_date": pa.nulls(len(customer_id), pa.date32()),
    }, schema=arrow_schema(BRONZE["bronze.customer_archive"]))
    table = _blank_attributes(table, null_share, seed)
    return Customers(customer_id, region, commercial, age_band, tariff, products, dnc, vip, credit,
                     pay_pref, interaction_pref, table)


# Optional archive attributes a real archive may lack for some customers (products_held stays: its
# null already means "holds none").
ARCHIVE_OPTIONAL_ATTRIBUTES = ("tariff_type", "age_band", "household_size", "housing_type", "contracted_capacity_kva",
                               "do_not_contact", "vip", "account_open_date")


def _blank_attributes(table: pa.Table, share: float, seed: int) -> pa.Table:
    """Null each optional attribute for ``share`` of the customers (drawn per attribute, own stream):
    unknowns exist in real archives. The planted behaviour (truth) does not change."""
    if share <= 0 or table.num_rows == 0:
        return table
    rng = _rng(seed, "archive_nulls")
    for name in ARCHIVE_OPTIONAL_ATTRIBUTES:
        blank = rng.random(table.num_rows) < share
        i = table.schema.get_field_index(name)
        col = table.column(i).combine_chunks()
        table = table.set_column(i, table.schema.field(i), pc.if_else(pa.array(blank), pa.nulls(len(col), col.type), col))
    return table


def _cap_per_row(flags: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Keep at most caps[i] True values of each row of a (n, k) boolean matrix (the first ones)."""
    return flags & (np.cumsum(flags, axis=1) <= caps[:, None])


def _cap_per_group(flags: np.ndarray, group: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Keep at most caps[g] True values per group (rows sorted by group)."""
    cs = np.cumsum(flags)
    starts = np.searchsorted(group, group, side="left")
    before = np.where(starts > 0, cs[np.maximum(starts - 1, 0)], 0)
    return flags & (cs - before <= caps[group])


# ------------------------------------------------------------------ billing

PRICE_PERIODS = ("peak", "flat", "valley")


def _bill_amounts(kwh: np.ndarray, cust: Customers, tariff: TariffConfig, period_shares: np.ndarray) -> np.ndarray:
    """(customers, months) bills in CNY: each customer's monthly kWh priced on their plan (archive
    customer type and true tariff type through ``tariff.current_plan``; an unmapped pair: the first plan of
    the type). A time-of-use plan splits the month's kWh by the customer's ``period_shares`` (customers x 3)."""
    from gridpersona.transform.pricing import current_plan_id

    ctype = np.where(cust.commercial, "commercial", "residential")
    plan_of = np.array([current_plan_id(tariff, c, t)
                        or next((p.id for p in tariff.plans if c in p.customer_types), "")
                        for c, t in zip(ctype, cust.tariff_type)], dtype=object)
    amount = np.zeros_like(kwh)
    for plan in tariff.plans:
        rows = plan_of == plan.id
        if not rows.any():
            continue
        k = kwh[rows]
        if plan.kind == "flat":
            amount[rows] = k * float(plan.price)
        elif plan.kind == "tou":
            rate = period_shares[rows] @ np.array([float(plan.prices[p]) for p in PRICE_PERIODS])
            amount[rows] = k * rate[:, None]
        else:
            charge, lower = np.zeros_like(k), 0.0
            for block in plan.blocks:
                upper = np.inf if block.up_to_kwh is None else float(block.up_to_kwh)
                charge += np.clip(np.minimum(k, upper) - lower, 0, None) * float(block.price)
                lower = upper
            amount[rows] = charge
    return np.round(amount, 2)


def _bill_growth(month_starts: list[dt.date], window_start: dt.date, annual_growth: float) -> np.ndarray:
    """(months,) consumption level of each bill month relative to the AMI window: (1 + g) ** -(years from
    the month's middle to the window's first day), 1 for a month ending on or after that day."""
    years = np.array([max(0.0, (window_start - (m + dt.timedelta(days=calendar.monthrange(m.year, m.month)[1] / 2))
                                ).days / 365.25)
                      if (m + dt.timedelta(days=calendar.monthrange(m.year, m.month)[1] - 1)) < window_start else 0.0
                      for m in month_starts])
    return (1.0 + annual_growth) ** -years


def _billing(pop: Population, cust: Customers, seed: int, months: int, weather: Weather, snapshot: dt.date,
             tariff: TariffConfig, period_shares: np.ndarray, window_start: dt.date | None = None,
             annual_growth: float = 0.0) -> pa.Table:
    """Monthly bills and payments; see the module docstring for the months covered. Prices come from
    ``tariff`` (:func:`_bill_amounts`). A month's kWh follows its realized daily temperatures
    (``weather``'s span when it covers the month, else the climate) and :func:`_bill_growth`."""
    rng = _rng(seed, "billing")
    n = pop.n_known
    month_starts = _billing_months(snapshot, months)
    dim = np.array([calendar.monthrange(x.year, x.month)[1] for x in month_starts])
    next_month = [(x + dt.timedelta(days=32)).replace(day=1) for x in month_starts]
    due = np.array([x.replace(day=15) for x in next_month], dtype="datetime64[D]")
    issue = np.array([x.replace(day=3) for x in next_month], dtype="datetime64[D]")

    # The month's realized weather (bronze.weather's series) sets the household's seasonal factor
    # (normalized like the AMI window's) and the heating block's size, so bills, readings and weather agree.
    month_days = [[x + dt.timedelta(days=k) for k in range(m)] for x, m in zip(month_starts, dim)]
    covered = weather.span_start is not None and month_starts[0] >= weather.span_start
    month_temp = [weather.temp_on(days) if covered else _climate_at(days) for days in month_days]
    month_season = np.array([_season_factor(t).mean() for t in month_temp]) / weather.norm
    factor = 1.0 + pop.season_amp[:n, None] * (month_season[None, :] - 1.0)
    dd = [_degree_days(t) for t in month_temp]
    heat = np.stack([pop.heat_kwh(h, c)[:n].mean(axis=1) for h, c in dd], axis=1)
    daily = pop.household_kwh[:n, None] * factor + pop.ev_kwh_per_day()[:n, None] + heat
    growth = _bill_growth(month_starts, window_start, annual_growth) if window_start else np.ones(months)
    kwh = np.round(daily * dim[None, :] * growth[None, :] * _lognormal_mean1(rng, 0.06, (n, months)), 1)
    amount = _bill_amounts(kwh, cust, tariff, period_shares)

    # Payment state: 0 on time, 1 late, 2 unpaid. Late bills are never the latest one, so a
    # late payment is always dated on or before the snapshot.
    credit = cust.credit
    unpaid_n = np.where(credit == "poor", rng.choice([0, 1, 2, 3], n, p=[0.3, 0.35, 0.2, 0.15]), 0)
    unpaid_n = np.minimum(unpaid_n, months)
    poor_no_room = (credit == "poor") & (unpaid_n == 0) & (months - 1 < 4)
    unpaid_n[poor_no_room] = 1  # too few months for four late payments: owe instead
    col = np.arange(months)[None, :]
    unpaid = col >= months - unpaid_n[:, None]
    can_be_late = (~unpaid) & (col < months - 1)
    # Late payments are drawn per 12-month block counted back from the newest bill, each block with its
    # credit class's count, so the last 12 months (what credit_rating reads) hold the class's count
    # however long the history is.
    block = (months - 1 - col) // 12
    late = np.zeros((n, months), dtype=bool)
    for b in range(int(block.max()) + 1 if months else 0):
        late_n = np.select(
            [credit == "medium", (credit == "poor") & (unpaid_n == 0), credit == "poor"],
            [rng.integers(1, 4, n), rng.integers(4, 9, n), rng.integers(0, 6, n)], 0)
        in_block = can_be_late & (block == b)
        keys = np.where(in_block, rng.random((n, months)), np.inf)
        rank = np.argsort(np.argsort(keys, axis=1), axis=1)
        late |= (rank < late_n[:, None]) & in_block

    snap = np.datetime64(snapshot, "D")
    window = (due - issue).astype(int)[None, :]
    on_time_paid = issue[None, :] + (rng.random((n, months)) * (window + 1)).astype(int).astype("timedelta64[D]")
    auto = (cust.pay_pref == "auto_debit")[:, None]
    on_time_paid = np.where(auto, due[None, :] - np.timedelta64(5, "D"), on_time_paid)
    late_paid = np.minimum(due[None, :] + rng.integers(3, 46, (n, months)).astype("timedelta64[D]"), snap)
    paid_date = np.where(late, late_paid, on_time_paid)
    partial = unpaid & (rng.random((n, months)) < 0.2)
    paid_amount = np.where(unpaid, np.where(partial, np.round(amount * rng.uniform(0.2, 0.8, (n, months)), 2), 0.0), amount)

    # Channels: the preferred family, except at most 10% of a customer's payments.
    paid = ~unpaid
    off = _cap_per_row((rng.random((n, months)) < 0.06) & paid, np.floor(0.1 * paid.sum(axis=1)).astype(int))
    pref_idx = np.select([cust.pay_pref == "online", cust.pay_pref == "offline"], [0, 1], 2)
    other_idx = (pref_idx[:, None] + rng.integers(1, 3, (n, months))) % 3
    fam_idx = np.where(off, other_idx, pref_idx[:, None])
    favourite = rng.integers(0, 3, n)  # each online payer has a favourite app
    pick = np.where(rng.random((n, months)) < 0.8, favourite[:, None], rng.integers(0, 3, (n, months)))
    channel_table = np.array([list(_ONLINE), [_OFFLINE[0], _OFFLINE[1], _OFFLINE[1]], [_AUTO[0]] * 3], dtype=object)
    channel = channel_table[fam_idx, pick]

    return pa.Table.from_pydict({
        "customer_id": np.repeat(np.array(cust.customer_id, dtype=object), months).tolist(),
        "bill_month": np.tile(np.array(month_starts, dtype="datetime64[D]"), n),
        "bill_kwh": kwh.ravel(),
        "bill_amount_cny": amount.ravel(),
        "due_date": np.tile(due, n),
        "paid_date": pa.array(paid_date.ravel(), type=pa.date32(), mask=unpaid.ravel()),
        "paid_amount_cny": paid_amount.ravel(),
        "payment_channel": pa.array(np.where(unpaid, None, channel).ravel().tolist(), pa.string()),
    }, schema=arrow_schema(BRONZE["bronze.billing_payment"]))


# ------------------------------------------------------------------ interactions and campaigns

def _local_to_utc_us(days: np.ndarray, seconds: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """UTC instants of local (date, seconds after midnight); one zone lookup per distinct date."""
    uniq, inv = np.unique(days, return_inverse=True)
    midnights = np.array([_local_midnight_us(d.astype(dt.date), tz) for d in uniq], dtype=np.int64)
    return midnights[inv] + (seconds * 1e6).astype(np.int64)


def _service_interactions(pop: Population, cust: Customers, seed: int, snapshot: dt.date, tz: ZoneInfo) -> pa.Table:
    rng = _rng(seed, "service")
    n = pop.n_known
    arch = pop.arch_names()[:n]
    lam = 1.5 + 1.0 * (cust.credit == "poor") + 0.5 * cust.commercial + 0.5 * (arch == "ev_night")
    count = 2 + rng.poisson(lam)  # >= 2 a year, so every customer's preference is observable
    who = np.repeat(np.arange(n), count)
    r = len(who)
    pref = cust.interaction_pref[who]
    channels = np.array(["app", "hotline", "service_hall", "wechat"], dtype=object)
    off = _cap_per_group(rng.random(r) < 0.08, who, np.floor(0.15 * count).astype(int))
    pref_idx = np.select([pref == "app", pref == "hotline"], [0, 1], 2)
    other = (pref_idx + rng.integers(1, 4, r)) % 4
    channel = channels[np.where(off, other, pref_idx)]

    itype = np.array(["inquiry", "repair", "complaint", "suggestion"], dtype=object)[
        rng.choice(4, r, p=[0.48, 0.22, 0.16, 0.14])]
    topics = {
        "inquiry": ["bill", "tariff", "account", "solar", "ev"],
        "repair": ["outage", "meter", "outage"],
        "complaint": ["bill", "outage", "service"],
        "suggestion": ["service", "app", "tariff"],
    }
    topic = np.empty(r, dtype=object)
    for t, options in topics.items():
        sel = itype == t
        topic[sel] = np.array(options, dtype=object)[rng.integers(0, len(options), sel.sum())]
    topic[(itype == "inquiry") & (arch[who] == "ev_night") & (rng.random(r) < 0.5)] = "ev"

    day = np.datetime64(snapshot, "D") - rng.integers(0, 365, r).astype("timedelta64[D]")
    seconds = rng.uniform(8 * 3600, 21 * 3600, r).round()
    ts = _local_to_utc_us(day, seconds, tz)
    order = np.lexsort((who, ts))
    return pa.Table.from_pydict({
        "interaction_id": [f"SI{k:09d}" for k in range(1, r + 1)],
        "customer_id": np.array(cust.customer_id, dtype=object)[who[order]].tolist(),
        "ts": pa.array(ts[order], type=pa.timestamp("us", tz="UTC")),
        "channel": channel[order].tolist(),
        "interaction_type": itype[order].tolist(),
        "topic": topic[order].tolist(),
    }, schema=arrow_schema(BRONZE["bronze.service_interaction"]))


def _campaigns(pop: Population, cust: Customers, seed: int, start: dt.date, tz: ZoneInfo,
               snapshot: dt.date | None = None) -> tuple[pa.Table, pa.Table]:
    """Past campaign cycles: contacts (treatment) and responses.

    Four cycles in the 180 days before ``start`` and, with ``snapshot``, an
    ``app_promotion`` cycle 30 days before it, whose contacts (23-29 days before
    the snapshot) make the campaigns' "contacted within N days" exclusions bite.
    Each cycle targets eligible customers (never do-not-contact ones) by a fit
    score; 10% of the targets are a holdout that is not contacted but still
    gets a response row, so treatment and control can be compared.
    """
    rng = _rng(seed, "campaigns")
    n = pop.n_known
    arch = pop.arch_names()[:n]
    kwh = pop.mean_daily_kwh[:n]
    res = ~cust.commercial
    high = kwh >= np.quantile(kwh, 0.7) if n else np.zeros(0, bool)
    has = {p: np.array([p in s for s in cust.products]) for p in _PRODUCTS}
    ev = arch == "ev_night"
    # id, days before start of the cycle's as-of, share of customers targeted, eligible, fit
    cycles = [
        ("tou_switch", 160, 0.07, res & ~has["tou"], high | ev | (arch == "night") | (arch == "electric_heating")),
        ("green_power", 120, 0.05, ~has["green_power"], cust.commercial | cust.vip | high),
        ("ev_charging", 75, 0.04, res & ~has["ev_charger"], ev),
        ("autopay", 45, 0.06, cust.pay_pref != "auto_debit", cust.pay_pref == "online"),
    ]
    if snapshot is not None:
        # Listed last, so the cycles above draw the same numbers with or without it.
        cycles.append(("app_promotion", (start - snapshot).days + 30, 0.05, cust.interaction_pref != "app",
                       cust.pay_pref == "online"))
    contacts: dict[str, list] = {"campaign_id": [], "customer_id": [], "ts": [], "channel": []}
    responses: dict[str, list] = {"campaign_id": [], "cycle_as_of": [], "customer_id": [], "responded": []}
    response_ts: list[np.ndarray] = []
    cid = np.array(cust.customer_id, dtype=object)
    for campaign, days_before, share, eligible, fit in cycles:
        pool = np.flatnonzero(eligible & ~cust.do_not_contact)
        size = min(len(pool), _round_half_up(share * n * 10 / 9))
        if size == 0:
            continue
        score = fit[pool] * 1.5 + rng.random(len(pool))
        targets = pool[np.argsort(-score, kind="stable")[:size]]
        targets = np.sort(targets)
        control = rng.random(size) < 0.10
        as_of = start - dt.timedelta(days=days_before)
        treated = targets[~control]
        day = np.datetime64(as_of, "D") + rng.integers(1, 8, len(treated)).astype("timedelta64[D]")
        contact_ts = _local_to_utc_us(day, rng.uniform(9 * 3600, 20 * 3600, len(treated)).round(), tz)
        channel = np.where(cust.interaction_pref[treated] == "app", "app",
                           np.where(cust.interaction_pref[treated] == "service_hall", "service_hall", "sms")).astype(object)
        channel[rng.random(len(treated)) < 0.15] = "sms"
        channel[cust.vip[treated] | cust.commercial[treated]] = "account_manager"
        contacts["campaign_id"] += [campaign] * len(treated)
        contacts["customer_id"] += cid[treated].tolist()
        contacts["ts"].append(contact_ts)
        contacts["channel"] += channel.tolist()

        p = (0.04 + 0.07 * fit[targets]) * np.where(control, 0.35, 1.0)
        responded = rng.random(size) < p
        sent = np.full(size, _local_midnight_us(as_of, tz), dtype=np.int64)
        sent[~control] = contact_ts
        delay = (rng.uniform(1.0, 21 * 24.0, size) * _US_PER_HOUR).astype(np.int64)
        responses["campaign_id"] += [campaign] * size
        responses["cycle_as_of"] += [as_of] * size
        responses["customer_id"] += cid[targets].tolist()
        responses["responded"] += responded.tolist()
        response_ts.append(np.where(responded, sent + delay, 0))

    contact_ts = np.concatenate(contacts.pop("ts")) if contacts["customer_id"] else np.zeros(0, np.int64)
    order = np.argsort(contact_ts, kind="stable")
    contact_table = pa.Table.from_pydict({
        "contact_id": [f"CT{k:09d}" for k in range(1, len(order) + 1)],
        "campaign_id": np.array(contacts["campaign_id"], dtype=object)[order].tolist(),
        "customer_id": np.array(contacts["customer_id"], dtype=object)[order].tolist(),
        "ts": pa.array(contact_ts[order], type=pa.timestamp("us", tz="UTC")),
        "channel": np.array(contacts["channel"], dtype=object)[order].tolist(),
    }, schema=arrow_schema(BRONZE["bronze.contact_history"]))
    responded_all = np.array(responses["responded"], dtype=bool)
    ts_all = np.concatenate(response_ts) if response_ts else np.zeros(0, np.int64)
    responses["response_ts"] = pa.array(ts_all, type=pa.timestamp("us", tz="UTC"), mask=~responded_all)
    response_table = pa.Table.from_pydict(responses, schema=arrow_schema(BRONZE["bronze.campaign_response"]))
    return contact_table, response_table


@dataclass
class BillShock:
    """Planted bill shocks: from ``first_day`` (index into the window) on, household load x ``factor``."""

    factor: np.ndarray  # (n,) 1.0 for meters without a shock
    first_day: np.ndarray  # (n,) int; ``days`` (never) for meters without a shock
    days: int  # days in the window

    @property
    def planted(self) -> np.ndarray:
        return self.factor > 1.0


def _shock_start_range(dates: list[dt.date]) -> tuple[int, int]:
    """Window indexes (first, last) the shocks' first days are drawn from.

    In the bill period (calendar month) of the window's last day: from its 4th day to 17 days before it ends,
    so an alert system has ten days of the surge before the last week of the period, and no later than 13
    days before the window's end, so the window's last 14 days are all surge. A window whose last month
    cannot hold that range (it began too recently) keeps the older rule: 14-21 days before the window ends.
    """
    days, last = len(dates), dates[-1]
    month = last.replace(day=1)
    month_end = month.replace(day=calendar.monthrange(month.year, month.month)[1])
    lo = (month + dt.timedelta(days=3) - dates[0]).days
    hi = min((month_end - dt.timedelta(days=17) - dates[0]).days, days - 14)
    if lo >= 7 and hi >= lo:
        return lo, hi
    return days - 21, days - 14


def _bill_shocks(pop: Population, share: float, days: int, seed: int,
                 dates: list[dt.date] | None = None) -> BillShock:
    """Pick ``share`` of the known residential, non-vacant meters for a bill shock: a new load (an air
    conditioner, a heater) raises the meter's load 1.8-2.4x from a first day drawn by
    :func:`_shock_start_range` to the window's end, so this month's bill, still unbilled, will be far above
    the same month last year. Meters unknown to the archive never get one, nor does any meter in a window
    shorter than 28 days (a surge needs a week of ordinary days before it)."""
    rng = _rng(seed, "bill_shock")
    names = pop.arch_names()
    eligible = np.flatnonzero((np.arange(pop.n) < pop.n_known) & np.isin(names, _RESIDENTIAL_WITH_SEASON))
    count = min(len(eligible), _round_half_up(share * len(eligible))) if days >= 28 else 0
    factor = np.ones(pop.n)
    first = np.full(pop.n, days, dtype=np.int64)
    if count:
        chosen = np.sort(rng.choice(eligible, size=count, replace=False))
        # The meter's whole consumption grows 1.8-2.4x: an EV owner's household load grows by as much energy.
        whole = rng.uniform(1.8, 2.4, count)
        factor[chosen] = 1.0 + (whole - 1.0) * pop.mean_daily_kwh[chosen] / pop.household_kwh[chosen]
        lo, hi = _shock_start_range(dates) if dates is not None else (days - 21, days - 14)
        first[chosen] = np.maximum(0, lo + rng.integers(0, hi - lo + 1, count))
    return BillShock(factor, first, days)


# Abnormal use: the homes eligible, and the archetype whose shape a pattern change switches to (a dissimilar one).
_PATTERN_CHANGE_TO = {"evening_peak": "night", "double_peak": "night", "night": "evening_peak",
                      "flat": "commercial_day"}
_ANOMALY_BASELINE_DAYS = 14  # a case starts at least this many days into the window
_ANOMALY_EVIDENCE_DAYS = 14  # a case running to the window's end has at least this many days
_ANOMALY_KIND = {name: i for i, name in enumerate(ANOMALY_KINDS)}


@dataclass(frozen=True)
class AnomalyPlan:
    """Planted abnormal-use cases (generate.anomaly_share), one entry per case (one case per meter)."""

    meter: np.ndarray  # int64 meter index
    kind: np.ndarray  # int index into ANOMALY_KINDS
    first_day: np.ndarray  # window index of the case's first day
    last_day: np.ndarray  # window index of its last day (inclusive)
    value: np.ndarray  # sustained_drop: the readings' multiplier; flatline: the constant reading (kWh); else 0
    target: np.ndarray  # pattern_change: archetype code of the new main shape; else -1

    def on(self, kind: str, d: int) -> np.ndarray:
        """Indexes into the plan of the ``kind`` cases active on window day ``d``."""
        return np.flatnonzero((self.kind == _ANOMALY_KIND[kind]) & (self.first_day <= d) & (d <= self.last_day))

    def main_codes(self, archetype: np.ndarray, d: int) -> tuple[np.ndarray, int]:
        """(each meter's main archetype code on day ``d``, how many have switched): pattern changes applied."""
        sel = self.on("pattern_change", d)
        codes = archetype.copy()
        codes[self.meter[sel]] = self.target[sel]
        return codes, len(sel)

    def apply_level(self, d: int, values: np.ndarray) -> np.ndarray:
        """Day ``d``'s readings (meters x slots, rounded) with the drops, flatlines and zero runs applied."""
        sel = self.on("sustained_drop", d)
        values[self.meter[sel]] = np.round(values[self.meter[sel]] * self.value[sel, None], 3)
        sel = self.on("flatline", d)
        values[self.meter[sel]] = self.value[sel, None]
        values[self.meter[self.on("zero_run", d)]] = 0.0
        return values

    def apply_reverse(self, d: int, values: np.ndarray) -> np.ndarray:
        """Day ``d``'s readings with the reverse-flow meters' readings negated (a reversed CT)."""
        rows = self.meter[self.on("reverse_flow", d)]
        values[rows] = -values[rows]
        return values


def _plan_anomalies(pop: Population, share: float, days: int, seed: int, interval_minutes: int,
                    shock: BillShock, outcomes: "OutcomePlan | None") -> AnomalyPlan:
    """Pick ``share`` of the known meters (at most the eligible ones) for one abnormal-use case each.

    Eligible: known, of a plain occupied archetype (``_PATTERN_CHANGE_TO``: no EV or heating block, not
    vacant), no bill shock, no closure. Kinds go round-robin over a shuffled order (an even split). The cases
    that move the level (all but pattern_change) start on day 14 or later; with a past cycle's outcomes
    planted they begin (drop, reverse flow: run to the end) or end (flatline, zero run: 4-10 days) before
    its pre period, so that cycle's pre and post periods see the same level; without room for that, anywhere
    leaving 14 days of evidence. A pattern change (same energy) starts in the window's second half, 14 days
    before its end at the latest. No case in a window shorter than 28 days.
    """
    rng = _rng(seed, "anomalies")
    names = pop.arch_names()
    ok = (np.arange(pop.n) < pop.n_known) & np.isin(names, tuple(_PATTERN_CHANGE_TO)) & ~shock.planted
    if outcomes is not None:
        ok &= outcomes.close_day < 0
    eligible = np.flatnonzero(ok)
    count = min(len(eligible), _round_half_up(share * pop.n_known)) if days >= 28 else 0
    meter = np.sort(rng.choice(eligible, size=count, replace=False)) if count else np.zeros(0, np.int64)
    kind = rng.permutation(np.arange(count) % len(ANOMALY_KINDS))
    lo, hi = _ANOMALY_BASELINE_DAYS, days - _ANOMALY_EVIDENCE_DAYS
    # The outcome cycle's pre period starts as long before the cycle as its post period runs after it.
    quiet = 2 * outcomes.cycle_day + 2 - days if outcomes is not None else days
    first = np.zeros(count, np.int64)
    last = np.full(count, days - 1, np.int64)
    value = np.zeros(count)
    target = np.full(count, -1, np.int64)
    duration = rng.integers(4, 11, count)
    u = rng.random(count)
    for k, name in enumerate(ANOMALY_KINDS):
        sel = kind == k
        if name in ("flatline", "zero_run"):
            top = min(quiet, days - 1) - duration[sel]  # ends before the quiet limit and the window's last day
            top = np.where(top >= lo, top, hi)
            first[sel] = lo + np.floor(u[sel] * (top - lo + 1)).astype(np.int64)
            last[sel] = first[sel] + duration[sel] - 1
        elif name == "pattern_change":
            begin = max(lo, days // 2)
            first[sel] = begin + np.floor(u[sel] * (hi - begin + 1)).astype(np.int64)
        else:
            top = min(quiet - 1, hi) if quiet - 1 >= lo else hi
            first[sel] = lo + np.floor(u[sel] * (top - lo + 1)).astype(np.int64)
    drop = kind == _ANOMALY_KIND["sustained_drop"]
    value[drop] = rng.uniform(0.25, 0.55, int(drop.sum()))
    flat = kind == _ANOMALY_KIND["flatline"]
    value[flat] = np.maximum(0.001, np.round(pop.mean_daily_kwh[meter[flat]] * interval_minutes / 1440.0, 3))
    change = kind == _ANOMALY_KIND["pattern_change"]
    target[change] = [_ARCH[_PATTERN_CHANGE_TO[a]] for a in names[meter[change]]]
    return AnomalyPlan(meter.astype(np.int64), kind, first, last, value, target)


def _without_anomaly_faults(plan: FaultPlan, anomalies: AnomalyPlan, grid: TimeGrid) -> FaultPlan:
    """The fault plan without the faults that fall on a planted case's days (the case is the meter's story)."""
    if not len(anomalies.meter) or not len(plan.meter):
        return plan
    begin = np.full(int(plan.meter.max()) + 1, np.iinfo(np.int64).max)
    end = np.zeros(len(begin), np.int64)
    inside = anomalies.meter < len(begin)
    begin[anomalies.meter[inside]] = grid.offsets[anomalies.first_day[inside]]
    end[anomalies.meter[inside]] = grid.offsets[anomalies.last_day[inside] + 1]
    keep = ~((plan.slot >= begin[plan.meter]) & (plan.slot < end[plan.meter]))
    return FaultPlan(plan.meter[keep], plan.slot[keep], plan.code[keep], plan.spike_add_kwh[keep])


def _truth_anomalies(pop: Population, cust: Customers, anomalies: AnomalyPlan, dates: list[dt.date]) -> pa.Table:
    """truth.anomalies: one row per planted case."""
    kinds = [ANOMALY_KINDS[k] for k in anomalies.kind]
    detail = []
    for k, v, t in zip(kinds, anomalies.value, anomalies.target):
        detail.append(f"x{v:.2f}" if k == "sustained_drop" else f"{v:.3f} kWh" if k == "flatline"
                      else f"to {ARCHETYPES[t]}" if k == "pattern_change" else None)
    return pa.Table.from_pydict({
        "meter_id": pop.meter_ids.take(pa.array(anomalies.meter)),
        "customer_id": [cust.customer_id[m] for m in anomalies.meter],
        "kind": kinds,
        "start_date": [dates[d] for d in anomalies.first_day],
        "end_date": [dates[d] for d in anomalies.last_day],
        "detail": detail,
    }, schema=arrow_schema(TRUTH["truth.anomalies"]))


def _current_cycle(cust: Customers, campaigns, seed: int, snapshot: dt.date, tz: ZoneInfo
                   ) -> tuple[pa.Table, pa.Table]:
    """Responses of the campaign cycle of the snapshot day, with a planted uplift per campaign.

    For every configured (enabled) campaign a base rate ~ U(3%, 12%) and a
    true uplift ~ U(2, 10) points are drawn, and every archive customer gets a
    response row with P(respond) = base + uplift when the customer is in the
    campaign's treatment group by the pipeline's own hash
    (:func:`gridpersona.transform.holdout.is_control`), else base. Whoever the pipeline
    targets, its treatment and control then differ by the planted uplift in
    expectation. Rows exist for every customer (not only targets), since the
    generator cannot know the targets; evaluation joins them to the targets.
    These are outcomes the CRM reports after the cycle: dated within the 21
    days after the snapshot day. Returns (bronze.campaign_response rows, truth.campaigns).
    """
    from gridpersona.transform.holdout import is_control

    n = len(cust.customer_id)
    cycle_start = _local_midnight_us(snapshot + dt.timedelta(days=1), tz)
    parts, truth = [], {"campaign_id": [], "cycle_as_of": [], "base_rate": [], "true_uplift": [], "holdout_share": []}
    for c in campaigns:
        # Streams per campaign id: adding or dropping a campaign leaves the others' draws alone.
        rng = _rng(seed, f"campaign_cycle:{c.id}")
        base, uplift = float(np.round(rng.uniform(0.03, 0.12), 4)), float(np.round(rng.uniform(0.02, 0.10), 4))
        treated = np.array([not is_control(cid, c.id, c.holdout_share) for cid in cust.customer_id], dtype=bool)
        responded = rng.random(n) < base + uplift * treated
        delay_us = (rng.uniform(0.0, 21 * 24.0, n) * _US_PER_HOUR).astype(np.int64)
        parts.append(pa.table({
            "campaign_id": pa.array([c.id] * n, pa.string()),
            "cycle_as_of": pa.array([snapshot] * n, pa.date32()),
            "customer_id": pa.array(cust.customer_id, pa.string()),
            "responded": pa.array(responded),
            "response_ts": pa.array(cycle_start + delay_us, type=pa.timestamp("us", tz="UTC"), mask=~responded),
        }))
        for key, value in (("campaign_id", c.id), ("cycle_as_of", snapshot), ("base_rate", base),
                           ("true_uplift", uplift), ("holdout_share", float(c.holdout_share))):
            truth[key].append(value)
    schema = arrow_schema(BRONZE["bronze.campaign_response"])
    responses = pa.concat_tables([t.cast(schema) for t in parts]) if parts else schema.empty_table()
    return responses, pa.Table.from_pydict(truth, schema=arrow_schema(TRUTH["truth.campaigns"]))


@dataclass(frozen=True)
class OutcomePlan:
    """The past campaign cycle's planted outcomes (generate.plant_outcomes), per known meter i < n_known.

    ``cycle_day``: index of the cycle's as-of in the window; ``kwh_factor``: the meter's readings are
    multiplied by it from day cycle_day + 1 on (1 - x for the treated customers of the kWh campaign, else
    1); ``close_day``: index of the account's last day of supply (readings stop after it), -1 when open.
    """

    cycle_day: int
    cycle_as_of: dt.date
    kwh_factor: np.ndarray
    close_day: np.ndarray
    close_date: list[dt.date | None]
    truth: pa.Table


def _outcome_plan(pop: Population, cust: Customers, campaigns, gen, dates: list[dt.date],
                  seed: int) -> OutcomePlan | None:
    """Plan the past cycle at the snapshot - ``gen.outcome_days`` and its outcomes, or None (not planted:
    ``gen.plant_outcomes`` false, or a window shorter than 2 x outcome_days, which leaves no pre period).

    Treatment is the pipeline's own hash (:func:`gridpersona.transform.holdout.is_control`) with the
    campaign's configured holdout_share, for every archive customer, so whoever the pipeline targets at the
    cycle, its treatment and control differ by the planted effect in expectation. A campaign id that is not
    configured (enabled) plants nothing. Draws come from their own rng streams: the other tables' draws do
    not change.
    """
    from gridpersona.transform.holdout import is_control

    days, post = len(dates), gen.outcome_days
    if not gen.plant_outcomes or days < 2 * post:
        return None
    cycle_day = days - 1 - post
    cycle, first, last = dates[cycle_day], dates[cycle_day + 1], dates[-1]
    n = pop.n_known
    by_id = {c.id: c for c in campaigns}
    truth = {name: [] for name in arrow_schema(TRUTH["truth.campaign_outcomes"]).names}

    def treated(campaign) -> np.ndarray:
        return np.array([not is_control(cid, campaign.id, campaign.holdout_share) for cid in cust.customer_id],
                        dtype=bool)

    def record(campaign, outcome: str, effect: float, base: float | None) -> None:
        for key, value in (("campaign_id", campaign.id), ("cycle_as_of", cycle), ("outcome", outcome),
                           ("planted_effect", effect), ("base_rate", base),
                           ("holdout_share", float(campaign.holdout_share)), ("window_first", first),
                           ("window_last", last)):
            truth[key].append(value)

    kwh_factor = np.ones(pop.n)
    kwh_campaign = by_id.get(gen.outcome_kwh_campaign)
    if kwh_campaign is not None and gen.outcome_kwh_effect > 0:
        kwh_factor[:n] = np.where(treated(kwh_campaign), 1.0 - gen.outcome_kwh_effect, 1.0)
        record(kwh_campaign, "kwh_log_change", math.log1p(-gen.outcome_kwh_effect), None)

    p_close = np.full(n, gen.outcome_closure_rate)
    churn_campaign = by_id.get(gen.outcome_churn_campaign)
    if churn_campaign is not None:
        p_close = p_close - gen.outcome_churn_effect * treated(churn_campaign)
        record(churn_campaign, "churn", -float(gen.outcome_churn_effect), float(gen.outcome_closure_rate))
    rng = _rng(seed, "outcome_closures")
    closes = rng.random(n) < p_close
    day = rng.integers(cycle_day + 1, days, n)
    close_day = np.full(pop.n, -1, dtype=np.int64)
    close_day[:n] = np.where(closes, day, -1)
    close_date = [dates[d] if d >= 0 else None for d in close_day[:n].tolist()]
    table = pa.Table.from_pydict(truth, schema=arrow_schema(TRUTH["truth.campaign_outcomes"]))
    return OutcomePlan(cycle_day, cycle, kwh_factor, close_day, close_date, table)


def _with_close_dates(archive: pa.Table, outcomes: OutcomePlan | None) -> pa.Table:
    """The archive with account_close_date set from the planted closures (all null when none planted)."""
    if outcomes is None:
        return archive
    i = archive.schema.get_field_index("account_close_date")
    return archive.set_column(i, archive.schema.field(i), pa.array(outcomes.close_date, pa.date32()))


def _outcome_truth(outcomes: OutcomePlan | None) -> pa.Table:
    """truth.campaign_outcomes rows (none when no outcomes were planted)."""
    schema = arrow_schema(TRUTH["truth.campaign_outcomes"])
    return outcomes.truth if outcomes is not None else schema.empty_table()


def _plant_outcome_readings(batches: Iterator[pa.RecordBatch], outcomes: OutcomePlan | None, pop: Population,
                            start: dt.date, counter: dict[str, int]) -> Iterator[pa.RecordBatch]:
    """The day batches of bronze.ami_interval with the past cycle's outcomes applied: readings after the cycle
    times the meter's kwh_factor (rounded to the readings' 3 decimals), and no reading after a closed
    account's last day. Each batch holds one local day (its ``date`` column)."""
    if outcomes is None:
        yield from batches
        return
    for batch in batches:
        if not batch.num_rows:
            yield batch
            continue
        d = (batch.column(3)[0].as_py() - start).days
        if d <= outcomes.cycle_day:
            yield batch
            continue
        idx = pc.index_in(batch.column(0), value_set=pop.meter_ids).to_numpy(zero_copy_only=False)
        kwh = batch.column(2)
        scaled = pc.round(pc.multiply(kwh, pa.array(outcomes.kwh_factor[idx])), 3)
        close = outcomes.close_day[idx]
        keep = (close < 0) | (d <= close)
        out = pa.RecordBatch.from_arrays([batch.column(0), batch.column(1), scaled, batch.column(3)],
                                         schema=batch.schema)
        counter["bronze.ami_interval"] -= int((~keep).sum())  # counted by _ami_batches before the closures
        yield out.filter(pa.array(keep))


def _drop_closed_faults(faults: pa.Table, outcomes: OutcomePlan | None, pop: Population,
                        grid: TimeGrid) -> pa.Table:
    """truth.faults without the faults planted on readings after a closed account's last day (never written)."""
    if outcomes is None or not faults.num_rows:
        return faults
    idx = pc.index_in(faults.column("meter_id"), value_set=pop.meter_ids).to_numpy(zero_copy_only=False)
    close = outcomes.close_day[idx]
    never = np.iinfo(np.int64).max
    # ends[d]: the first instant after day d (the start of day d + 1); the window's last day has no end.
    ends = np.array([grid.slot_ts_us(d + 1)[0] for d in range(grid.days - 1)] + [never], dtype=np.int64)
    cutoff = np.where(close >= 0, ends[np.maximum(close, 0)], never)
    ts = faults.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
    return faults.filter(pa.array(ts < cutoff))


def _tou_truth(cust: Customers, periods: PeriodTotals, grid: TimeGrid, settings: Settings,
               closed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tou_saving_cny, tou_saver) per archive customer, priced by the rate advisor's rule
    (:mod:`gridpersona.transform.pricing`) from every fault-free reading of the window (all days priced).
    tou_saver is None within ``generate.tou_saver_margin_cny`` of a threshold, without a mapped plan, or for
    an account ``closed`` by the snapshot (the advisor leaves closed accounts out)."""
    from decimal import Decimal

    from gridpersona.transform import pricing as PR

    tariff, advisor = settings.tariff, settings.rate_advisor
    margin = settings.generate.tou_saver_margin_cny
    window_days = np.bincount(periods.month_of_day, minlength=len(periods.months))
    month_days = [calendar.monthrange(m.year, m.month)[1] for m in periods.months]
    n = len(cust.customer_id)
    saving = np.full(n, np.nan)
    saver = np.full(n, None, dtype=object)
    for i in range(n):
        ctype = "commercial" if cust.commercial[i] else "residential"
        current = PR.current_plan_id(tariff, ctype, cust.tariff_type[i])
        if closed is not None and closed[i]:
            continue  # a closed account is advised nothing
        plans = PR.eligible_plans(tariff, ctype)
        if current is None or not any(p.kind == "tou" for p in plans):
            continue
        annual = {}
        for plan in plans:
            bill = Decimal(0)
            for m, (w, dim) in enumerate(zip(window_days, month_days)):
                if w == 0:
                    continue
                kwh = {name: PR.month_estimate(float(periods.kwh[i, m, k]), dim, int(w))
                       for k, name in enumerate(PRICE_PERIODS)}
                bill += PR.plan_bill(plan, kwh, int(w), dim)
            annual[plan.id] = float(bill) * 365.0 / float(window_days.sum())
        best_tou = min(annual[p.id] for p in plans if p.kind == "tou")
        best_other = min((annual[p.id] for p in plans if p.kind != "tou"), default=np.inf)
        saving[i] = annual[current] - best_tou
        threshold = float(advisor.min_saving_cny)
        close = abs(saving[i] - threshold) < margin or abs(best_other - best_tou) < margin
        saver[i] = None if close else bool(saving[i] >= threshold and best_tou < best_other)
    return np.round(saving, 2), saver


def _truth_meters(pop: Population, cust: Customers, shock: BillShock | None = None,
                  start: dt.date | None = None, tou: tuple[np.ndarray, np.ndarray] | None = None) -> pa.Table:
    n_unknown = pop.n - pop.n_known
    arch = pop.arch_names()
    pad = [None] * n_unknown
    mean_daily = pop.mean_daily_kwh
    if shock is not None:
        # Expected window mean includes the surge days (bills, already issued, do not).
        surge_days = shock.days - shock.first_day
        mean_daily = mean_daily + pop.household_kwh * (shock.factor - 1.0) * surge_days / shock.days
    return pa.Table.from_pydict({
        "meter_id": pop.meter_ids,
        "customer_id": cust.customer_id + pad,
        "archetype": arch.tolist(),
        "in_archive": np.arange(pop.n) < pop.n_known,
        "mean_daily_kwh": np.round(mean_daily, 3),
        "ev_owner": arch == "ev_night",
        "vacant": arch == "vacant",
        "bill_shock": shock.planted if shock is not None else np.zeros(pop.n, dtype=bool),
        "credit_rating": cust.credit.tolist() + pad,
        "payment_channel_pref": cust.pay_pref.tolist() + pad,
        "interaction_channel_pref": cust.interaction_pref.tolist() + pad,
        "bill_shock_start_date": [start + dt.timedelta(days=int(f)) if shock is not None and p and start else None
                                  for f, p in zip(shock.first_day if shock is not None else np.zeros(pop.n),
                                                  shock.planted if shock is not None else np.zeros(pop.n, bool))],
        "tou_saving_cny": ([None if np.isnan(v) else float(v) for v in tou[0]] if tou else [None] * pop.n_known) + pad,
        "tou_saver": (list(tou[1]) if tou else [None] * pop.n_known) + pad,
    }, schema=arrow_schema(TRUTH["truth.meters"]))


# ------------------------------------------------------------------ entry point

def generate_lake(settings: Settings, lake, *, meters: int | None = None, days: int | None = None,
                  seed: int | None = None, start: dt.date | str | None = None, interval_minutes: int | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Write all bronze tables + truth.meters + truth.faults; return {table_name: row_count} of those written.

    Arguments left as None come from ``settings.generate`` (meters, days, seed,
    start) and ``settings.ami.interval_minutes``; fault rates and the archetype
    mix always come from ``settings.generate``. Every table is overwritten, except
    those in ``generate.omit_tables``, which are not written (and must not exist yet).
    ``progress``, if given, receives short progress messages.
    """
    gen = settings.generate
    meters = gen.meters if meters is None else int(meters)
    days = gen.days if days is None else int(days)
    seed = gen.seed if seed is None else int(seed)
    start = gen.start if start is None else start
    if isinstance(start, str):
        start = dt.date.fromisoformat(start)
    if isinstance(start, dt.datetime):
        start = start.date()
    interval = settings.ami.interval_minutes if interval_minutes is None else int(interval_minutes)
    if interval not in (15, 30, 60):
        raise ValueError(f"interval_minutes must be 15, 30 or 60, got {interval}")
    if meters < 1 or days < 1:
        raise ValueError(f"meters and days must be at least 1, got meters={meters}, days={days}")

    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    tz = ZoneInfo(settings.ami.time_zone)
    grid = build_time_grid(start, days, interval, settings.ami.time_zone)
    snapshot = grid.dates[-1]
    omit = set(gen.omit_tables)
    stale = sorted(t for t in omit if lake.exists(t))
    if stale:
        raise ValueError(f"generate.omit_tables lists {stale}, but the lake at {settings.lake.root} already holds "
                         f"them ({', '.join(lake.path(t) for t in stale)}): a minimal lake needs a fresh lake.root "
                         f"(or delete those tables first)")
    first_bill = _billing_months(snapshot, gen.billing_months)[0]
    # One temperature series from the first bill month to the window's end (bronze.weather, the bills).
    weather = _weather(grid.dates, seed, span_start=min(first_bill, start))
    country = gen.holiday_calendar or settings.calendar.country
    holidays, workdays = _holiday_mask(grid.dates, country)
    pop = _population(gen.archetype_mix, meters, gen.faults.unknown_meter_share, seed, weather,
                      gen.ambiguous_meter_share)
    cust = _customers(pop, seed, first_bill - dt.timedelta(days=30), gen.archive_attribute_null_share)
    shock = _bill_shocks(pop, gen.bill_shock_share, days, seed, grid.dates)
    outcomes = _outcome_plan(pop, cust, settings.campaigns.active, gen, grid.dates, seed)
    anomalies = _plan_anomalies(pop, gen.anomaly_share, days, seed, interval, shock, outcomes)
    counts: dict[str, int] = {}

    def write(table: str, data: pa.Table) -> None:
        if table in omit:
            say(f"{table}: omitted (generate.omit_tables)")
            return
        lake.write_arrow(table, data, mode="overwrite")
        counts[table] = data.num_rows
        say(f"{table}: {data.num_rows} rows")

    write("bronze.customer_archive", _with_close_dates(cust.table, outcomes))
    write("bronze.service_interaction", _service_interactions(pop, cust, seed, snapshot, tz))
    contacts, responses = _campaigns(pop, cust, seed, start, tz, snapshot)
    write("bronze.contact_history", contacts)
    cycle_responses, campaign_truth = _current_cycle(cust, settings.campaigns.active, seed, snapshot, tz)
    write("bronze.campaign_response", pa.concat_tables([responses, cycle_responses]))
    write("truth.campaigns", campaign_truth)
    write("truth.campaign_outcomes", _outcome_truth(outcomes))

    mean_interval = pop.mean_daily_kwh[: pop.n_known] * interval / 1440.0
    periods = PeriodTotals.for_grid(settings.tariff, grid, pop.n)
    if outcomes is not None:
        # The truth prices what the lake holds: the planted kWh effect after the cycle, nothing after a closure.
        periods.day_factor = lambda d: (outcomes.kwh_factor if d > outcomes.cycle_day else np.ones(pop.n)) * (
            (outcomes.close_day < 0) | (d <= outcomes.close_day))
    charger = pop.ev_power_kw[: pop.n_known] * interval / 60.0
    plan = _plan_faults(gen.faults, pop.n_known, grid.total_slots, mean_interval, charger, seed, interval / 60.0)
    plan = _without_anomaly_faults(plan, anomalies, grid)
    reader = pa.RecordBatchReader.from_batches(
        arrow_schema(BRONZE["bronze.ami_interval"]),
        _plant_outcome_readings(_ami_batches(pop, grid, plan, seed, counts, progress, shock, weather, holidays,
                                             periods, anomalies, workdays=workdays), outcomes, pop, start, counts))
    lake.write_arrow(AMI_INTERVAL.name, reader, mode="overwrite", partition_by=AMI_INTERVAL.partition_by)
    counts.setdefault("bronze.ami_interval", 0)
    # Bills of time-of-use customers split their kWh like the customer's readings; the TOU truth prices them.
    shares = periods.shares()[: pop.n_known]
    write("bronze.billing_payment", _billing(pop, cust, seed, gen.billing_months, weather, snapshot,
                                             settings.tariff, shares, start, gen.annual_growth))
    write("bronze.weather", _weather_table(weather))
    # A calendar is published ahead: the whole years the lake touches.
    write("bronze.holiday_calendar", _holiday_table(weather.span_start.replace(month=1, day=1),
                                                    snapshot.replace(month=12, day=31), country))
    tou = _tou_truth(cust, periods, grid, settings,
                     None if outcomes is None else outcomes.close_day[: pop.n_known] >= 0)
    # The pipeline sees none of a reverse-flow meter's readings from the case's first day (all negative).
    tou[1][anomalies.meter[anomalies.kind == _ANOMALY_KIND["reverse_flow"]]] = None
    write("truth.meters", _truth_meters(pop, cust, shock, start, tou))
    write("truth.faults", _drop_closed_faults(_truth_faults(pop, grid, plan), outcomes, pop, grid))
    write("truth.anomalies", _truth_anomalies(pop, cust, anomalies, grid.dates))
    say(f"generated {meters} meters x {days} days in {time.perf_counter() - t0:.1f}s")
    return {name: counts[name] for name in TABLES if name in counts}


def _billing_months(snapshot: dt.date, months: int) -> list[dt.date]:
    """First days of the billed months: ``months`` months ending with the latest one whose
    due date (the 15th of the following month) is on or before ``snapshot``."""
    last = snapshot.year * 12 + snapshot.month - 1 - (1 if snapshot.day >= 15 else 2)
    return [dt.date(k // 12, k % 12 + 1, 1) for k in range(last - months + 1, last + 1)]
