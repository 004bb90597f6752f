"""The tag engine: conf/tags.yaml definitions -> one select over the feature view; group portraits.

``compile_tags`` turns every definition into a column of ONE select over
``view.customer_features`` (a tag may use tags defined before it: Spark resolves
them as lateral column aliases of that select). Each value is checked against the
tag's allowed values inside the same select (``raise_error``), so a definition
that yields an undeclared value fails the job and nothing is written.

``check_with_spark`` runs Spark's analyzer over the compiled select on an empty
frame of the view's schema: types and functions are checked with a session but
without running a job. Config load already parsed every expression and checked
its columns without Spark (:mod:`gridpersona.config.expressions`).
"""

from __future__ import annotations

import hashlib
import json

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from gridpersona.config import TagDefinition, TagsConfig
from gridpersona.contracts.tags import (CUSTOMER_TAGS_CONTEXT, FEATURE_VIEW, SOURCE_MARKERS, TAG_CATALOG_VERSION,
                                        TAG_TYPES, customer_tags_spec)


class TagDefinitionError(ValueError):
    """A tag definition that Spark cannot compile; the message names the tag."""


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]


def catalog_version(tags: TagsConfig) -> str:
    """Hash of every definition (taxonomy, feature parameters, tags in order): changes when any changes."""
    return _hash(tags.model_dump(mode="json"))


def definition_hash(tag: TagDefinition) -> str:
    return _hash(tag.model_dump(mode="json"))


def _type_ok(declared: str, got: T.DataType) -> bool:
    if isinstance(got, T.NullType):
        return True
    if declared == "string":
        return isinstance(got, T.StringType)
    if declared == "boolean":
        return isinstance(got, T.BooleanType)
    if declared == "int":
        return isinstance(got, (T.ByteType, T.ShortType, T.IntegerType, T.LongType))
    return isinstance(got, T.NumericType)


def needs_known(tag: TagDefinition) -> Column | None:
    """True where every source and column of ``tag.needs`` has data for the customer (None: needs nothing).

    A source is known through its marker column (``contracts.tags.SOURCE_MARKERS``), null exactly where the
    source has no data for the customer; a column or earlier tag must be non-null.
    """
    cols = list(dict.fromkeys(SOURCE_MARKERS.get(n, n) for n in tag.needs))
    if not cols:
        return None
    known = F.expr(f"`{cols[0]}` IS NOT NULL")
    for c in cols[1:]:
        known = known & F.expr(f"`{c}` IS NOT NULL")
    return known


def _tag_column(tag: TagDefinition) -> Column:
    value = F.expr(tag.expr).cast(TAG_TYPES[tag.type])
    known = needs_known(tag)
    if known is not None:
        value = F.when(known, value)
    if tag.values and not tag.open_values:
        allowed = ", ".join(tag.values)
        bad = F.raise_error(F.concat(F.lit(f"tag '{tag.code}': value '"), value,
                                     F.lit(f"' is not one of its values [{allowed}] (customer "),
                                     F.col("customer_id"), F.lit("); fix its expression in conf/tags.yaml")))
        value = F.when(value.isNull() | value.isin(*tag.values), value).otherwise(bad)
    return value.alias(tag.code)


def compile_tags(view: DataFrame, tags: TagsConfig, version: str | None = None) -> DataFrame:
    """view.customer_features -> gold.customer_tags rows: the context columns, one column per tag, the version.

    One select over ``view``; tags in definition order.
    """
    version = version or catalog_version(tags)
    return view.select(
        *[F.col(c) for c in CUSTOMER_TAGS_CONTEXT],
        *[_tag_column(t) for t in tags.definitions],
        F.lit(version).alias(TAG_CATALOG_VERSION),
    )


def customer_tags_schema(tags: TagsConfig) -> T.StructType:
    """The schema of gold.customer_tags for these definitions (its contract: :func:`customer_tags_spec`)."""
    return customer_tags_spec(tags.definitions).schema


def check_with_spark(spark: SparkSession, tags: TagsConfig) -> None:
    """Analyze every tag expression with Spark (no job runs); TagDefinitionError naming the tag otherwise.

    Checks what the config-load parse cannot: that functions exist, argument types
    fit, and each expression's type matches the tag's declared ``type``.
    """
    empty = spark.createDataFrame([], FEATURE_VIEW.schema)
    raw = [F.expr(t.expr).alias(t.code) for t in tags.definitions]
    try:
        schema = empty.select("*", *raw).schema
    except Exception:
        # Find the first tag that fails, with the tags before it as lateral aliases.
        for i, tag in enumerate(tags.definitions):
            try:
                empty.select("*", *raw[: i + 1]).schema
            except Exception as exc:
                first = str(exc).strip().splitlines()[0][:400]
                raise TagDefinitionError(f"conf/tags.yaml: tag '{tag.code}': Spark cannot compile its expression: "
                                         f"{first}") from None
        raise
    types = {f.name: f.dataType for f in schema.fields}
    problems = [f"tag '{t.code}': expression gives {types[t.code].simpleString()}, declared type {t.type}"
                for t in tags.definitions if not _type_ok(t.type, types[t.code])]
    if problems:
        raise TagDefinitionError("conf/tags.yaml: " + "; ".join(problems))


def catalog_rows(tags: TagsConfig, as_of, coverage: dict[str, float | None] | None = None) -> list[tuple]:
    """gold.tag_catalog rows (in TAG_CATALOG column order) for these definitions.

    ``coverage``: tag code -> share of the as-of's customers with a known value (see :func:`tag_coverage`);
    a tag missing from it gets null.
    """
    version = catalog_version(tags)
    coverage = coverage or {}
    rows = []
    for i, t in enumerate(tags.definitions, start=1):
        l1 = tags.taxonomy[t.level1]
        l2 = l1.level2[t.level2]
        cov = coverage.get(t.code)
        rows.append((as_of, version, i, t.code, t.zh, t.en, t.level1, l1.zh, l1.en, t.level2, l2.zh, l2.en, t.type,
                     list(t.values), bool(t.open_values), list(t.needs), None if cov is None else float(cov),
                     " ".join(t.expr.split()), t.definition, definition_hash(t)))
    return rows


def tag_coverage(customer_tags: DataFrame, codes: list[str]) -> DataFrame:
    """One row: per tag code, the share of ``customer_tags`` rows whose tag is known (non-null); null if no rows."""
    n = F.count(F.lit(1))
    return customer_tags.agg(*[F.when(n > 0, F.count(F.col(c)) / n).cast("double").alias(c) for c in codes])


# ------------------------------------------------------------------ group portraits (seed 000 §2.2)

ALL_SEGMENT_ID, UNSEGMENTED_ID = -1, -2


def _as_text(c: str, dtype: str) -> Column:
    col = F.col(c)
    if dtype == "boolean":
        return F.when(col, F.lit("true")).when(~col, F.lit("false"))
    return col.cast("string")


def segment_tag_profile(customer_tags: DataFrame, tags: list[tuple[str, str]], *, as_of) -> DataFrame:
    """gold.customer_tags rows of one as-of -> gold.segment_tag_profile rows.

    ``tags``: (code, value type) of the tags to profile (continuous ``double`` tags
    are left out by the caller). For each segment (plus ``-1``/``all``, the whole
    population) and tag: customers per value, share of the segment, the value's
    population share and the lift (share / population share).
    """
    seg_id = F.coalesce(F.col("segment_id"), F.lit(UNSEGMENTED_ID)).cast("int")
    seg_label = F.when(F.col("segment_id").isNull(), F.lit("unsegmented")).otherwise(F.col("segment_label"))
    pairs = F.array(*[F.struct(F.lit(code).alias("tag"), _as_text(code, dtype).alias("value")) for code, dtype in tags])
    long = customer_tags.select(seg_id.alias("segment_id"), seg_label.alias("segment_label"),
                                F.explode(pairs).alias("p")).select("segment_id", "segment_label", "p.tag", "p.value")
    per_seg = long.groupBy("segment_id", "segment_label", "tag", "value").agg(F.count(F.lit(1)).alias("customers"))
    everyone = (long.groupBy("tag", "value").agg(F.count(F.lit(1)).alias("customers"))
                .select(F.lit(ALL_SEGMENT_ID).alias("segment_id"), F.lit("all").alias("segment_label"),
                        "tag", "value", "customers"))
    both = per_seg.unionByName(everyone)
    seg_total = F.sum("customers").over(Window.partitionBy("segment_id", "tag"))
    both = both.withColumn("share", F.col("customers") / seg_total).alias("b")
    population = (everyone.select("tag", "value", (F.col("customers") / F.sum("customers").over(Window.partitionBy("tag")))
                                  .alias("population_share")).alias("p"))
    on = (F.col("b.tag") == F.col("p.tag")) & F.col("b.value").eqNullSafe(F.col("p.value"))
    return (both.join(population, on, "left")
            .select(F.lit(as_of).cast("date").alias("as_of"), F.col("b.segment_id").cast("int").alias("segment_id"),
                    F.col("b.segment_label").alias("segment_label"), F.col("b.tag").alias("tag"),
                    F.col("b.value").alias("value"), F.col("b.customers").cast("long").alias("customers"),
                    F.col("b.share").cast("double").alias("share"),
                    F.col("p.population_share").cast("double").alias("population_share"),
                    F.when(F.col("p.population_share") > 0, F.col("b.share") / F.col("p.population_share"))
                    .cast("double").alias("lift")))


QUADRANTS = {
    ("high", "high"): ("high_use_high_sensitivity", "高用电量—高敏感度"),
    ("high", "low"): ("high_use_low_sensitivity", "高用电量—低敏感度"),
    ("low", "high"): ("low_use_high_sensitivity", "低用电量—高敏感度"),
    ("low", "low"): ("low_use_low_sensitivity", "低用电量—低敏感度"),
}


def consumption_price_quadrant(customer_tags: DataFrame, meter_kwh: DataFrame, *, as_of) -> DataFrame:
    """gold.customer_tags rows of one as-of (+ per-meter mean daily kWh) -> gold.consumption_price_quadrant.

    Needs tag columns consumption_level, price_sensitivity, ev_owner and
    tariff_type; ``meter_kwh``: meter_id, daily_kwh (mean over the window's
    complete days). Every (customer type, consumption level, price sensitivity)
    cell present gets a row; the four corner cells carry the seed's quadrant names.
    """
    code = F.lit(None).cast("string")
    zh = F.lit(None).cast("string")
    for (level, sens), (name, name_zh) in QUADRANTS.items():
        hit = (F.col("consumption_level") == level) & (F.col("price_sensitivity") == sens)
        code = F.when(hit, F.lit(name)).otherwise(code)
        zh = F.when(hit, F.lit(name_zh)).otherwise(zh)
    joined = customer_tags.join(meter_kwh, "meter_id", "left")
    cells = joined.groupBy("customer_type", "consumption_level", "price_sensitivity").agg(
        F.count(F.lit(1)).alias("customers"),
        F.avg("daily_kwh").alias("mean_daily_kwh"),
        F.count(F.when(F.col("ev_owner"), F.lit(1))).alias("ev_owners"),
        F.count(F.when(F.col("tariff_type") == "tou", F.lit(1))).alias("tou_tariff"),
    )
    total = F.sum("customers").over(Window.partitionBy("customer_type"))
    return cells.select(
        F.lit(as_of).cast("date").alias("as_of"), "customer_type", "consumption_level", "price_sensitivity",
        code.alias("quadrant"), zh.alias("quadrant_zh"),
        F.col("customers").cast("long").alias("customers"), (F.col("customers") / total).cast("double").alias("share"),
        F.col("mean_daily_kwh").cast("double").alias("mean_daily_kwh"),
        F.col("ev_owners").cast("long").alias("ev_owners"), F.col("tou_tariff").cast("long").alias("tou_tariff"),
    )
