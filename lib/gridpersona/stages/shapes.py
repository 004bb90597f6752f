"""Stage `shapes`: silver.meter_day_readings -> silver.daily_load_shape (one row per meter and local day).

Reads the clean readings as clean wrote them, one array per meter-day (silver.meter_day_readings), not the
reading rows of silver.ami_clean: no second aggregation of the readings. silver.ami_clean's Delta log still
says which dates to write (an incremental run plans from it) and how many readings they hold.

Writes its output idempotently for the run's dates (``ctx.process_dates``: the window, or the dates an
incremental run planned): exactly those date partitions are replaced. A day's shape reads only that
day's clean rows, so any subset of dates gives the rows a whole-window run gives for them.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from gridpersona.contracts.silver import AMI_CLEAN, DAILY_LOAD_SHAPE, METER_DAY_READINGS
from gridpersona.lake import ArrowRows
from gridpersona.stages.runner import StageContext, StageResult
from gridpersona.transform import shapes as S
from gridpersona.transform.clean import local_calendar


def run_shapes(ctx: StageContext) -> StageResult:
    """silver.meter_day_readings (the run's dates) -> silver.daily_load_shape (one row per meter and local day)."""
    s = ctx.settings
    dates = ctx.process_dates
    if not dates:
        return StageResult(notes=["nothing new: no date to write"])
    if not ctx.lake.exists(METER_DAY_READINGS.name):
        raise RuntimeError(f"shapes: {METER_DAY_READINGS.name} does not exist: run clean for the window first "
                           "(clean writes it since issue 14; a lake cleaned before needs one clean run)")
    days = ctx.lake.read(METER_DAY_READINGS.name).filter(F.col("date").isin(dates))
    params = S.shape_params(local_calendar(dates[0], dates[-1], s.ami.time_zone, s.ami.interval_minutes),
                            interval_minutes=s.ami.interval_minutes, time_zone=s.ami.time_zone, tariff=s.tariff,
                            normalization=s.shapes.normalization)
    # Each task computes its days' rows in numpy and, on the embedded lake, writes them itself; the rows are
    # cast to the contract's schema in the task, so a kernel that drifts from it fails the write.
    shapes = ArrowRows(days.select(*S.SHAPES_INPUT), S.daily_shapes_fn(params), DAILY_LOAD_SHAPE.schema)
    written = ctx.lake.replace(shapes, DAILY_LOAD_SHAPE, where={"date": dates}).rows
    rows_in = ctx.lake.partition_rows(AMI_CLEAN.name, "date", dates) if not s.shapes.count_input else None
    if rows_in is None:  # the readings the days hold
        rows_in = int(days.agg(F.sum("readings")).collect()[0][0] or 0)
    return StageResult(rows_in=rows_in, outputs={DAILY_LOAD_SHAPE.name: written})
