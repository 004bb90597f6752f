"""The stage registry and `run <stage|all>`: stages run in order, in one Spark session."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

from gridpersona.config import Settings
from gridpersona.runtime import StageContext, StageResult, run_stage

log = logging.getLogger("gridpersona")

STAGE_ORDER = ("clean", "shapes", "segment-train", "segment-assign", "tags", "campaigns", "evaluate", "profile")


def stage_functions() -> dict[str, Callable[[StageContext], StageResult]]:
    from gridpersona import stages, stages_campaigns, stages_segment, stages_tags

    return {
        "clean": stages.run_clean,
        "shapes": stages.run_shapes,
        "segment-train": stages_segment.run_segment_train,
        "segment-assign": stages_segment.run_segment_assign,
        "tags": stages_tags.run_tags,
        "campaigns": stages_campaigns.run_campaigns,
        "evaluate": stages_campaigns.run_evaluate,
        "profile": stages_segment.run_profile,
    }


def resolve_stages(name: str) -> list[str]:
    if name == "all":
        return list(STAGE_ORDER)
    if name not in STAGE_ORDER:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGE_ORDER)} or all")
    return [name]


def run_pipeline(settings: Settings, spark, lake, stage: str, as_of: dt.date, window_days: int | None = None
                 ) -> list[tuple[str, StageResult]]:
    """Run one stage or all of them for ``as_of``; returns (stage, result) in order."""
    from gridpersona.bronze import absent_inputs_note

    names = resolve_stages(stage)
    functions = stage_functions()
    ctx = StageContext(settings, spark, lake, as_of, window_days or settings.pipeline.window_days)
    note = absent_inputs_note(lake)
    if note:  # once per run, not per stage
        log.warning(note)
    return [(name, run_stage(name, functions[name], ctx)) for name in names]
