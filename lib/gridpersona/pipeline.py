"""The stage registry and `run <stage|all>`: stages run in order, in one Spark session.

Each stage is declared once, here: its function, the tables it reads and the
tables it writes. The runner locks the outputs for the stage's whole run and
publishes them together (see runtime.run_stage); the inputs are pinned at one
Delta version each when the stage starts.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from dataclasses import dataclass
from typing import Callable

from gridpersona.config import Settings
from gridpersona.runtime import StageContext, StageResult, run_stage

log = logging.getLogger("gridpersona")

_ARCHIVE = "bronze.customer_archive"
_TAG_SOURCES = ("bronze.billing_payment", "bronze.service_interaction", "bronze.contact_history",
                "bronze.campaign_response")


@dataclass(frozen=True)
class StageSpec:
    name: str
    function: str  # "module:function", imported when the stage runs
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def load(self) -> Callable[[StageContext], StageResult]:
        module, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(module), attr)


STAGES: tuple[StageSpec, ...] = (
    StageSpec("clean", "gridpersona.stages:run_clean",
              inputs=("bronze.ami_interval", _ARCHIVE),
              outputs=("silver.ami_clean", "silver.ami_quarantine", "silver.meter_day_quality")),
    StageSpec("shapes", "gridpersona.stages:run_shapes",
              inputs=("silver.ami_clean",), outputs=("silver.daily_load_shape",)),
    StageSpec("segment-train", "gridpersona.stages_segment:run_segment_train",
              inputs=("silver.daily_load_shape",), outputs=("gold.segment_model",)),
    StageSpec("segment-assign", "gridpersona.stages_segment:run_segment_assign",
              inputs=("silver.daily_load_shape", "gold.segment_model", _ARCHIVE), outputs=("gold.customer_segments",)),
    StageSpec("tags", "gridpersona.stages_tags:run_tags",
              inputs=("gold.customer_segments", "silver.daily_load_shape", _ARCHIVE, *_TAG_SOURCES),
              outputs=("gold.customer_tags", "gold.tag_catalog")),
    StageSpec("campaigns", "gridpersona.stages_campaigns:run_campaigns",
              inputs=("gold.customer_tags", "bronze.contact_history"), outputs=("gold.campaign_targets",)),
    StageSpec("evaluate", "gridpersona.stages_campaigns:run_evaluate",
              inputs=("gold.campaign_targets", "bronze.campaign_response"), outputs=("gold.campaign_evaluation",)),
    StageSpec("profile", "gridpersona.stages_segment:run_profile",
              inputs=("gold.customer_segments", "gold.segment_model", "silver.daily_load_shape", "gold.customer_tags",
                      "gold.tag_catalog"),
              outputs=("gold.segment_profile", "gold.segment_tag_profile", "gold.consumption_price_quadrant")),
)
STAGE_ORDER = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def stage_spec(name: str) -> StageSpec:
    return _BY_NAME[name]


def stage_functions() -> dict[str, Callable[[StageContext], StageResult]]:
    return {s.name: s.load() for s in STAGES}


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
    ctx = StageContext(settings, spark, lake, as_of, window_days or settings.pipeline.window_days)
    note = absent_inputs_note(lake)
    if note:  # once per run, not per stage
        log.warning(note)
    results = []
    for name in names:
        spec = _BY_NAME[name]
        results.append((name, run_stage(name, spec.load(), ctx, outputs=spec.outputs, inputs=spec.inputs)))
    return results
