"""profile: gold.customer_segments (as-of) + silver.daily_load_shape (window) -> gold.segment_profile, the
group portraits of gold.customer_tags (gold.segment_tag_profile, gold.consumption_price_quadrant) and the
association rules between tag values (gold.tag_association_rules)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from gridpersona.contracts.segments import CUSTOMER_SEGMENTS, SEGMENT_PROFILE
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.contracts.tags import (CONSUMPTION_PRICE_QUADRANT, CUSTOMER_TAGS, SEGMENT_TAG_PROFILE,
                                        TAG_ASSOCIATION_RULES, TAG_CATALOG)
from gridpersona.lake import check_schema
from gridpersona.segment.tables import meter_load_summary, segment_profile
from gridpersona.stages.runner import StageContext, StageResult
from gridpersona.stages.segment_common import fmt, model_table
from gridpersona.transform import tag_rules as TR
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
    versions = sorted({r["model_version"] for r in rows})
    write_tag_rules(ctx, summary, result, model_version=versions[-1] if len(versions) == 1 else None)
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


# Load summary columns (segment.tables.meter_load_summary) a band may name besides numeric tags.
SUMMARY_FEATURES = ("daily_kwh", "peak_share", "flat_share", "valley_share", "load_factor", "weekend_ratio")


def write_tag_rules(ctx: StageContext, meter_summary: DataFrame, result: StageResult, *,
                    model_version: str | None) -> None:
    """gold.tag_association_rules for the as-of (config ``association_rules``): FPGrowth over one basket of tag
    items per customer of gold.customer_tags, banded load figures from ``meter_summary``; replaced for the as-of.
    Skipped, with a note, when disabled or when the tags stage has not run for the as-of."""
    cfg, lake, as_of = ctx.settings.association_rules, ctx.lake, ctx.as_of
    if not cfg.enabled:
        result.notes.append("association rules: off (association_rules.enabled false)")
        return
    catalog = ([r for r in lake.read_arrow(TAG_CATALOG.name).to_pylist() if r["as_of"] == as_of]
               if lake.exists(TAG_CATALOG.name) and lake.exists(CUSTOMER_TAGS.name) else [])
    if not catalog:
        result.notes.append(f"no {CUSTOMER_TAGS.name} for {as_of}: association rules skipped (run tags first)")
        return
    tags = lake.read(CUSTOMER_TAGS.name).filter(F.col("as_of") == F.lit(as_of))
    types = {f.name: f.dataType.typeName() for f in tags.schema.fields}
    items = _rule_tags(cfg.tags, catalog, types)
    frame = tags.join(meter_summary.select("meter_id", *[f for f in SUMMARY_FEATURES if f not in types]),
                      "meter_id", "left")
    bands = [b.feature for b in cfg.bands]
    for f in bands:
        if f not in SUMMARY_FEATURES and types.get(f) not in ("integer", "long", "double", "float", "short"):
            raise ValueError(f"association_rules.bands: feature '{f}' is neither a load summary column "
                             f"({', '.join(SUMMARY_FEATURES)}) nor a numeric tag of conf/tags.yaml")
    cuts, band_notes = {}, []
    if bands:
        stats = TR.band_stats(frame, bands).first()
        for b in cfg.bands:
            known, tertiles = stats[f"{b.feature}__known"], stats[f"{b.feature}__tertiles"]
            if b.cuts is not None:
                cuts[b.feature] = (b.cuts[0], b.cuts[1])
            elif tertiles is not None and tertiles[0] < tertiles[1]:
                cuts[b.feature] = (tertiles[0], tertiles[1])
            else:
                band_notes.append(f"{b.feature}: not banded ({known:,} known values, tertiles do not separate)")
                continue
            band_notes.append(f"{b.feature} known for {known:,}")
    baskets = TR.basket_items(frame, items, cuts, false_items=cfg.false_items).cache()
    try:
        n, with_items, mean_items = baskets.agg(F.count(F.lit(1)), F.count(F.when(F.size("items") > 0, 1)),
                                                F.avg(F.size("items"))).first()
        if not n:
            result.notes.append(f"{CUSTOMER_TAGS.name} has no customers for {as_of}: association rules skipped")
            return
        params = TR.RuleParams(min_support=cfg.min_support, min_confidence=cfg.min_confidence, min_lift=cfg.min_lift,
                               max_antecedent_items=cfg.max_antecedent_items, max_rules=cfg.max_rules,
                               min_improvement=cfg.min_improvement, partitions=cfg.partitions)
        rules, _ = TR.mine_rules(baskets, n, params)
        version = catalog[0]["catalog_version"]
        out = rules.select(
            F.lit(as_of).cast("date").alias("as_of"), F.col("rule_rank").cast("int").alias("rule_rank"),
            "antecedent", "consequent", "support", "confidence", "lift", "consequent_support", "n_customers",
            "antecedent_count", "consequent_count", "rule_count",
            F.lit(TR.describe_bands(cuts)).cast("string").alias("item_bands"),
            F.lit(version).alias("tag_catalog_version"), F.lit(model_version).cast("string").alias("model_version"))
        check_schema(TAG_ASSOCIATION_RULES.name, TAG_ASSOCIATION_RULES.schema, out.schema)
        written = lake.replace(out, TAG_ASSOCIATION_RULES, where={"as_of": as_of}).rows
    finally:
        baskets.unpersist()
    result.outputs[TAG_ASSOCIATION_RULES.name] = written
    bands_text = TR.describe_bands(cuts)
    result.notes.append(
        f"association rules: {n:,} customers ({with_items / n:.1%} with a known item, {mean_items or 0:.1f} items on "
        f"average; unknown values give no item), {written:,} rules kept (support >= {cfg.min_support:.1%}, "
        f"confidence >= {cfg.min_confidence:.0%}, lift >= {cfg.min_lift:g}, <= {cfg.max_antecedent_items} "
        f"antecedent items improving on shorter ones by {cfg.min_improvement:g}, top {cfg.max_rules})"
        + (f"; bands {bands_text}" if bands_text else "") + (f" ({', '.join(band_notes)})" if band_notes else ""))
    if written:
        top = sorted((r for r in lake.read_arrow(TAG_ASSOCIATION_RULES.name).to_pylist() if r["as_of"] == as_of),
                     key=lambda r: r["rule_rank"])[:3]
        for r in top:
            result.notes.append(f"rule {r['rule_rank']}: {', '.join(r['antecedent'])} -> {', '.join(r['consequent'])} "
                                f"(support {r['support']:.1%}, confidence {r['confidence']:.0%}, lift {r['lift']:.2f})")


def _rule_tags(configured: list[str] | None, catalog: list[dict], types: dict[str, str]) -> list[tuple[str, str]]:
    """(column, boolean|string) of the tags whose values are items: ``configured`` (any boolean or string column
    of gold.customer_tags), or every boolean and string tag of the catalog in catalog order."""
    if configured is None:
        return [(r["code"], r["value_type"]) for r in sorted(catalog, key=lambda r: r["position"])
                if r["value_type"] in ("boolean", "string")]
    kinds = {"boolean": "boolean", "string": "string"}
    bad = [c for c in configured if kinds.get(types.get(c, "")) is None]
    if bad:
        raise ValueError(f"association_rules.tags: {', '.join(map(repr, bad))} not a boolean or string column of "
                         f"{CUSTOMER_TAGS.name} (numeric tags go in association_rules.bands)")
    return [(c, kinds[types[c]]) for c in configured]


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def _fmt2(x) -> str:
    return "-" if x is None else f"{x:.2f}"
