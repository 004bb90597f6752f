"""Campaign targeting: gold.customer_tags -> gold.campaign_targets (pure DataFrame functions).

A campaign (``conf/campaigns.yaml``, :class:`gridpersona.config.Campaign`) picks
its targets for one cycle (as-of date) in five steps:

1. **Eligibility** (:func:`campaign_candidates`): ``eligibility`` holds and at
   least one of the ``qualifiers`` holds (Spark SQL over the tag columns; null
   counts as false). The qualifiers that hold are the target's
   ``qualifying_tags``; ``score`` ranks the candidates; the channel is the
   campaign's fixed ``channel`` or the first channel rule that holds.
   One pass over the tags: every campaign's struct is built per customer and
   exploded.
2. **Exclusions** (:func:`screen_candidates`), first that applies:
   ``do_not_contact`` (true or unknown; unknown is excluded even when the exclusion is off), ``arrears`` (``has_arrears`` true or unknown),
   ``recently_contacted`` (a bronze.contact_history contact by any campaign in
   the ``contacted_within_days`` local days ending on the as-of),
   ``holds_product`` (``offered_product`` in ``products_held``).
3. **Arbitration and capacity** (:func:`select_targets`): campaigns are served
   in priority order (1 first), one priority level at a time. At each level a
   customer keeps their best campaigns of the level (by score, then campaign
   id) up to the slots left of ``max_per_customer``; then each campaign keeps
   its top ``capacity`` customers by score (ties: smaller customer_id). A
   customer cut by a higher-priority campaign's capacity still has the slot for
   a lower-priority one; within one level, a customer cut by capacity is not
   moved to another campaign of the same level. Control customers use a slot
   too, so a campaign's treatment and control groups see the other campaigns
   alike. Consecutive levels without capacity limits are served in one step
   (:func:`arbitration_blocks`; same result).
4. **Holdout** (:func:`assign_ab_groups`): ``control`` when the hash bucket of
   (customer, campaign) is below ``holdout_share`` (:mod:`gridpersona.transform.holdout`),
   else ``treatment``. Control targets keep the channel they would have had and
   are not contacted.
5. Output columns: the gold.campaign_targets contract (:mod:`gridpersona.contracts.campaigns`); no PII:
   the tags carry none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import NamedTuple

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from gridpersona.contracts.campaigns import CAMPAIGN_TARGETS
from gridpersona.transform.validate import local_date
from gridpersona.transform.holdout import ab_group_col

EXCLUSION_REASONS = ("account_closed", "do_not_contact", "arrears", "recently_contacted", "holds_product")


class Targeting(NamedTuple):
    screened: DataFrame  # every eligible (customer, campaign) with its exclusion reason (null: kept)
    targets: DataFrame  # gold.campaign_targets rows for the cycle


def _sql(expr: str) -> Column:
    return F.expr(expr)


def _holds(expr: str) -> Column:
    """A rule as a boolean: null (unknown tag) counts as false."""
    return F.coalesce(_sql(f"({expr})").cast("boolean"), F.lit(False))


def channel_column(channel_rules: Sequence, fallback_channel: str) -> Column:
    """The first rule (``.channel``, ``.when``) whose condition holds, else ``fallback_channel``."""
    col = F.lit(fallback_channel)
    for rule in reversed(list(channel_rules)):
        col = F.when(_holds(rule.when), F.lit(rule.channel)).otherwise(col)
    return col


def campaign_candidates(tags: DataFrame, campaigns: Sequence, channel_rules: Sequence, fallback_channel: str
                        ) -> DataFrame:
    """Eligible (customer, campaign) pairs of ``tags`` (one row per customer) for ``campaigns``.

    ``campaigns`` are :class:`~gridpersona.config.Campaign` definitions (disabled
    ones are skipped). Returns customer_id, segment_id, segment_label,
    campaign_id, priority, offer_code, score (double), qualifying_tags,
    channel, and the exclusion inputs ``ex_do_not_contact``, ``ex_arrears``,
    ``ex_holds_product`` (booleans, false when the campaign does not apply that
    exclusion) and ``cooldown_days`` (null: no contact limit).
    """
    campaigns = [c for c in campaigns if c.enabled]
    if not campaigns:
        raise ValueError("no enabled campaign: define some under campaigns.definitions in conf/campaigns.yaml")
    rule_channel = channel_column(channel_rules, fallback_channel)
    no_products = F.array().cast("array<string>")
    structs = []
    for c in campaigns:
        ex = c.exclusions
        quals = [F.when(_holds(sql), F.lit(code)) for code, sql in c.qualifiers.items()]
        qualifying = F.filter(F.array(*quals), lambda x: x.isNotNull())
        holds_product = (F.array_contains(F.coalesce(F.col("products_held"), no_products), F.lit(c.offered_product))
                         if ex.holds_offered_product and c.offered_product else F.lit(False))
        structs.append(F.struct(
            F.lit(c.id).alias("campaign_id"),
            F.lit(c.priority).cast("int").alias("priority"),
            F.lit(c.offer_code).alias("offer_code"),
            (_holds(c.eligibility) & (F.size(qualifying) > 0)).alias("eligible"),
            qualifying.alias("qualifying_tags"),
            _sql(f"({c.score})").cast("double").alias("score"),
            (F.lit(c.channel) if c.channel else rule_channel).alias("channel"),
            # Unknown consent is never contact: excluded even where a campaign ignores explicit opt-outs.
            (F.coalesce(F.col("do_not_contact"), F.lit(True)) if ex.do_not_contact else F.col("do_not_contact").isNull())
            .alias("ex_do_not_contact"),
            # Unknown arrears (no bills) is not "no arrears".
            (F.coalesce(F.col("has_arrears"), F.lit(True)) if ex.arrears else F.lit(False)).alias("ex_arrears"),
            holds_product.alias("ex_holds_product"),
            # A closed account is nobody to contact, whatever the campaign's exclusions say.
            F.coalesce(F.col("account_closed"), F.lit(False)).alias("ex_account_closed"),
            F.lit(ex.contacted_within_days).cast("int").alias("cooldown_days"),
        ))
    return (tags.select("customer_id", "segment_id", "segment_label", F.explode(F.array(*structs)).alias("c"))
            .filter(F.col("c.eligible"))
            .select("customer_id", "segment_id", "segment_label", "c.campaign_id", "c.priority", "c.offer_code",
                    "c.score", "c.qualifying_tags", "c.channel", "c.ex_do_not_contact", "c.ex_arrears",
                    "c.ex_holds_product", "c.ex_account_closed", "c.cooldown_days"))


def last_contact_dates(contacts: DataFrame, as_of: dt.date, time_zone: str) -> DataFrame:
    """bronze.contact_history -> (customer_id, last_contact_date): latest local contact day on or before ``as_of``.

    Later contacts are ignored, so a rerun for an earlier as-of sees what that cycle saw.
    """
    day = local_date(F.col("ts"), time_zone)
    return (contacts.select("customer_id", day.alias("contact_date"))
            .filter(F.col("contact_date") <= F.lit(as_of))
            .groupBy("customer_id").agg(F.max("contact_date").alias("last_contact_date")))


def screen_candidates(candidates: DataFrame, last_contacts: DataFrame, as_of: dt.date) -> DataFrame:
    """Candidates plus ``exclusion``: the first exclusion that applies (EXCLUSION_REASONS order), null when kept.

    Recently contacted: a contact in the ``cooldown_days`` local days ending on ``as_of``.
    """
    joined = candidates.join(last_contacts, "customer_id", "left")
    recent = (F.col("cooldown_days").isNotNull() & F.col("last_contact_date").isNotNull()
              & (F.datediff(F.lit(as_of), F.col("last_contact_date")) < F.col("cooldown_days")))
    reason = (F.when(F.col("ex_account_closed"), F.lit("account_closed"))
              .when(F.col("ex_do_not_contact"), F.lit("do_not_contact"))
              .when(F.col("ex_arrears"), F.lit("arrears"))
              .when(recent, F.lit("recently_contacted"))
              .when(F.col("ex_holds_product"), F.lit("holds_product")))
    return joined.withColumn("exclusion", reason).drop("last_contact_date")


def arbitration_blocks(priorities: dict[str, int], capacities: dict[str, int | None]) -> list[list[int]]:
    """Priority levels grouped into blocks that can be served in one step each.

    Without capacity limits, serving levels one after another is the same as
    ranking a customer's campaigns by (priority, score, id) and keeping the
    first slots, so consecutive uncapped levels share a step; a level with a
    capacity-limited campaign closes its block, since the levels after it
    depend on whom its capacity cut.
    """
    capped = {priorities[c] for c, n in capacities.items() if n is not None and c in priorities}
    blocks: list[list[int]] = [[]]
    for level in sorted(set(priorities.values())):
        blocks[-1].append(level)
        if level in capped:
            blocks.append([])
    return [b for b in blocks if b]


def select_targets(kept: DataFrame, *, max_per_customer: int, priorities: dict[str, int],
                   capacities: dict[str, int | None], checkpoint: Callable[[DataFrame], DataFrame] | None = None
                   ) -> DataFrame:
    """Arbitration (at most ``max_per_customer`` campaigns per customer, by priority then score) and capacity.

    ``kept``: screened candidates without an exclusion (customer_id, campaign_id,
    priority, score, ...). ``priorities``: campaign id -> priority;
    ``capacities``: campaign id -> top N (None: all). Priority levels are
    served in order (module docstring, step 3), in the blocks of
    :func:`arbitration_blocks`: per block, a customer keeps their campaigns
    ranked by (priority, score desc, campaign id) up to the slots the earlier
    blocks left, then each campaign keeps its top ``capacity`` by (score desc,
    customer id). ``checkpoint`` (e.g. ``DataFrame.localCheckpoint``)
    materializes each block's picks but the last, which keeps the query plan
    linear in the number of blocks (without it every block re-plans the
    earlier ones). Returns the selected rows of ``kept`` (same columns).
    """
    by_score = [F.col("score").desc_nulls_last()]
    cap = F.lit(None).cast("int")
    for cid, n in capacities.items():
        if n is not None:
            cap = F.when(F.col("campaign_id") == F.lit(cid), F.lit(int(n))).otherwise(cap)
    blocks = arbitration_blocks(priorities, capacities)
    chosen: list[DataFrame] = []
    for i, block in enumerate(blocks):
        cand = kept.filter(F.col("priority").isin(block))
        if chosen:
            # Slots each customer used in the blocks before.
            earlier = chosen[0].select("customer_id")
            for df in chosen[1:]:
                earlier = earlier.unionByName(df.select("customer_id"))
            used = earlier.groupBy("customer_id").agg(F.count(F.lit(1)).cast("int").alias("slots_used"))
            cand = cand.join(used, "customer_id", "left")
        else:
            cand = cand.withColumn("slots_used", F.lit(0))
        cand = cand.withColumn("slots_left", F.lit(max_per_customer) - F.coalesce(F.col("slots_used"), F.lit(0)))
        per_customer = Window.partitionBy("customer_id").orderBy(F.col("priority"), *by_score, F.col("campaign_id"))
        cand = cand.withColumn("customer_rank", F.row_number().over(per_customer))
        cand = cand.filter(F.col("customer_rank") <= F.col("slots_left"))
        per_campaign = Window.partitionBy("campaign_id").orderBy(*by_score, F.col("customer_id"))
        cand = cand.withColumn("campaign_rank", F.row_number().over(per_campaign))
        cand = cand.filter(cap.isNull() | (F.col("campaign_rank") <= cap))
        picked = cand.select(*kept.columns)
        last = i == len(blocks) - 1
        chosen.append(checkpoint(picked) if checkpoint is not None and not last else picked)
    if not chosen:
        return kept.limit(0)
    out = chosen[0]
    for df in chosen[1:]:
        out = out.unionByName(df)
    return out


def assign_ab_groups(selected: DataFrame, holdout_shares: dict[str, float]) -> DataFrame:
    """``selected`` plus ``ab_group`` (treatment | control) by the hash of (customer_id, campaign_id)."""
    share = F.lit(0.0)
    for cid, s in holdout_shares.items():
        share = F.when(F.col("campaign_id") == F.lit(cid), F.lit(float(s))).otherwise(share)
    return selected.withColumn("ab_group", ab_group_col("customer_id", "campaign_id", share))


def campaign_targets(tags: DataFrame, contacts: DataFrame, campaigns: Sequence, *, as_of: dt.date, time_zone: str,
                     max_per_customer: int, channel_rules: Sequence, fallback_channel: str,
                     checkpoint: Callable[[DataFrame], DataFrame] | None = None) -> Targeting:
    """The cycle's targets from the as-of's tags (one row per customer) and bronze.contact_history.

    Returns :class:`Targeting`: the screened candidates (for the funnel counts)
    and the target rows in the order of the gold.campaign_targets contract.
    """
    active = [c for c in campaigns if c.enabled]
    candidates = campaign_candidates(tags, active, channel_rules, fallback_channel)
    screened = screen_candidates(candidates, last_contact_dates(contacts, as_of, time_zone), as_of)
    if checkpoint is not None:
        screened = checkpoint(screened)
    kept = screened.filter(F.col("exclusion").isNull())
    selected = select_targets(kept, max_per_customer=max_per_customer, priorities={c.id: c.priority for c in active},
                              capacities={c.id: c.capacity for c in active}, checkpoint=checkpoint)
    grouped = assign_ab_groups(selected, {c.id: c.holdout_share for c in active})
    targets = grouped.withColumn("as_of", F.lit(as_of).cast("date")).select(*CAMPAIGN_TARGETS.column_names)
    return Targeting(screened, targets)
