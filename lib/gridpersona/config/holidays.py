"""Built-in public-holiday calendars, and the holiday periods both the generator and the pipeline use.

A calendar is a list of :class:`CalendarDay` (date, holiday name, day_off): ``day_off`` true is a public
holiday off work; false is a make-up working day (调休), a working day even when it falls on a weekend.
``bronze.holiday_calendar`` has the same three columns; when a lake has no such table, the pipeline uses
:func:`default_calendar` of ``calendar.country`` (``cn`` or ``none``).

A **holiday period** (:func:`holiday_period_dates`) is a maximal run of consecutive days off (holidays and
weekend days that are not make-up working days) holding at least one holiday: the Spring Festival week, or a
Friday holiday with the weekend after it. Households go away over such periods, so the vacancy rules do not
count them (docs/calendar_weather.md).

Pure Python: no Spark, importable from transforms, stages and the generator alike.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable

COUNTRIES = ("cn", "none")


@dataclass(frozen=True)
class CalendarDay:
    """One row of a holiday calendar."""

    date: dt.date
    holiday_name: str
    day_off: bool


# China's statutory holidays as published by the State Council: (first day off, days off, name) and the
# make-up working days of the same arrangement. 2027 is not published yet (provisional: the usual dates,
# no make-up days).
_CN_SPANS = {
    2024: [("2024-01-01", 1, "New Year's Day"), ("2024-02-10", 8, "Spring Festival"), ("2024-04-04", 3, "Qingming"),
           ("2024-05-01", 5, "Labour Day"), ("2024-06-10", 1, "Dragon Boat Festival"),
           ("2024-09-15", 3, "Mid-Autumn Festival"), ("2024-10-01", 7, "National Day")],
    2025: [("2025-01-01", 1, "New Year's Day"), ("2025-01-28", 8, "Spring Festival"), ("2025-04-04", 3, "Qingming"),
           ("2025-05-01", 5, "Labour Day"), ("2025-05-31", 3, "Dragon Boat Festival"),
           ("2025-10-01", 8, "National Day and Mid-Autumn Festival")],
    2026: [("2026-01-01", 3, "New Year's Day"), ("2026-02-15", 9, "Spring Festival"), ("2026-04-04", 3, "Qingming"),
           ("2026-05-01", 5, "Labour Day"), ("2026-06-19", 3, "Dragon Boat Festival"),
           ("2026-09-25", 3, "Mid-Autumn Festival"), ("2026-10-01", 7, "National Day")],
    2027: [("2027-01-01", 3, "New Year's Day"), ("2027-02-05", 7, "Spring Festival"), ("2027-04-03", 3, "Qingming"),
           ("2027-05-01", 5, "Labour Day"), ("2027-06-09", 1, "Dragon Boat Festival"),
           ("2027-09-15", 1, "Mid-Autumn Festival"), ("2027-10-01", 7, "National Day")],
}
_CN_WORKDAYS = {
    2024: [("2024-02-04", "Spring Festival"), ("2024-02-18", "Spring Festival"), ("2024-04-07", "Qingming"),
           ("2024-04-28", "Labour Day"), ("2024-05-11", "Labour Day"), ("2024-09-14", "Mid-Autumn Festival"),
           ("2024-09-29", "National Day"), ("2024-10-12", "National Day")],
    2025: [("2025-01-26", "Spring Festival"), ("2025-02-08", "Spring Festival"), ("2025-04-27", "Labour Day"),
           ("2025-09-28", "National Day and Mid-Autumn Festival"),
           ("2025-10-11", "National Day and Mid-Autumn Festival")],
    2026: [("2026-01-04", "New Year's Day"), ("2026-02-14", "Spring Festival"), ("2026-02-28", "Spring Festival"),
           ("2026-05-09", "Labour Day"), ("2026-09-20", "National Day"), ("2026-10-10", "National Day")],
}


def cn_calendar(years: Iterable[int]) -> list[CalendarDay]:
    """China's holidays and make-up working days of ``years``: the published arrangement for 2024-2027
    (2027 provisional), else the fixed-date holidays only (New Year's Day, Labour Day 1-5 May, National Day
    1-7 Oct), without make-up days."""
    rows: list[CalendarDay] = []
    for year in sorted(set(years)):
        spans = _CN_SPANS.get(year) or [(f"{year}-01-01", 1, "New Year's Day"), (f"{year}-05-01", 5, "Labour Day"),
                                        (f"{year}-10-01", 7, "National Day")]
        for first, days, name in spans:
            start = dt.date.fromisoformat(first)
            rows += [CalendarDay(start + dt.timedelta(days=k), name, True) for k in range(days)]
        rows += [CalendarDay(dt.date.fromisoformat(d), name, False) for d, name in _CN_WORKDAYS.get(year, [])]
    return sorted(rows, key=lambda r: r.date)


def default_calendar(country: str, first: dt.date, last: dt.date) -> list[CalendarDay]:
    """The built-in calendar of ``country`` (``cn`` or ``none``) for the years ``first`` .. ``last`` touch,
    cut to those dates. ValueError for another country."""
    if country not in COUNTRIES:
        raise ValueError(f"unknown holiday calendar country {country!r}; built-in: {', '.join(COUNTRIES)}")
    if country == "none":
        return []
    return [r for r in cn_calendar(range(first.year, last.year + 1)) if first <= r.date <= last]


def holiday_period_dates(first: dt.date, last: dt.date, days_off: Iterable[dt.date],
                         workdays: Iterable[dt.date] = ()) -> frozenset[dt.date]:
    """The dates of ``first`` .. ``last`` that lie in a holiday period: a maximal run of consecutive days off
    (a date of ``days_off``, or a Saturday/Sunday not in ``workdays``) that holds at least one date of
    ``days_off``. Runs are followed up to 10 days past both ends, so a period cut by the range still counts
    whole (its weekend days inside the range are in it)."""
    holidays, working = frozenset(days_off), frozenset(workdays)
    pad = dt.timedelta(days=10)
    lo, hi = first - pad, last + pad
    out: set[dt.date] = set()
    run: list[dt.date] = []
    has_holiday = False
    day = lo
    while day <= hi + dt.timedelta(days=1):
        off = day <= hi and (day in holidays or (day.weekday() >= 5 and day not in working))
        if off:
            run.append(day)
            has_holiday |= day in holidays
        else:
            if has_holiday:
                out.update(d for d in run if first <= d <= last)
            run, has_holiday = [], False
        day += dt.timedelta(days=1)
    return frozenset(out)
