"""Campaign stages: config + lake I/O around :mod:`gridpersona.transform.campaigns` and ``campaign_outcomes``.

``campaigns``  gold.customer_tags (as-of), bronze.contact_history -> gold.campaign_targets (partition as_of)
``evaluate``   gold.campaign_targets (as-of), bronze.campaign_response (cycle_as_of = as-of)
               -> gold.campaign_evaluation (partition as_of)

Both replace exactly their as-of partition, so a rerun leaves the same rows.
The as-of of ``evaluate`` is the cycle it evaluates: run it once the cycle's
responses are in (a cycle without responses yet writes no rows and says so).
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from gridpersona.stages.inputs import read_bronze_or_empty
from gridpersona.lake import check_schema
from gridpersona.stages.runner import StageContext, StageResult
from gridpersona.config.expressions import referenced_columns
from gridpersona.contracts.bronze import CAMPAIGN_RESPONSE, CONTACT_HISTORY
from gridpersona.contracts.campaigns import CAMPAIGN_EVALUATION, CAMPAIGN_TARGETS, FAMILY_METHOD
from gridpersona.contracts.tags import CUSTOMER_TAGS
from gridpersona.transform import campaign_outcomes as E
from gridpersona.transform import campaigns as C

log = logging.getLogger("gridpersona")

# Tag columns the targeting itself uses, whatever the rules say.
_TARGETING_COLUMNS = ("customer_id", "segment_id", "segment_label", "do_not_contact", "has_arrears", "products_held")


def read_tags(ctx: StageContext) -> DataFrame:
    """The as-of's gold.customer_tags rows; a clear error when the tags stage has not run for it."""
    lake = ctx.lake
    hint = f"run the tags stage first (gridpersona run tags --as-of {ctx.as_of})"
    if not lake.exists(CUSTOMER_TAGS.name):
        raise RuntimeError(f"campaigns: {CUSTOMER_TAGS.name} not found under {lake.root}; {hint}")
    tags = lake.read(CUSTOMER_TAGS.name).filter(F.col("as_of") == F.lit(ctx.as_of))
    if not tags.limit(1).count():
        raise RuntimeError(f"campaigns: {CUSTOMER_TAGS.name} has no rows for as-of {ctx.as_of}; {hint}")
    return tags


def check_rules_against(tags: DataFrame, campaigns, channel_rules) -> None:
    """Spark's own analysis of every rule over the tags' real schema (no job runs).

    Config load already checked that each rule parses and names contract
    columns; this catches what only Spark knows: unknown functions, wrong
    types, a tags table that lacks a contract column. Raises ValueError naming
    the campaign and the rule.
    """
    missing = [c for c in _TARGETING_COLUMNS if c not in tags.columns]
    if missing:
        raise ValueError(f"campaigns: {CUSTOMER_TAGS.name} lacks column(s) {missing} that targeting needs")
    rules = [(f"channel_rules ({r.channel})", "when", r.when, "boolean") for r in channel_rules]
    for c in campaigns:
        rules.append((f"campaign {c.id!r}", "eligibility", c.eligibility, "boolean"))
        rules += [(f"campaign {c.id!r}", f"qualifiers.{code}", sql, "boolean") for code, sql in c.qualifiers.items()]
        rules.append((f"campaign {c.id!r}", "score", c.score, "numeric"))
    for owner, key, sql, _ in rules:
        absent = [n for n in referenced_columns(sql) if n not in tags.columns]
        if absent:
            raise ValueError(f"{owner}: {key} {sql!r}: {CUSTOMER_TAGS.name} has no column(s) {absent}")
    try:  # one analysis for all rules; on failure, one per rule to name the culprit
        schema = tags.select(*[F.expr(f"({sql})").alias(f"r{i}") for i, (_, _, sql, _) in enumerate(rules)]).schema
        types = [schema[f"r{i}"].dataType for i in range(len(rules))]
    except AnalysisException:
        types = []
        for owner, key, sql, _ in rules:
            try:
                types.append(tags.select(F.expr(f"({sql})").alias("v")).schema["v"].dataType)
            except AnalysisException as exc:
                first = str(exc).strip().splitlines()[0]
                raise ValueError(f"{owner}: {key} {sql!r} does not analyse over {CUSTOMER_TAGS.name}: {first}") from None
    for (owner, key, sql, kind), dtype in zip(rules, types):
        ok = dtype.typeName() in ("boolean", "void") if kind == "boolean" else \
            dtype.typeName() in ("byte", "short", "integer", "long", "float", "double", "decimal", "void")
        if not ok:
            raise ValueError(f"{owner}: {key} {sql!r} must be {kind}, got {dtype.simpleString()}")


def run_campaigns(ctx: StageContext) -> StageResult:
    """gold.customer_tags (as-of) + bronze.contact_history -> gold.campaign_targets (as-of partition)."""
    s, lake = ctx.settings, ctx.lake
    conf = s.campaigns
    active = conf.active
    if not active:
        raise ValueError("campaigns: no enabled campaign in campaigns.definitions (conf/campaigns.yaml)")
    tags = read_tags(ctx)
    check_rules_against(tags, active, conf.channel_rules)
    # No contact history (none landed yet): nobody was contacted recently, so no recent-contact exclusion.
    contacts = read_bronze_or_empty(lake, CONTACT_HISTORY.name)
    # Materialize the screened candidates and each arbitration block so the plan stays linear in the blocks.
    targeting = C.campaign_targets(tags, contacts, active, as_of=ctx.as_of, time_zone=s.ami.time_zone,
                                   max_per_customer=conf.max_per_customer, channel_rules=conf.channel_rules,
                                   fallback_channel=conf.fallback_channel,
                                   checkpoint=lambda df: df.localCheckpoint(eager=True))
    check_schema(CAMPAIGN_TARGETS.name, CAMPAIGN_TARGETS.schema, targeting.targets.schema)
    written = lake.replace(targeting.targets, CAMPAIGN_TARGETS, where={"as_of": ctx.as_of}).rows

    funnel: dict[str, dict] = {c.id: {} for c in active}
    for r in targeting.screened.groupBy("campaign_id", "exclusion").count().collect():
        funnel[r["campaign_id"]][r["exclusion"] or "kept"] = r["count"]
    out = lake.read(CAMPAIGN_TARGETS.name).filter(F.col("as_of") == F.lit(ctx.as_of))
    groups: dict[str, dict] = {c.id: {} for c in active}
    for r in out.groupBy("campaign_id", "ab_group").count().collect():
        groups[r["campaign_id"]][r["ab_group"]] = r["count"]
    customers = tags.count()
    result = StageResult(rows_in=customers, outputs={CAMPAIGN_TARGETS.name: written})
    result.notes.append(f"{customers:,} tagged customers; {len(active)} campaigns; at most {conf.max_per_customer} "
                        f"per customer")
    for c in active:
        f, g = funnel[c.id], groups[c.id]
        eligible = sum(f.values())
        excluded = ", ".join(f"{k} {f[k]:,}" for k in C.EXCLUSION_REASONS if f.get(k))
        result.notes.append(
            f"{c.id} (priority {c.priority}): eligible {eligible:,}, excluded {eligible - f.get('kept', 0):,}"
            f"{' (' + excluded + ')' if excluded else ''}, targets {g.get('treatment', 0) + g.get('control', 0):,} "
            f"= treatment {g.get('treatment', 0):,} + control {g.get('control', 0):,}")
    return result


def run_evaluate(ctx: StageContext) -> StageResult:
    """gold.campaign_targets (cycle = as-of) + bronze.campaign_response -> gold.campaign_evaluation (as-of)."""
    s, lake = ctx.settings, ctx.lake
    if not lake.exists(CAMPAIGN_TARGETS.name):
        raise RuntimeError(f"evaluate: {CAMPAIGN_TARGETS.name} not found under {lake.root}; run the campaigns stage "
                           f"first (gridpersona run campaigns --as-of {ctx.as_of})")
    targets = lake.read(CAMPAIGN_TARGETS.name).filter(F.col("as_of") == F.lit(ctx.as_of))
    responses = read_bronze_or_empty(lake, CAMPAIGN_RESPONSE.name).filter(F.col("cycle_as_of") == F.lit(ctx.as_of))
    n_targets = targets.count()
    result = StageResult(rows_in=n_targets)
    evaluation = E.campaign_evaluation(targets, responses, confidence=s.campaigns.confidence)
    if not n_targets:
        # A cycle that contacted no one (e.g. every customer's opt-out unknown) has nothing to evaluate.
        evaluation = evaluation.limit(0)
        result.notes.append(f"{CAMPAIGN_TARGETS.name} has no targets for cycle {ctx.as_of} (the campaigns stage "
                            f"targeted no one, or has not run for it): nothing evaluated")
    elif not responses.limit(1).count():
        # Responses come in after the cycle: nothing to evaluate yet, and no stale rows either. Without any
        # response a rate would read as 0 % measured; the cycle is not evaluable, so it gets no rows.
        evaluation = evaluation.limit(0)
        if lake.exists(CAMPAIGN_RESPONSE.name):
            result.notes.append(f"no {CAMPAIGN_RESPONSE.name} rows for cycle {ctx.as_of} yet: nothing evaluated")
        else:
            result.notes.append(f"{CAMPAIGN_RESPONSE.name} absent: cycle {ctx.as_of} not evaluable, no response rate "
                                f"or uplift written (land responses with `gridpersona ingest {CAMPAIGN_RESPONSE.name} "
                                f"FILES`)")
    check_schema(CAMPAIGN_EVALUATION.name, CAMPAIGN_EVALUATION.schema, evaluation.schema)
    _check_table_is_current(lake)
    result.outputs[CAMPAIGN_EVALUATION.name] = lake.replace(evaluation, CAMPAIGN_EVALUATION,
                                                            where={"as_of": ctx.as_of}).rows
    rows = (lake.read(CAMPAIGN_EVALUATION.name)
            .filter((F.col("as_of") == F.lit(ctx.as_of)) & (F.col("level") == "campaign"))
            .orderBy("campaign_id").collect())
    for r in rows:
        result.notes.append(
            f"{r['campaign_id']}: treatment {_rate(r['responders_treatment'], r['n_treatment'])}, control "
            f"{_rate(r['responders_control'], r['n_control'])}, uplift {_pp(r['uplift'])} "
            f"[{_pp(r['uplift_ci_low'])}, {_pp(r['uplift_ci_high'])}] ({r['confidence']:.0%} {r['ci_method']}), "
            f"family [{_pp(r['uplift_family_low'])}, {_pp(r['uplift_family_high'])}]"
            + (f"; {r['targets_without_response']:,} targets without a response row"
               if r["targets_without_response"] else ""))
    if rows and rows[0]["family_confidence"] is not None:
        r = rows[0]
        result.notes.append(
            f"family intervals: {r['family_size']} campaigns at {r['family_confidence']:.4%} each "
            f"({FAMILY_METHOD}): all cover their true uplifts together with probability >= {r['confidence']:.0%}")
    return result


def _check_table_is_current(lake) -> None:
    """Refuse, with what to do, a gold.campaign_evaluation written before its current columns (e.g. the family ones)."""
    if not lake.exists(CAMPAIGN_EVALUATION.name):
        return
    have = set(lake.read(CAMPAIGN_EVALUATION.name).columns)
    missing = [c for c in CAMPAIGN_EVALUATION.column_names if c not in have]
    if missing:
        raise RuntimeError(
            f"evaluate: {CAMPAIGN_EVALUATION.name} at {lake.path(CAMPAIGN_EVALUATION.name)} predates column(s) "
            f"{missing}. The table is derived from {CAMPAIGN_TARGETS.name} and {CAMPAIGN_RESPONSE.name} only: delete "
            f"its folder and rerun `gridpersona run evaluate --as-of D` for each evaluated cycle D")


def _rate(x: int, n: int) -> str:
    return f"{x:,}/{n:,} ({x / n:.1%})" if n else "0/0"


def _pp(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f} pp"
