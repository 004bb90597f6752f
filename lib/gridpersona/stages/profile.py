"""profile: gold.customer_segments (as-of) + silver.daily_load_shape (window) -> gold.segment_profile, and the
group portraits of gold.customer_tags (gold.segment_tag_profile, gold.consumption_price_quadrant)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from gridpersona.contracts.segments import CUSTOMER_SEGMENTS, SEGMENT_PROFILE
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.contracts.tags import CONSUMPTION_PRICE_QUADRANT, CUSTOMER_TAGS, SEGMENT_TAG_PROFILE, TAG_CATALOG
from gridpersona.lake import check_schema
from gridpersona.segment.tables import meter_load_summary, segment_profile
from gridpersona.stages.runner import StageContext, StageResult
from gridpersona.stages.segment_common import fmt, model_table
from gridpersona.transform import tags as TG

QUADRANT_TAGS = ("consumption_level", "price_sensitivity", "ev_owner", "tariff_type")


def run_profile(ctx: StageContext) -> StageResult:
    """gold.customer_segments (as-of) + silver.daily_load_shape (window) -> gold.segment_profile (as-of)."""
    s, lake = ctx.settings, ctx.lake
    first, last = ctx.window
    if not lake.exists(CUSTOMER_SEGMENTS.name):
        raise RuntimeError(f"profile: {CUSTOMER_SEGMENTS.name} not found; run segment-assign --as-of {ctx.as_of} first")
    segments = lake.read(CUSTOMER_SEGMENTS.name).filter(F.col("as_of") == F.lit(ctx.as_of))
    if not segments.limit(1).count():
        raise RuntimeError(f"profile: {CUSTOMER_SEGMENTS.name} has no rows for as-of {ctx.as_of}; run segment-assign "
                           f"--as-of {ctx.as_of} first")
    model = ctx.spark.createDataFrame(
        [(r["model_version"], r["segment_id"], r["centroid"]) for r in model_table(lake)],
        "model_version string, segment_id int, centroid array<double>")
    daily = (lake.read(DAILY_LOAD_SHAPE.name).filter(F.col("date").between(first, last))
             .select("meter_id", "completeness", "is_weekend", "daily_kwh", "peak_share", "flat_share",
                     "valley_share", "load_factor"))
    summary = meter_load_summary(daily, min_completeness=s.segment.min_completeness)
    profile = segment_profile(segments, summary, model, as_of=ctx.as_of)
    check_schema(SEGMENT_PROFILE.name, SEGMENT_PROFILE.schema, profile.schema)
    written = lake.replace(profile, SEGMENT_PROFILE, where={"as_of": ctx.as_of}).rows
    rows = [r for r in lake.read_arrow(SEGMENT_PROFILE.name).to_pylist() if r["as_of"] == ctx.as_of]
    rows.sort(key=lambda r: (r["model_version"], r["segment_id"]))
    meters = sum(r["meters"] for r in rows)
    result = StageResult(rows_in=meters, outputs={SEGMENT_PROFILE.name: written})
    for r in rows:
        result.notes.append(
            f"segment {r['segment_id']} {r['segment_label']} {r['segment_name_zh']}: {r['meters']:,} meters "
            f"({r['share']:.1%}), {fmt(r['mean_daily_kwh'])} kWh/day, peak {_pct(r['peak_share'])}, "
            f"valley {_pct(r['valley_share'])}, load factor {_fmt2(r['load_factor'])}")
    write_tag_portraits(ctx, summary, result)
    return result


def write_tag_portraits(ctx: StageContext, meter_summary: DataFrame, result: StageResult) -> None:
    """Group portraits from gold.customer_tags of the as-of (seed 000 §2.2): gold.segment_tag_profile and
    gold.consumption_price_quadrant, replaced for the as-of. Skipped, with a note, when the tags stage has
    not run for it."""
    lake, as_of = ctx.lake, ctx.as_of
    if not (lake.exists(CUSTOMER_TAGS.name) and lake.exists(TAG_CATALOG.name)):
        result.notes.append(f"no {CUSTOMER_TAGS.name}: tag portraits skipped (run tags --as-of {as_of} first)")
        return
    catalog = [r for r in lake.read_arrow(TAG_CATALOG.name).to_pylist() if r["as_of"] == as_of]
    if not catalog:
        result.notes.append(f"{CUSTOMER_TAGS.name} has no tags for {as_of}: tag portraits skipped (run tags first)")
        return
    tags = lake.read(CUSTOMER_TAGS.name).filter(F.col("as_of") == F.lit(as_of))
    # Categorical tags only (a continuous double tag has no distribution to tabulate), in catalog order.
    profiled = [(r["code"], r["value_type"]) for r in sorted(catalog, key=lambda r: r["position"])
                if r["value_type"] != "double"]
    portraits = TG.segment_tag_profile(tags, profiled, as_of=as_of)
    check_schema(SEGMENT_TAG_PROFILE.name, SEGMENT_TAG_PROFILE.schema, portraits.schema)
    result.outputs[SEGMENT_TAG_PROFILE.name] = lake.replace(portraits, SEGMENT_TAG_PROFILE,
                                                            where={"as_of": as_of}).rows
    if all(c in tags.columns for c in QUADRANT_TAGS):
        quadrant = TG.consumption_price_quadrant(tags, meter_summary.select("meter_id", "daily_kwh"), as_of=as_of)
        check_schema(CONSUMPTION_PRICE_QUADRANT.name, CONSUMPTION_PRICE_QUADRANT.schema, quadrant.schema)
        result.outputs[CONSUMPTION_PRICE_QUADRANT.name] = lake.replace(quadrant, CONSUMPTION_PRICE_QUADRANT,
                                                                       where={"as_of": as_of}).rows
        for r in sorted((r for r in lake.read_arrow(CONSUMPTION_PRICE_QUADRANT.name).to_pylist()
                         if r["as_of"] == as_of and r["quadrant"]), key=lambda r: (r["customer_type"], r["quadrant"])):
            result.notes.append(f"quadrant {r['customer_type']} {r['quadrant']} {r['quadrant_zh']}: "
                                f"{r['customers']:,} customers ({r['share']:.1%})")
    else:
        result.notes.append(f"consumption x price quadrant skipped: {CUSTOMER_TAGS.name} lacks one of {QUADRANT_TAGS}")


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def _fmt2(x) -> str:
    return "-" if x is None else f"{x:.2f}"
