"""Stage `shapes`: silver.ami_clean -> silver.daily_load_shape (one row per meter and local day).

Writes its output idempotently for the run's window (date partitions replaced).
"""

from __future__ import annotations

from pyspark.sql import functions as F

from gridpersona.stages.clean import AMI_CLEAN
from gridpersona.stages.runner import StageContext, StageResult, calendar_frame
from gridpersona.transform import shapes as S

DAILY_LOAD_SHAPE = "silver.daily_load_shape"


def run_shapes(ctx: StageContext) -> StageResult:
    """silver.ami_clean (window) -> silver.daily_load_shape (one row per meter and local day)."""
    s = ctx.settings
    first, last = ctx.window
    clean = ctx.lake.read(AMI_CLEAN).filter(F.col("date").between(first, last))
    shapes = S.daily_load_shapes(clean, calendar_frame(ctx), interval_minutes=s.ami.interval_minutes,
                                 tariff=s.tariff, normalization=s.shapes.normalization)
    written = ctx.lake.replace(shapes, DAILY_LOAD_SHAPE, where={"date": ctx.window_dates}, partition_by=["date"]).rows
    rows_in = ctx.lake.partition_rows(AMI_CLEAN, "date", ctx.window_dates) if not s.shapes.count_input else None
    if rows_in is None:
        rows_in = int(clean.count())
    return StageResult(rows_in=rows_in, outputs={DAILY_LOAD_SHAPE: written})
