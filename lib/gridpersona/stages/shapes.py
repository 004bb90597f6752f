"""Stage `shapes`: silver.ami_clean -> silver.daily_load_shape (one row per meter and local day).

Writes its output idempotently for the run's dates (``ctx.process_dates``: the window, or the dates an
incremental run planned): exactly those date partitions are replaced. A day's shape reads only that
day's clean rows, so any subset of dates gives the rows a whole-window run gives for them.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from gridpersona.contracts.silver import AMI_CLEAN, DAILY_LOAD_SHAPE
from gridpersona.lake import check_schema
from gridpersona.stages.runner import StageContext, StageResult, calendar_frame
from gridpersona.transform import shapes as S


def run_shapes(ctx: StageContext) -> StageResult:
    """silver.ami_clean (the run's dates) -> silver.daily_load_shape (one row per meter and local day)."""
    s = ctx.settings
    dates = ctx.process_dates
    if not dates:
        return StageResult(notes=["nothing new: no date to write"])
    clean = ctx.lake.read(AMI_CLEAN.name).filter(F.col("date").isin(dates))
    shapes = S.daily_load_shapes(clean, calendar_frame(ctx, dates[0], dates[-1]),
                                 interval_minutes=s.ami.interval_minutes, tariff=s.tariff,
                                 normalization=s.shapes.normalization)
    check_schema(DAILY_LOAD_SHAPE.name, DAILY_LOAD_SHAPE.schema, shapes.schema)
    written = ctx.lake.replace(shapes, DAILY_LOAD_SHAPE, where={"date": dates}).rows
    rows_in = ctx.lake.partition_rows(AMI_CLEAN.name, "date", dates) if not s.shapes.count_input else None
    if rows_in is None:
        rows_in = int(clean.count())
    return StageResult(rows_in=rows_in, outputs={DAILY_LOAD_SHAPE.name: written})
