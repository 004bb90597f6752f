"""The tags stage: the feature view, all tags in one select, the catalog.

``tags``  gold.customer_segments (as-of), silver.daily_load_shape (window), bronze customer_archive /
          billing_payment / service_interaction / contact_history / campaign_response
          -> gold.customer_tags (partition as_of), gold.tag_catalog (partition as_of),
             gold.customer_portrait (partition as_of)

The feature view is computed once (persisted for the run): the tags are one select
over it and the portrait numbers another, so the portrait costs one more select
and write, not another pass over the daily load shapes.

Idempotent per as-of: a rerun replaces exactly the as-of's partitions of the three
tables with the same rows (same inputs, same conf/tags.yaml).
"""

from __future__ import annotations

import logging

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from gridpersona.stages.calendar import holiday_calendar, read_weather
from gridpersona.stages.inputs import read_bronze, read_bronze_or_empty
from gridpersona.lake import check_schema
from gridpersona.stages.runner import StageContext, StageResult
from gridpersona.contracts.advice import NEIGHBOUR_COMPARISON, RATE_COMPARISON
from gridpersona.contracts.bronze import CUSTOMER_ARCHIVE, WEATHER
from gridpersona.contracts.segments import CUSTOMER_SEGMENTS
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.contracts.tags import CUSTOMER_PORTRAIT, CUSTOMER_TAGS, TAG_CATALOG
from gridpersona.transform import features as FV
from gridpersona.transform import portrait as PT
from gridpersona.transform import tags as TG

log = logging.getLogger("gridpersona")


def absent_sources(sources: dict[str, DataFrame], archive: DataFrame) -> set[str]:
    """The sources with no data for this run, for ``customer_feature_view(absent=...)``.

    A table of ``sources`` with no rows (missing tables are read as empty frames) is absent; an archive
    column of ``FV.ARCHIVE_DEFAULTED`` without a single value is absent too (a minimal archive), as
    ``bronze.customer_archive.<column>``. One small job per table, one over the archive.
    """
    absent = {name for name, df in sources.items() if df.isEmpty()}
    counts = archive.agg(*[F.count(F.col(c)).alias(c) for c in FV.ARCHIVE_DEFAULTED]).first()
    absent |= {f"bronze.customer_archive.{c}" for c in FV.ARCHIVE_DEFAULTED if counts[c] == 0}
    return absent


def build_feature_view(ctx: StageContext, notes: list[str] | None = None) -> DataFrame:
    """view.customer_features for the run's as-of and window (read through ctx.lake; nothing written).

    The window's holiday periods (:func:`gridpersona.stages.calendar.holiday_calendar`) are skipped by the
    vacancy runs, and bronze.weather (when present) gives the temperature slopes; ``notes``, if given,
    receives one line on each."""
    s, lake = ctx.settings, ctx.lake
    first, last = ctx.window
    for table, stage in ((CUSTOMER_SEGMENTS.name, "segment-assign"), (DAILY_LOAD_SHAPE.name, "shapes")):
        if not lake.exists(table):
            raise RuntimeError(f"tags: {table} not found under {lake.root}; run `gridpersona run {stage} "
                               f"--as-of {ctx.as_of}` first")
    segments = lake.read(CUSTOMER_SEGMENTS.name).filter(F.col("as_of") == F.lit(ctx.as_of))
    daily = (lake.read(DAILY_LOAD_SHAPE.name).filter(F.col("date").between(first, last))
             .select("meter_id", "date", "slot_kwh", "daily_kwh", "completeness", "peak_share", "flat_share",
                     "valley_share", "load_factor", "max_kwh", "is_weekend"))
    archive = read_bronze(lake, CUSTOMER_ARCHIVE.name)
    sources = {t: read_bronze_or_empty(lake, t) for t in FV.OPTIONAL_SOURCES}
    absent = absent_sources(sources, archive)
    holidays = holiday_calendar(lake, s, first, last)
    weather = read_weather(lake)
    if notes is not None:
        notes.append(holidays.note)
        notes.append(f"weather: {WEATHER.name} read, temperature slopes fitted where a region has "
                     f"{s.tags.features.weather_min_days}+ complete days" if weather is not None else
                     f"weather: {WEATHER.name} absent, temperature features null (weather_reason no_weather)")
    if absent:
        log.warning("[tags] no data in %s: their features and the tags that need them are unknown (null)",
                    ", ".join(sorted(absent)))
    return FV.customer_feature_view(
        archive, segments, daily, *[sources[t] for t in FV.OPTIONAL_SOURCES],
        as_of=ctx.as_of, interval_minutes=s.ami.interval_minutes, time_zone=s.ami.time_zone, params=s.tags.features,
        absent=absent, advice=read_advice(ctx), weather=weather, holiday_dates=holidays.period_dates())


def read_advice(ctx: StageContext) -> DataFrame | None:
    """The advice stage's rows of the as-of as per-customer view columns; a table the advice stage has not
    written for the as-of leaves its columns null (said once in the log)."""
    frames = {}
    for spec in (RATE_COMPARISON, NEIGHBOUR_COMPARISON):
        rows = (ctx.lake.read(spec.name).filter(F.col("as_of") == F.lit(ctx.as_of))
                if ctx.lake.exists(spec.name) else None)
        if rows is None or rows.isEmpty():
            log.warning("[tags] %s has no rows for %s (run advice first): the tags that need it are unknown (null)",
                        spec.name, ctx.as_of)
            rows = None
        frames[spec.name] = rows
    return FV.customer_advice_features(frames[RATE_COMPARISON.name], frames[NEIGHBOUR_COMPARISON.name])


def tag_value_counts(customer_tags: DataFrame, codes_types: list[tuple[str, str]]) -> dict[str, dict]:
    """{tag: {value text or None: customers}} over a (small, one as-of) customer_tags frame; one job."""
    pairs = F.array(*[F.struct(F.lit(c).alias("tag"), TG._as_text(c, t).alias("value")) for c, t in codes_types])
    rows = (customer_tags.select(F.explode(pairs).alias("p")).groupBy("p.tag", "p.value").count().collect())
    out: dict[str, dict] = {c: {} for c, _ in codes_types}
    for r in rows:
        out[r["tag"]][r["value"]] = int(r["count"])
    return out


def run_tags(ctx: StageContext) -> StageResult:
    """Feature view -> gold.customer_tags (one row per archive customer), gold.tag_catalog and
    gold.customer_portrait (one row per archive customer), for the as-of."""
    s, lake = ctx.settings, ctx.lake
    tags = s.tags
    if not tags.definitions:
        raise RuntimeError("tags: no tag definitions (conf/tags.yaml missing or empty)")
    TG.check_with_spark(ctx.spark, tags)  # analysis only: fails naming the tag before any job runs
    version = TG.catalog_version(tags)

    # Both gold.customer_tags and gold.customer_portrait select from the view: computed once.
    input_notes: list[str] = []
    view = build_feature_view(ctx, input_notes).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        out = TG.compile_tags(view, tags, version)
        expected = TG.customer_tags_schema(tags)
        check_schema(CUSTOMER_TAGS.name, expected, out.schema)
        portrait = PT.customer_portrait(view, out)
        check_schema(CUSTOMER_PORTRAIT.name, CUSTOMER_PORTRAIT.schema, portrait.schema)
        lake.check_stored_schema(CUSTOMER_TAGS.name, expected,
                                 f"conf/tags.yaml now defines other tag columns (or types) than the table holds; "
                                 f"migrate {CUSTOMER_TAGS.name} (e.g. move it aside and rerun the as-of dates you need)")
        lake.check_stored_schema(TAG_CATALOG.name, TAG_CATALOG.schema,
                                 f"{TAG_CATALOG.name} was written by an older tags stage (this one adds open_values, "
                                 f"needs, coverage); move it aside and rerun the as-of dates you need")
        lake.check_stored_schema(CUSTOMER_PORTRAIT.name, CUSTOMER_PORTRAIT.schema,
                                 f"{CUSTOMER_PORTRAIT.name} was written with other columns than its contract; move "
                                 f"it aside and rerun the as-of dates you need")
        written = lake.replace(out, CUSTOMER_TAGS, where={"as_of": ctx.as_of}).rows
        portrayed = lake.replace(portrait, CUSTOMER_PORTRAIT, where={"as_of": ctx.as_of}).rows
    finally:
        view.unpersist()

    written_tags = lake.read(CUSTOMER_TAGS.name).filter(F.col("as_of") == F.lit(ctx.as_of))
    codes = [t.code for t in tags.definitions]
    coverage = TG.tag_coverage(written_tags, codes).first().asDict()
    catalog = ctx.spark.createDataFrame(TG.catalog_rows(tags, ctx.as_of, coverage), TAG_CATALOG.schema)
    lake.replace(catalog, TAG_CATALOG, where={"as_of": ctx.as_of})

    result = StageResult(rows_in=written, outputs={CUSTOMER_TAGS.name: written, TAG_CATALOG.name: len(tags.definitions),
                                                   CUSTOMER_PORTRAIT.name: portrayed})
    result.notes.append(f"{written:,} customers tagged with {len(tags.definitions)} tags, catalog version {version}")
    result.notes.append(f"{portrayed:,} customer portraits (numbers) written")
    result.notes.extend(input_notes)
    categorical = {t.code: t.type for t in tags.definitions if t.type in ("string", "boolean")}
    counts = tag_value_counts(written_tags, list(categorical.items()))
    for code in codes:
        cov = coverage.get(code)
        line = f"{code}: coverage {'n/a' if cov is None else f'{cov:.0%}'}"
        if code in categorical:
            values = sorted(counts[code].items(), key=lambda kv: (-kv[1], str(kv[0])))
            line += " | " + ", ".join(f"{'unknown' if v is None else v} {n:,}" for v, n in values)
        result.notes.append(line)
    return result
