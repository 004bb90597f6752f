"""Campaign stages: config + lake I/O around :mod:`gridpersona.transform.campaigns` and ``campaign_outcomes``.

``campaigns``  gold.customer_tags (as-of), bronze.contact_history, bronze.campaign_response (earlier cycles),
               silver.daily_load_shape (placebo kWh spread) -> gold.campaign_targets, gold.campaign_power (as_of)
``evaluate``   gold.campaign_targets (as-of), bronze.campaign_response (cycle_as_of = as-of),
               silver.daily_load_shape, bronze.customer_archive / billing_payment / service_interaction
               -> gold.campaign_evaluation, gold.campaign_outcomes (partition as_of)

Both replace exactly their as-of partition, so a rerun leaves the same rows.
The as-of of ``evaluate`` is the cycle it evaluates: run it once the cycle's
responses are in (a cycle without responses yet writes no rows and says so).
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from gridpersona.stages.inputs import read_bronze, read_bronze_or_empty
from gridpersona.lake import check_schema
from gridpersona.stages.runner import StageContext, StageResult, as_date
from gridpersona.config.expressions import referenced_columns
from gridpersona.contracts.bronze import (BILLING_PAYMENT, CAMPAIGN_RESPONSE, CONTACT_HISTORY, CUSTOMER_ARCHIVE,
                                          SERVICE_INTERACTION)
from gridpersona.contracts.campaigns import (CAMPAIGN_EVALUATION, CAMPAIGN_OUTCOMES, CAMPAIGN_POWER, CAMPAIGN_TARGETS,
                                             FAMILY_METHOD)
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.contracts.tags import CUSTOMER_TAGS
from gridpersona.transform import campaign_outcomes as E
from gridpersona.transform import campaigns as C
from gridpersona.transform import power as PW

log = logging.getLogger("gridpersona")

# Tag columns the targeting itself uses, whatever the rules say.
_TARGETING_COLUMNS = ("customer_id", "segment_id", "segment_label", "do_not_contact", "account_closed", "has_arrears",
                      "products_held")


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
    """gold.customer_tags (as-of) + bronze.contact_history -> gold.campaign_targets and gold.campaign_power
    (as-of partitions); a campaign with size_holdout gets the control share that detects its target_effect."""
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
    baselines = response_baselines(lake, ctx.as_of, active, conf.power)
    targets, shares = targeting.targets, {c.id: c.holdout_share for c in active}
    sizing = {}
    if any(c.size_holdout for c in active):
        targets = targets.localCheckpoint(eager=True)
        totals = {r["campaign_id"]: r["count"] for r in targets.groupBy("campaign_id").count().collect()}
        for c in active:
            if c.size_holdout:
                sizing[c.id] = PW.holdout_share_for_target(
                    totals.get(c.id, 0), c.target_effect, PW.proportion_sigma(baselines[c.id][0], c.target_effect),
                    confidence=conf.confidence, power=conf.power.power, max_share=conf.power.max_holdout_share)
                if sizing[c.id].feasible:
                    shares[c.id] = sizing[c.id].share
        # The hash decides the group whatever the share, so re-deriving ab_group with the sized shares is the
        # same as having targeted with them: selection and arbitration count controls and treatment alike.
        targets = C.assign_ab_groups(targets.drop("ab_group"), shares).select(*CAMPAIGN_TARGETS.column_names)
    check_schema(CAMPAIGN_TARGETS.name, CAMPAIGN_TARGETS.schema, targets.schema)
    written = lake.replace(targets, CAMPAIGN_TARGETS, where={"as_of": ctx.as_of}).rows

    funnel: dict[str, dict] = {c.id: {} for c in active}
    for r in targeting.screened.groupBy("campaign_id", "exclusion").count().collect():
        funnel[r["campaign_id"]][r["exclusion"] or "kept"] = r["count"]
    out = lake.read(CAMPAIGN_TARGETS.name).filter(F.col("as_of") == F.lit(ctx.as_of))
    groups: dict[str, dict] = {c.id: {} for c in active}
    for r in out.groupBy("campaign_id", "ab_group").count().collect():
        groups[r["campaign_id"]][r["ab_group"]] = r["count"]
    customers = tags.count()
    sigmas = placebo_kwh_sigmas(ctx, out, tags) if "kwh_log_change" in conf.power.outcomes else {}
    power_rows = campaign_power_rows(active, groups, baselines, shares, conf, sigmas)
    power_df = ctx.spark.createDataFrame(
        [tuple({**r, "as_of": ctx.as_of}[k] for k in CAMPAIGN_POWER.column_names) for r in power_rows],
        CAMPAIGN_POWER.schema)
    check_schema(CAMPAIGN_POWER.name, CAMPAIGN_POWER.schema, power_df.schema)
    power_written = lake.replace(power_df, CAMPAIGN_POWER, where={"as_of": ctx.as_of}).rows
    result = StageResult(rows_in=customers, outputs={CAMPAIGN_TARGETS.name: written,
                                                     CAMPAIGN_POWER.name: power_written})
    result.notes.append(f"{customers:,} tagged customers; {len(active)} campaigns; at most {conf.max_per_customer} "
                        f"per customer")
    by_campaign = {(r["campaign_id"], r["outcome"]): r for r in power_rows}
    for c in active:
        f, g = funnel[c.id], groups[c.id]
        eligible = sum(f.values())
        excluded = ", ".join(f"{k} {f[k]:,}" for k in C.EXCLUSION_REASONS if f.get(k))
        result.notes.append(
            f"{c.id} (priority {c.priority}): eligible {eligible:,}, excluded {eligible - f.get('kept', 0):,}"
            f"{' (' + excluded + ')' if excluded else ''}, targets {g.get('treatment', 0) + g.get('control', 0):,} "
            f"= treatment {g.get('treatment', 0):,} + control {g.get('control', 0):,}; "
            + _power_note(by_campaign.get((c.id, "response")), sizing.get(c.id))
            + _kwh_power_note(by_campaign.get((c.id, "kwh_log_change"))))
    return result


def response_baselines(lake, as_of, campaigns, power_conf) -> dict[str, tuple[float, str]]:
    """Per campaign id: (control response rate p0, baseline_source) for its MDE.

    The campaign's control targets of cycles before ``as_of`` (gold.campaign_targets) with a
    bronze.campaign_response row, when there are at least ``power_conf.min_baseline_units`` of them;
    otherwise ``power_conf.default_baseline['response']`` (``config_default``). The cycle being
    targeted never counts: its responses come after it.
    """
    default = (power_conf.default_baseline["response"], "config_default")
    out = {c.id: default for c in campaigns}
    if not (lake.exists(CAMPAIGN_RESPONSE.name) and lake.exists(CAMPAIGN_TARGETS.name)):
        return out
    controls = (lake.read(CAMPAIGN_TARGETS.name).filter((F.col("as_of") < F.lit(as_of))
                                                       & (F.col("ab_group") == "control"))
                .select("campaign_id", "as_of", "customer_id"))
    responses = read_bronze_or_empty(lake, CAMPAIGN_RESPONSE.name).filter(F.col("cycle_as_of") < F.lit(as_of))
    joined = controls.join(responses.select("campaign_id", F.col("cycle_as_of").alias("as_of"), "customer_id",
                                            "responded"), ["campaign_id", "as_of", "customer_id"])
    for r in joined.groupBy("campaign_id").agg(F.count(F.lit(1)).alias("n"),
                                               F.sum(F.col("responded").cast("long")).alias("x")).collect():
        if r["campaign_id"] in out and r["n"] >= power_conf.min_baseline_units:
            out[r["campaign_id"]] = (r["x"] / r["n"], "campaign_response_control")
    return out


def placebo_kwh_sigmas(ctx: StageContext, targets: DataFrame, tags: DataFrame) -> dict[str, float | None]:
    """Per campaign id: the sd of its targets' placebo kWh change (:func:`E.placebo_kwh_sd`), None when fewer
    than 2 targets have the days for it (or the lake has no daily shapes)."""
    lake, conf = ctx.lake, ctx.settings.campaigns.outcomes
    if not lake.exists(DAILY_LOAD_SHAPE.name):
        return {}
    with_meter = targets.join(tags.select("customer_id", "meter_id"), "customer_id")
    sd = E.placebo_kwh_sd(with_meter, lake.read(DAILY_LOAD_SHAPE.name), as_of=ctx.as_of, days=conf.outcome_days,
                          min_days=conf.min_days, min_completeness=conf.min_completeness,
                          min_pre_kwh_per_day=conf.min_pre_kwh_per_day)
    return {r["campaign_id"]: (r["sd"] if r["n"] >= 2 else None) for r in sd.collect()}


def campaign_power_rows(campaigns, groups: dict[str, dict], baselines: dict[str, tuple[float, str]],
                        shares: dict[str, float], conf, sigmas: dict[str, float | None] | None = None) -> list[dict]:
    """gold.campaign_power rows (without as_of) per campaign and configured outcome (campaigns.power.outcomes).

    ``sigmas``: per campaign, the sd of kwh_log_change (:func:`placebo_kwh_sigmas`)."""
    rows = []
    for c in campaigns:
        g = groups.get(c.id, {})
        for outcome in conf.power.outcomes:
            if outcome == "kwh_log_change":
                rows.append(PW.campaign_power_row_mean(
                    campaign_id=c.id, outcome=outcome, sigma=(sigmas or {}).get(c.id),
                    n_treatment=g.get("treatment", 0), n_control=g.get("control", 0), confidence=conf.confidence,
                    power=conf.power.power, holdout_share=shares[c.id]))
                continue
            if outcome == "response":
                p0, source = baselines[c.id]
            else:
                p0, source = conf.power.default_baseline[outcome], "config_default"
            rows.append(PW.campaign_power_row(
                campaign_id=c.id, outcome=outcome, baseline=p0, baseline_source=source,
                n_treatment=g.get("treatment", 0), n_control=g.get("control", 0), confidence=conf.confidence,
                power=conf.power.power, holdout_share=shares[c.id],
                target_effect=c.target_effect if outcome == "response" else None,
                max_holdout_share=conf.power.max_holdout_share))
    return rows


def _kwh_power_note(row: dict | None) -> str:
    """"; kWh MDE 2.2 % (sd 0.085)" for a campaign's kwh_log_change row (empty without one)."""
    if row is None:
        return ""
    if row["mde"] is None:
        return "; kWh MDE - (no placebo spread)"
    return f"; kWh MDE {100 * row['mde']:.1f} % (log ratio, placebo sd {row['baseline']:.3f})"


def _power_note(row: dict | None, sized) -> str:
    """"MDE 9.1 pp (p0 5 %, n_t 450, n_c 50)" for a campaign's response row, plus its target and sizing."""
    if row is None:
        return "MDE -"
    mde = "not detectable" if row["mde"] is None else f"{100 * row['mde']:.1f} pp"
    text = (f"MDE {mde} (p0 {100 * row['baseline']:.0f} %, n_t {row['n_treatment']:,}, n_c {row['n_control']:,}"
            f"{', default baseline' if row['baseline_source'] == 'config_default' else ''})")
    if row["target_effect"] is not None:
        share = row["holdout_share_for_target"]
        text += (f"; target {100 * row['target_effect']:.1f} pp needs holdout "
                 + (f"{share:.1%}" if share is not None else "- (infeasible)"))
        if row["mde"] is not None and row["mde"] > row["target_effect"]:
            text += " [MDE above the target: this holdout cannot show the effect sought]"
    if sized is not None:
        text += (f"; holdout sized to {row['holdout_share']:.1%}" if sized.feasible
                 else f"; holdout kept at {row['holdout_share']:.1%} (target infeasible)")
    return text


def run_evaluate(ctx: StageContext) -> StageResult:
    """gold.campaign_targets (cycle = as-of) + bronze.campaign_response -> gold.campaign_evaluation (as-of), and
    with the daily shapes, archive, bills and interactions -> gold.campaign_outcomes (as-of)."""
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
    outcome_rows = campaign_outcome_rows(ctx, targets, responses) if n_targets else []
    outcomes = ctx.spark.createDataFrame(
        [tuple(r[k] for k in CAMPAIGN_OUTCOMES.column_names) for r in outcome_rows], CAMPAIGN_OUTCOMES.schema)
    check_schema(CAMPAIGN_OUTCOMES.name, CAMPAIGN_OUTCOMES.schema, outcomes.schema)
    result.outputs[CAMPAIGN_OUTCOMES.name] = lake.replace(outcomes, CAMPAIGN_OUTCOMES,
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
    result.notes.extend(_outcome_notes(outcome_rows))
    return result


def campaign_outcome_rows(ctx: StageContext, targets: DataFrame, responses: DataFrame) -> list[dict]:
    """gold.campaign_outcomes rows of the cycle ``ctx.as_of`` (see the contract): per-target outcome values in
    Spark, per-arm sums collected (a few rows per campaign, channel and outcome), intervals in Python.

    The outcome period is the cycle + 1 .. cycle + campaigns.outcomes.outcome_days, cut at the last day of
    silver.daily_load_shape. An outcome whose source the lake lacks gets rows with a reason, never zeros.
    """
    s, lake = ctx.settings, ctx.lake
    conf = s.campaigns.outcomes
    cycle = ctx.as_of
    first = cycle + dt.timedelta(days=1)
    shape_dates = ([as_date(d) for d, n in lake.partition_counts(DAILY_LOAD_SHAPE.name, "date").items()
                    if d is not None and n] if lake.exists(DAILY_LOAD_SHAPE.name) else [])
    lake_last = max(shape_dates) if shape_dates else cycle
    last = min(cycle + dt.timedelta(days=conf.outcome_days), max(lake_last, cycle))
    complete = last == cycle + dt.timedelta(days=conf.outcome_days)
    unavailable: dict[str, str] = {}
    if not lake.exists(CAMPAIGN_RESPONSE.name):
        unavailable["response"] = "source_absent"
    elif not responses.limit(1).count():
        unavailable["response"] = "no_response_rows"
    archive = read_bronze(lake, CUSTOMER_ARCHIVE.name)
    if not archive.filter(F.col("account_close_date").isNotNull()).limit(1).count():
        unavailable["churn"] = "close_date_unknown"  # no close date anywhere: closures are not recorded
    sources = {"kwh_log_change": DAILY_LOAD_SHAPE.name, "peak_valley_rate_change": DAILY_LOAD_SHAPE.name,
               "arpu_cny": BILLING_PAYMENT.name, "paid_on_time": BILLING_PAYMENT.name,
               "complaint": SERVICE_INTERACTION.name}
    for outcome, table in sources.items():
        if not lake.exists(table):
            unavailable[outcome] = "source_absent"
        elif not lake.read(table).limit(1).count():
            unavailable[outcome] = "source_empty"
    if last < first:
        for outcome in E.OUTCOMES:
            if outcome != "response":
                unavailable.setdefault(outcome, "no_data_after_cycle")
    daily = (lake.read(DAILY_LOAD_SHAPE.name) if lake.exists(DAILY_LOAD_SHAPE.name)
             else ctx.spark.createDataFrame([], DAILY_LOAD_SHAPE.schema))
    values = E.customer_outcome_values(
        targets, responses=responses, daily=daily, archive=archive,
        billing=read_bronze_or_empty(lake, BILLING_PAYMENT.name),
        interactions=read_bronze_or_empty(lake, SERVICE_INTERACTION.name), cycle=cycle, window_last=last,
        pre_days=conf.pre_days, min_days=conf.min_days, min_completeness=conf.min_completeness,
        min_pre_kwh_per_day=conf.min_pre_kwh_per_day, time_zone=s.ami.time_zone)
    sums = [r.asDict() for r in E.outcome_sums(values).collect()]
    measured = {}
    for r in sums:
        measured[r["outcome"]] = measured.get(r["outcome"], 0) + r["n"]
    for outcome in E.OUTCOMES:
        if not measured.get(outcome) and outcome not in unavailable:
            # Sources present, but no target has a value: say why rather than an empty_arm per row.
            unavailable[outcome] = {"arpu_cny": "no_bill_after_cycle", "paid_on_time": "no_bill_after_cycle",
                                    "response": "no_response_rows"}.get(outcome, "no_data_after_cycle")
    return E.outcome_rows(sums, as_of=cycle, window_first=first, window_last=last, window_complete=complete,
                          confidence=s.campaigns.confidence, power=s.campaigns.power.power,
                          unavailable=unavailable)


def _outcome_notes(rows: list[dict]) -> list[str]:
    """One note per campaign: its measured outcomes (campaign level) with their intervals, and those not measured."""
    notes, by_campaign = [], {}
    for r in rows:
        if r["level"] == "campaign":
            by_campaign.setdefault(r["campaign_id"], []).append(r)
    for cid, rs in sorted(by_campaign.items()):
        parts = [f"{r['outcome']} {r['effect']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
                 f" (n {r['n_treatment']:,}/{r['n_control']:,}"
                 + (f", MDE {r['mde']:.4f}" if r["mde"] is not None else ", MDE -") + ")"
                 for r in rs if r["effect"] is not None]
        skipped = sorted({f"{r['outcome']} ({r['reason']})" for r in rs if r["effect"] is None})
        notes.append(f"{cid} outcomes: " + ("; ".join(parts) or "none measured")
                     + (f"; not measured: {', '.join(skipped)}" if skipped else ""))
    if rows:
        r = rows[0]
        notes.append(f"outcome period {r['window_first']} .. {r['window_last']}"
                     + ("" if r["window_complete"] else " (incomplete: the lake ends before the full period)"))
    return notes


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
