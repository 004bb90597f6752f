"""Incremental runs: which dates of its window a date-partitioned stage (clean, shapes) must (re)write.

A nightly run need not recompute its whole window: only the dates whose input changed since the
stage's last succeeded run, the dates not processed yet, and (clean) the dates those reach. The
plan reads only the Delta log and ops.job_runs (no Spark job):

- v0 = the version of the stage's window input pinned by its last ``succeeded`` run
  (``versions_read``); no such run -> the whole window ("first run").
- changed = the ``date`` partition of every file added or removed by the input's commits after v0
  (a late reading appended to an old day, a day rewritten); a commit file gone from the log (log
  cleanup) -> the whole window.
- new = window dates the stage's output has no partition of (shapes: only those the input holds rows
  for; clean writes a day without readings too, as all missing).
- clean: every date a changed or new day reaches (:func:`gridpersona.transform.clean.affected_dates`:
  the day's neighbours and the days whose look-back scale reads it).
- only dates of the window are kept. An empty plan runs nothing and still logs a succeeded run, so
  the next plan starts from the input version it pinned.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from gridpersona.config import Settings
from gridpersona.lake import deltalog
from gridpersona.stages.runner import as_date, compact_dates, partition_dates, stage_runs
from gridpersona.transform.clean import affected_dates


@dataclass(frozen=True)
class DatePlan:
    """The dates an incremental stage run writes (ascending), why each, and a line for the log."""

    stage: str
    dates: tuple[dt.date, ...]
    reasons: dict[dt.date, str] = field(default_factory=dict)
    summary: str = ""


def _last_succeeded(lake, stage: str) -> dict | None:
    return next((r for r in stage_runs(lake) if r["stage"] == stage and r["status"] == "succeeded"), None)


def plan_dates(lake, settings: Settings, spec, as_of: dt.date, window_days: int) -> DatePlan:
    """The dates of the window ``as_of - window_days + 1 .. as_of`` that the stage of ``spec`` (its
    ``StageSpec``: name, window_input, incremental_output) must write now (see the module docstring). Called
    inside the stage's run, the input's version is the one the run pinned."""
    stage = spec.name
    if spec.incremental_output is None or spec.window_input is None:
        raise ValueError(f"{stage}: runs on its whole window; incremental runs apply to the stages with an "
                         f"incremental output only")
    first = as_of - dt.timedelta(days=window_days - 1)
    window = [first + dt.timedelta(days=i) for i in range(window_days)]
    table, output = spec.window_input, spec.incremental_output

    def whole(reason: str) -> DatePlan:
        return DatePlan(stage, tuple(window), {d: reason for d in window},
                        f"{stage}: all {len(window)} dates of the window {first} .. {as_of} ({reason})")

    if not lake.exists(table):
        return whole(f"no {table} yet")
    current = lake.version(table)
    last = _last_succeeded(lake, stage)
    since = None if last is None else last["versions_read"].get(table)
    if since is None:
        return whole("first run")
    if since > current:
        return whole(f"{table} is at version {current}, older than version {since} read by the last run "
                     f"(table recreated?)")
    changed_text = deltalog.changed_partitions(lake.path(table), "date", since, current)
    if changed_text is None:
        return whole(f"the commits of {table} after version {since} are no longer in its Delta log (log cleanup)")
    if None in changed_text:
        return whole(f"a commit of {table} after version {since} touched files without a date partition")
    changed = {as_date(v) for v in changed_text}

    in_window = set(window)
    has_input = partition_dates(lake, table) & in_window
    has_output = partition_dates(lake, output) if lake.exists(output) else set()
    # Clean writes a quality row for every known meter and calendar day, readings or not (a day without
    # any is all missing), so each window day is new to it until it has a partition; shapes writes rows
    # only for days with clean rows, so a day without any would stay new for ever.
    new = (in_window if stage == "clean" else has_input) - has_output

    reasons: dict[dt.date, str] = {}
    for day in sorted(new):
        reasons[day] = f"new: no {output} partition yet"
    for day in sorted(changed - new):
        reasons[day] = f"{table} changed after version {since}"
    reached: set[dt.date] = set()
    if stage == "clean":
        lookback = settings.clean.scale_lookback_days
        # A day without readings changes no other day's output: only days with readings reach.
        for day in sorted(changed | (new & has_input)):
            for other in sorted(affected_dates([day], lookback) - changed - new):
                reasons.setdefault(other, f"reads {day} (neighbour or {lookback}-day scale look-back)")
                reached.add(other)
    dates = tuple(sorted(d for d in reasons if d in in_window))
    kept = {d: reasons[d] for d in dates}
    if not dates:
        summary = (f"{stage}: nothing new in the window {first} .. {as_of} ({table} version {since} -> {current}, "
                   f"{len(changed)} changed date(s) outside the window)")
    else:
        counts = [f"{len(new)} new", f"{len((changed - new) & in_window)} changed"]
        if stage == "clean":
            counts.append(f"{len(reached & in_window)} reached by them")
        summary = (f"{stage}: {len(dates)} of {len(window)} window dates ({compact_dates(dates)}): "
                   f"{', '.join(counts)}; {table} version {since} -> {current}")
    return DatePlan(stage, dates, kept, summary)
