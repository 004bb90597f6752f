"""The stage registry and `run <stage|all>`: stages run in order, in one Spark session.

Each stage is declared once, here: its function, the tables it reads and the
tables it writes. The runner locks the outputs for the stage's whole run and
publishes them together (see runtime.run_stage); the inputs are pinned at one
Delta version each when the stage starts.
"""

from __future__ import annotations

import datetime as dt
import difflib
import importlib
import logging
from dataclasses import dataclass
from typing import Callable

from gridpersona.config import Settings
from gridpersona.contracts import advice as AD
from gridpersona.contracts import anomalies as AN
from gridpersona.contracts import bronze as BR
from gridpersona.contracts import campaigns as CA
from gridpersona.contracts import forecast as FC
from gridpersona.contracts import segments as SG
from gridpersona.contracts import silver as SI
from gridpersona.contracts import tags as TG
from gridpersona.stages.runner import RunCache, StageContext, StageResult, as_date, run_stage

log = logging.getLogger("gridpersona")


@dataclass(frozen=True)
class StageSpec:
    name: str
    function: str  # "module:function", imported when the stage runs
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    # The date-partitioned input the stage reads for its window: a run starting at this stage needs rows
    # there (checked from the Delta log before Spark starts). None: the stage reads by as-of or model.
    window_input: str | None = None
    # The date-partitioned output whose partitions say which dates a run processed: set for a stage that
    # can run incrementally (stages.incremental plans its dates from the window input's Delta log).
    incremental_output: str | None = None

    def load(self) -> Callable[[StageContext], StageResult]:
        module, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(module), attr)


def _names(*specs) -> tuple[str, ...]:
    return tuple(spec.name for spec in specs)


_TAG_SOURCES = (BR.BILLING_PAYMENT, BR.SERVICE_INTERACTION, BR.CONTACT_HISTORY, BR.CAMPAIGN_RESPONSE)

STAGES: tuple[StageSpec, ...] = (
    StageSpec("clean", "gridpersona.stages.clean:run_clean",
              inputs=_names(BR.AMI_INTERVAL, BR.CUSTOMER_ARCHIVE),
              outputs=_names(SI.AMI_CLEAN, SI.AMI_QUARANTINE, SI.METER_DAY_QUALITY, SI.METER_DAY_READINGS),
              window_input=BR.AMI_INTERVAL.name, incremental_output=SI.METER_DAY_QUALITY.name),
    StageSpec("shapes", "gridpersona.stages.shapes:run_shapes",
              inputs=_names(SI.AMI_CLEAN, SI.METER_DAY_READINGS), outputs=_names(SI.DAILY_LOAD_SHAPE),
              window_input=SI.AMI_CLEAN.name,
              incremental_output=SI.DAILY_LOAD_SHAPE.name),
    # Daily, right after shapes (the daily DAG runs it with --window-days 1). It also reads its own
    # output's earlier rows (locked as an output, so not listed as an input) to alert once per bill period.
    StageSpec("alerts", "gridpersona.stages.alerts:run_alerts",
              inputs=_names(SI.DAILY_LOAD_SHAPE, BR.CUSTOMER_ARCHIVE, BR.BILLING_PAYMENT, BR.HOLIDAY_CALENDAR,
                            BR.WEATHER),
              outputs=_names(AD.ALERT_TARGETS), window_input=SI.DAILY_LOAD_SHAPE.name),
    # Flags for inspection teams: the window's days and anomalies.history_days before, one pass.
    StageSpec("anomalies", "gridpersona.stages.anomalies:run_anomalies",
              inputs=_names(SI.DAILY_LOAD_SHAPE, SI.AMI_QUARANTINE, BR.CUSTOMER_ARCHIVE),
              outputs=_names(AN.ANOMALY_FLAGS), window_input=SI.DAILY_LOAD_SHAPE.name),
    StageSpec("segment-train", "gridpersona.stages.segment_train:run_segment_train",
              inputs=_names(SI.DAILY_LOAD_SHAPE), outputs=_names(SG.SEGMENT_MODEL),
              window_input=SI.DAILY_LOAD_SHAPE.name),
    StageSpec("segment-assign", "gridpersona.stages.segment_assign:run_segment_assign",
              inputs=_names(SI.DAILY_LOAD_SHAPE, SG.SEGMENT_MODEL, BR.CUSTOMER_ARCHIVE),
              outputs=_names(SG.CUSTOMER_SEGMENTS)),
    StageSpec("advice", "gridpersona.stages.advice:run_advice",
              inputs=_names(SI.DAILY_LOAD_SHAPE, BR.CUSTOMER_ARCHIVE),
              outputs=_names(AD.RATE_COMPARISON, AD.NEIGHBOUR_COMPARISON)),
    # Monthly: reads the bills (not the window), the as-of's segments, and the weather when the lake has it.
    StageSpec("forecast", "gridpersona.stages.forecast:run_forecast",
              inputs=_names(BR.BILLING_PAYMENT, SG.CUSTOMER_SEGMENTS, BR.CUSTOMER_ARCHIVE, BR.WEATHER),
              outputs=_names(FC.SEGMENT_FORECAST)),
    StageSpec("tags", "gridpersona.stages.tags:run_tags",
              inputs=_names(SG.CUSTOMER_SEGMENTS, SI.DAILY_LOAD_SHAPE, BR.CUSTOMER_ARCHIVE, *_TAG_SOURCES,
                            AD.RATE_COMPARISON, AD.NEIGHBOUR_COMPARISON, BR.WEATHER, BR.HOLIDAY_CALENDAR),
              outputs=_names(TG.CUSTOMER_TAGS, TG.TAG_CATALOG, TG.CUSTOMER_PORTRAIT)),
    StageSpec("campaigns", "gridpersona.stages.campaigns:run_campaigns",
              inputs=_names(TG.CUSTOMER_TAGS, BR.CONTACT_HISTORY, BR.CAMPAIGN_RESPONSE, SI.DAILY_LOAD_SHAPE),
              outputs=_names(CA.CAMPAIGN_TARGETS, CA.CAMPAIGN_POWER)),
    StageSpec("evaluate", "gridpersona.stages.campaigns:run_evaluate",
              inputs=_names(CA.CAMPAIGN_TARGETS, BR.CAMPAIGN_RESPONSE, SI.DAILY_LOAD_SHAPE, BR.CUSTOMER_ARCHIVE,
                            BR.BILLING_PAYMENT, BR.SERVICE_INTERACTION),
              outputs=_names(CA.CAMPAIGN_EVALUATION, CA.CAMPAIGN_OUTCOMES)),
    StageSpec("profile", "gridpersona.stages.profile:run_profile",
              inputs=_names(SG.CUSTOMER_SEGMENTS, SG.SEGMENT_MODEL, SI.DAILY_LOAD_SHAPE, TG.CUSTOMER_TAGS,
                            TG.TAG_CATALOG),
              outputs=_names(SG.SEGMENT_PROFILE, TG.SEGMENT_TAG_PROFILE, TG.CONSUMPTION_PRICE_QUADRANT,
                             TG.TAG_ASSOCIATION_RULES)),
)
STAGE_ORDER = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def incremental_stages() -> list[str]:
    """The stages that can run incrementally (a StageSpec with an ``incremental_output``), in order."""
    return [s.name for s in STAGES if s.incremental_output is not None]


def stage_spec(name: str) -> StageSpec:
    return _BY_NAME[name]


class EmptyWindowError(ValueError):
    """The run's window holds no input rows; the message gives the window, the data's dates and the flag."""


def resolve_stages(name: str) -> list[str]:
    """``all`` -> every stage in order, a stage name -> [it]; ValueError with a did-you-mean otherwise."""
    if name == "all":
        return list(STAGE_ORDER)
    if name not in STAGE_ORDER:
        close = difflib.get_close_matches(name, [*STAGE_ORDER, "all"], n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown stage {name!r}; {guess}stages: {', '.join(STAGE_ORDER)} or all")
    return [name]


def check_window_input(lake, stage: str, first: dt.date, last: dt.date) -> None:
    """EmptyWindowError when ``stage``'s window input (``StageSpec.window_input``) has no row dated ``first .. last``.

    Reads the Delta log's partition values and row counts (no Spark job on the
    embedded backend). An absent table is an EmptyWindowError too, saying what makes it.
    """
    table = stage_spec(stage).window_input
    if table is None:
        return
    if not lake.exists(table):
        before = STAGE_ORDER[STAGE_ORDER.index(stage) - 1] if stage != "clean" else None
        todo = f"run {before} for this window first" if before else "land the readings first (gridpersona ingest)"
        raise EmptyWindowError(f"{stage}: {table} does not exist in the lake at {lake.root}; {todo}; "
                               f"nothing was written")
    counts = {as_date(d): n
              for d, n in lake.partition_counts(table, "date").items() if d is not None}
    in_window = sum(n for d, n in counts.items() if first <= d <= last)
    if in_window:
        return
    dated = sorted(d for d, n in counts.items() if n)
    held = f"its rows cover {dated[0]} .. {dated[-1]}" if dated else "it holds no rows"
    raise EmptyWindowError(
        f"{stage}: {table} has no rows in the window {first} .. {last} ({(last - first).days + 1} days ending on "
        f"--as-of {last}); {held}. Pick an --as-of inside that range, or pass --allow-empty to run on an empty "
        f"window; nothing was written")


def run_pipeline(settings: Settings, spark, lake, stage: str, as_of: dt.date, window_days: int | None = None,
                 allow_empty: bool = False, cache: RunCache | None = None,
                 incremental: bool = False) -> list[tuple[str, StageResult]]:
    """Run one stage or all of them for ``as_of``; returns (stage, result) in order.

    ``incremental``: a stage that supports it (clean, shapes) writes only the dates of its window that
    :func:`gridpersona.stages.incremental.plan_dates` picks, planned inside its run (after the stages
    before it committed, against the input version it pinned); the others run on their window as usual.

    Unless ``allow_empty``, the first stage's window input must hold rows
    (EmptyWindowError before anything is written). ``spark`` None: the lake's
    session, started only after that check. The stages share one :class:`RunCache`,
    released when the run ends; a caller running stages one by one (the benchmark)
    passes its own ``cache`` to share it across runs, and releases it itself.
    """
    from gridpersona.stages.inputs import absent_inputs_note

    from gridpersona.stages.incremental import plan_dates

    names = resolve_stages(stage)
    if incremental and not set(names) & set(incremental_stages()):
        raise ValueError(f"--incremental applies to {', '.join(incremental_stages())} (or all); {stage} runs on its "
                         f"whole window: drop --incremental")
    days = window_days or settings.pipeline.window_days
    if not allow_empty:
        check_window_input(lake, names[0], as_of - dt.timedelta(days=days - 1), as_of)
    ctx = StageContext(settings, spark or lake.spark, lake, as_of, days,
                       cache=cache if cache is not None else RunCache())
    note = absent_inputs_note(lake)
    if note:  # once per run, not per stage
        log.warning(note)
    results = []
    try:
        for name in names:
            spec = _BY_NAME[name]
            plan = None
            if incremental and spec.incremental_output is not None:
                plan = (lambda c, sp=spec: plan_dates(c.lake, c.settings, sp, c.as_of, c.window_days))
            results.append((name, run_stage(name, spec.load(), ctx, outputs=spec.outputs, inputs=spec.inputs,
                                            plan=plan)))
    finally:
        if cache is None:
            ctx.cache.release()
    return results
