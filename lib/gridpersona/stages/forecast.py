"""The forecast stage: monthly kWh per segment and region, forecast and backtested against seasonal-naive.

``forecast``  bronze.billing_payment (optional: absent, no group and no row), gold.customer_segments (the
              as-of's; absent: region and all levels only), bronze.customer_archive (region),
              bronze.weather (optional: absent, the naive_yoy fallback)
              -> gold.segment_forecast (partition as_of)

Bills of the months before the as-of's month are used. Two Spark aggregations (:mod:`gridpersona.transform.
forecast`) bring the bills and the weather to a few thousand rows; the per-group regressions run on the
driver. The run replaces its as-of partition, so a rerun writes the same rows.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd
from pyspark.sql import functions as F

from gridpersona.contracts.bronze import BILLING_PAYMENT, CUSTOMER_ARCHIVE, WEATHER
from gridpersona.contracts.forecast import SEGMENT_FORECAST
from gridpersona.contracts.segments import CUSTOMER_SEGMENTS
from gridpersona.lake import check_schema
from gridpersona.stages.inputs import read_bronze, read_bronze_or_empty
from gridpersona.stages.runner import StageContext, StageResult
from gridpersona.transform import forecast as FC

def run_forecast(ctx: StageContext) -> StageResult:
    """bills + segments + archive + weather -> gold.segment_forecast (as-of partition)."""
    s, lake, spark = ctx.settings, ctx.lake, ctx.spark
    params = s.forecast
    before = ctx.as_of.replace(day=1)
    result = StageResult()

    billing = read_bronze_or_empty(lake, BILLING_PAYMENT.name)
    archive = read_bronze(lake, CUSTOMER_ARCHIVE.name)
    if lake.exists(CUSTOMER_SEGMENTS.name):
        segments = lake.read(CUSTOMER_SEGMENTS.name).filter(F.col("as_of") == F.lit(ctx.as_of))
    else:
        segments = spark.createDataFrame([], CUSTOMER_SEGMENTS.schema)
    has_weather = lake.exists(WEATHER.name)

    # Both are bounded (segments x regions x months; regions x days): fine on the driver.
    cells = FC.group_month_kwh(billing, archive, segments, before).toPandas()
    if has_weather:
        weather = FC.daily_temperatures(read_bronze(lake, WEATHER.name), ctx.as_of).toPandas()
    else:
        weather = pd.DataFrame(columns=list(FC.WEATHER_COLUMNS))

    rows = FC.forecast_rows(cells, weather, params, ctx.as_of)
    names = SEGMENT_FORECAST.column_names
    frame = spark.createDataFrame([tuple(r[c] for c in names) for r in rows], SEGMENT_FORECAST.schema)
    check_schema(SEGMENT_FORECAST.name, SEGMENT_FORECAST.schema, frame.schema)
    result.outputs[SEGMENT_FORECAST.name] = lake.replace(frame, SEGMENT_FORECAST, where={"as_of": ctx.as_of}).rows

    # Notes from the rows just built (no Spark job): coverage, methods, and the backtest comparison.
    result.rows_in = int(cells["n_customers"].sum()) if not cells.empty else 0
    if cells.empty:
        result.notes.append(f"forecast: no bill before {before} ({BILLING_PAYMENT.name} "
                            f"{'is absent' if not lake.exists(BILLING_PAYMENT.name) else 'has none'}): no group")
        return result
    months = sorted(cells["month"].unique())
    unsegmented = cells[cells["segment_id"].isna()]
    last_unseg = int(unsegmented.loc[unsegmented["month"] == months[-1], "n_customers"].sum())
    summaries = [r for r in rows if r["kind"] == "summary"]
    methods = Counter(r["method"] or f"none ({r['reason']})" for r in summaries)
    per_level = Counter(r["level"] for r in summaries)
    result.notes.append(
        f"forecast: bills {months[0]:%Y-%m} .. {months[-1]:%Y-%m} ({len(months)} months), {len(summaries)} groups "
        f"({', '.join(f'{lv} {per_level[lv]}' for lv in params.levels)}); "
        f"forecast {params.horizon_months} months by " + ", ".join(f"{m} {n}" for m, n in sorted(methods.items()))
        + ("" if has_weather else f" ({WEATHER.name} is absent: no degree-days, fallback naive_yoy)")
        + (f"; {last_unseg:,} customers billed in {months[-1]:%Y-%m} have no segment for {ctx.as_of}: "
           f"in the region and all totals only" if last_unseg else ""))
    held = Counter((r["level"], r["segment_id"], r["region"]) for r in rows if r["kind"] == "backtest")
    result.notes.append(f"backtest {max(held.values(), default=0)} months (up to {params.backtest_months}), "
                        + "; ".join(FC.overall_line(rows, level) for level in params.levels))
    return result
