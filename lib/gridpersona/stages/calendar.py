"""The run's holiday calendar and weather: which holidays apply, read once per stage.

:func:`holiday_calendar` gives the holidays and make-up working days of a date range from
``bronze.holiday_calendar`` when the lake holds rows for the range's years, else from the built-in
calendar of ``calendar.country`` (:mod:`gridpersona.config.holidays`), and says which in
:attr:`HolidayCalendar.note` (one line for the run's notes). :func:`read_weather` reads ``bronze.weather``
(None when the lake has none).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from gridpersona.config import Settings
from gridpersona.config.holidays import default_calendar, holiday_period_dates
from gridpersona.contracts.bronze import HOLIDAY_CALENDAR, WEATHER
from gridpersona.lake import Lake
from gridpersona.stages.inputs import read_bronze

# Holiday periods are followed this far past the range (a week-long holiday and its weekends).
_PAD = dt.timedelta(days=14)


@dataclass(frozen=True)
class HolidayCalendar:
    """The holidays of a date range and where they came from."""

    first: dt.date
    last: dt.date
    days_off: frozenset[dt.date]  # public holidays (within the range, padded by two weeks)
    workdays: frozenset[dt.date]  # make-up working days (likewise)
    source: str  # "bronze.holiday_calendar" or "built-in cn" / "built-in none"
    fallback_reason: str = ""  # why the built-in calendar was used although the table exists

    def period_dates(self) -> frozenset[dt.date]:
        """Dates of ``first`` .. ``last`` in a holiday period (:func:`holiday_period_dates`)."""
        return holiday_period_dates(self.first, self.last, self.days_off, self.workdays)

    @property
    def note(self) -> str:
        """One line for the run's notes: which calendar, and the holiday-period days of the range."""
        inside = sorted(d for d in self.days_off if self.first <= d <= self.last)
        periods = self.period_dates()
        return (f"holiday calendar: {self.source}{f' ({self.fallback_reason})' if self.fallback_reason else ''}; "
                f"{len(inside)} holiday(s) and {len(periods)} holiday-period day(s) in {self.first} .. {self.last} "
                f"(not counted as vacancy)")


def holiday_calendar(lake: Lake, settings: Settings, first: dt.date, last: dt.date) -> HolidayCalendar:
    """The holidays of ``first`` .. ``last`` (padded by two weeks each side).

    ``bronze.holiday_calendar`` when the lake has it and it holds a row dated in one of the range's
    years (``day_off`` true: a holiday, false: a make-up working day, null: ignored); otherwise the
    built-in calendar of ``settings.calendar.country``. One small job when the table exists.
    """
    lo, hi = first - _PAD, last + _PAD
    reason = ""
    if lake.exists(HOLIDAY_CALENDAR.name):
        table = read_bronze(lake, HOLIDAY_CALENDAR.name)
        years = list(range(lo.year, hi.year + 1))
        # Bounded: a calendar holds a few dozen rows a year; only the range's years are fetched.
        rows = table.filter(F.year("date").isin(years)).select("date", "day_off").collect()
        if rows:
            in_range = [r for r in rows if lo <= r["date"] <= hi]
            return HolidayCalendar(first, last, frozenset(r["date"] for r in in_range if r["day_off"] is True),
                                   frozenset(r["date"] for r in in_range if r["day_off"] is False),
                                   HOLIDAY_CALENDAR.name)
        reason = f"{HOLIDAY_CALENDAR.name} has no row for {years[0]}..{years[-1]}"
    country = settings.calendar.country
    rows = default_calendar(country, lo, hi)
    return HolidayCalendar(first, last, frozenset(r.date for r in rows if r.day_off),
                           frozenset(r.date for r in rows if not r.day_off), f"built-in {country}", reason)


def read_weather(lake: Lake) -> DataFrame | None:
    """``bronze.weather`` (region, date, temp_mean_c) checked against its contract, or None when absent."""
    return read_bronze(lake, WEATHER.name) if lake.exists(WEATHER.name) else None
