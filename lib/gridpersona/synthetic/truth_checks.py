"""Checks of pipeline outputs against the synthetic lake's ground truth (truth.*).

Only for lakes written by `gridpersona generate`; the pipeline itself never reads truth.*.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType

from gridpersona.lake import Lake


@dataclass(frozen=True)
class DetectionScore:
    category: str
    planted: int
    detected: int
    true_positive: int

    @property
    def precision(self) -> float:
        return self.true_positive / self.detected if self.detected else (1.0 if not self.planted else 0.0)

    @property
    def recall(self) -> float:
        return self.true_positive / self.planted if self.planted else 1.0


def _score(category: str, planted: DataFrame, detected: DataFrame) -> DetectionScore:
    """Multiset match on (meter_id, ts): a reading read three times is two duplicates."""
    p = planted.groupBy("meter_id", "ts").agg(F.count(F.lit(1)).alias("np"))
    d = detected.groupBy("meter_id", "ts").agg(F.count(F.lit(1)).alias("nd"))
    row = (p.join(d, ["meter_id", "ts"], "full")
           .agg(F.sum(F.coalesce("np", F.lit(0))).alias("planted"), F.sum(F.coalesce("nd", F.lit(0))).alias("detected"),
                F.sum(F.least(F.coalesce("np", F.lit(0)), F.coalesce("nd", F.lit(0)))).alias("tp"))
           .collect()[0])
    return DetectionScore(category, int(row["planted"] or 0), int(row["detected"] or 0), int(row["tp"] or 0))


def fault_detection(lake: Lake, first: dt.date, last: dt.date, interval_minutes: int) -> list[DetectionScore]:
    """Precision and recall of the clean stage per planted fault category, over the local days [first, last].

    What counts as detected: quarantine reasons for duplicate / negative / null_value /
    unknown_meter; ``outlier_replaced`` for spike; ``interpolated`` rows at instants that
    were absent from the raw data for short_gap; intervals left missing on incomplete
    days for long_gap (not after a closed account's close date: the meter no longer supplies).
    """
    truth = lake.read("truth.faults").filter(_local_day_in(first, last, lake))
    clean = lake.read("silver.ami_clean").filter(F.col("date").between(first, last))
    quarantine = lake.read("silver.ami_quarantine").filter(F.col("date").between(first, last))
    quality = lake.read("silver.meter_day_quality").filter(F.col("date").between(first, last))

    def planted(category: str) -> DataFrame:
        return truth.filter(F.col("fault") == category).select("meter_id", "ts")

    scores = [_score(reason, planted(reason), _outside_reverse_flow(
        quarantine.filter(F.col("reason") == reason).select("meter_id", "ts"), lake))
              for reason in ("duplicate", "negative", "null_value", "unknown_meter")]
    scores.append(_score("spike", planted("spike"),
                         clean.filter(F.col("quality") == "outlier_replaced").select("meter_id", "ts")))
    # A short gap is an instant absent from the raw data that got an interpolated value
    # (interpolated values at quarantined instants are repairs of those readings instead).
    filled = (clean.filter(F.col("quality") == "interpolated")
              .join(quarantine.select("meter_id", "ts").distinct(), ["meter_id", "ts"], "left_anti"))
    scores.append(_score("short_gap", planted("short_gap"), filled.select("meter_id", "ts")))
    missing = _outside_reverse_flow(_before_closure(_missing_instants(clean, quality, lake, interval_minutes), lake),
                                    lake)
    scores.append(_score("long_gap", planted("long_gap"), missing))
    return scores


def _before_closure(instants: DataFrame, lake: Lake) -> DataFrame:
    """The (meter_id, ts) instants not after their account's close date (bronze.customer_archive): a closed
    account's meter stops reporting (generate.plant_outcomes), and that silence is no fault to detect."""
    from gridpersona.stages.inputs import read_bronze
    from gridpersona.transform.clean import local_seconds

    closed = (read_bronze(lake, "bronze.customer_archive").filter(F.col("account_close_date").isNotNull())
              .select("meter_id", "account_close_date"))
    day = F.date_from_unix_date(F.floor(local_seconds("ts", lake.settings.ami.time_zone) / 86400).cast("int"))
    return (instants.join(closed, "meter_id", "left")
            .filter(F.col("account_close_date").isNull() | (day <= F.col("account_close_date")))
            .select("meter_id", "ts"))


def _outside_reverse_flow(instants: DataFrame, lake: Lake) -> DataFrame:
    """The (meter_id, ts) instants not on the days of a planted reverse-flow case (truth.anomalies): every
    reading of those days is negative by design, so quarantined and the day left missing; that is the case
    gold.anomaly_flags is scored on, not a data fault."""
    if not lake.exists("truth.anomalies"):
        return instants
    from gridpersona.transform.clean import local_seconds

    cases = (lake.read("truth.anomalies").filter(F.col("kind") == "reverse_flow")
             .select("meter_id", "start_date", "end_date"))
    day = F.date_from_unix_date(F.floor(local_seconds("ts", lake.settings.ami.time_zone) / 86400).cast("int"))
    return (instants.join(F.broadcast(cases), "meter_id", "left")
            .filter(F.col("start_date").isNull() | ~day.between(F.col("start_date"), F.col("end_date")))
            .select("meter_id", "ts"))


def _local_day_in(first: dt.date, last: dt.date, lake: Lake):
    from gridpersona.transform.clean import local_seconds

    local = local_seconds("ts", lake.settings.ami.time_zone)
    day = F.date_from_unix_date(F.floor(local / 86400).cast("int"))
    return day.between(F.lit(first), F.lit(last))


def _missing_instants(clean: DataFrame, quality: DataFrame, lake: Lake, interval_minutes: int) -> DataFrame:
    """(meter_id, ts) of the intervals that no clean row covers, on the days with missing intervals."""
    from gridpersona.transform.clean import local_calendar

    days = quality.filter(F.col("missing_intervals") > 0).select("meter_id", "date")
    bounds = days.agg(F.min("date"), F.max("date")).collect()[0]
    if bounds[0] is None:
        return clean.select("meter_id", "ts").limit(0)
    cal = lake.spark.createDataFrame(
        local_calendar(bounds[0], bounds[1], lake.settings.ami.time_zone, interval_minutes),
        "date date, day_start_epoch long, expected_intervals int")
    expected = (days.join(F.broadcast(cal), "date")
                .select("meter_id", "date", F.explode(F.sequence(F.lit(0), F.col("expected_intervals") - 1)).alias("pos"),
                        "day_start_epoch")
                .select("meter_id", "date",
                        F.timestamp_seconds(F.col("day_start_epoch") + F.col("pos") * interval_minutes * 60).alias("ts")))
    present = clean.join(days, ["meter_id", "date"], "left_semi").select("meter_id", "ts")
    return expected.join(present, ["meter_id", "ts"], "left_anti").select("meter_id", "ts")


def adjusted_rand_index(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings of the same items (Hubert & Arabie)."""
    _, a = np.unique(labels_a, return_inverse=True)
    _, b = np.unique(labels_b, return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    comb = lambda x: x * (x - 1) / 2.0
    sum_cells = comb(table).sum()
    sum_a = comb(table.sum(axis=1)).sum()
    sum_b = comb(table.sum(axis=0)).sum()
    expected = sum_a * sum_b / comb(len(a))
    maximum = (sum_a + sum_b) / 2.0
    return float((sum_cells - expected) / (maximum - expected)) if maximum != expected else 1.0


def segment_agreement(lake: Lake, as_of: dt.date) -> dict:
    """ARI of gold.customer_segments (segment id and label) vs truth.meters.archetype, and each
    archetype's majority segment label with its share."""
    segments = lake.read("gold.customer_segments").filter(F.col("as_of") == as_of).select(
        "meter_id", "segment_id", "segment_label")
    truth = lake.read("truth.meters").select("meter_id", "archetype")
    rows = segments.join(truth, "meter_id").collect()  # one row per meter: bounded
    by_archetype: dict[str, Counter] = {}
    for r in rows:
        by_archetype.setdefault(r["archetype"], Counter())[r["segment_label"]] += 1
    majority = {a: (c.most_common(1)[0][0], c.most_common(1)[0][1] / sum(c.values())) for a, c in by_archetype.items()}
    archetypes = np.array([r["archetype"] for r in rows])
    return {
        "meters": len(rows),
        "ari_segment_id": adjusted_rand_index(np.array([r["segment_id"] for r in rows]), archetypes),
        "ari_segment_label": adjusted_rand_index(np.array([r["segment_label"] for r in rows]), archetypes),
        "majority_label": majority,
    }


# ------------------------------------------------------------------ tags vs planted truth

# gold.customer_tags column -> truth.meters column, for the tags the generator plants.
PLANTED_TAGS = {
    "ev_owner": "ev_owner",
    "vacancy": "vacant",
    "credit_rating": "credit_rating",
    "payment_channel_pref": "payment_channel_pref",
    "interaction_channel_pref": "interaction_channel_pref",
    "bill_shock_risk": "bill_shock",
}


def tag_accuracy(lake: Lake, as_of: dt.date, tags: dict[str, str] | None = None) -> list[DetectionScore]:
    """Precision and recall of gold.customer_tags (as-of) per planted tag value, against truth.meters.

    One score per (tag, value), named ``tag=value``: ``planted`` customers whose
    truth has the value, ``detected`` customers tagged with it, ``true_positive``
    both. Boolean tags are scored on their ``true`` value. Customers are those of
    the archive (truth rows with a customer id); a null tag counts as not tagged.
    """
    tags = tags or PLANTED_TAGS
    tagged = lake.read("gold.customer_tags").filter(F.col("as_of") == F.lit(as_of))
    present = [t for t in tags if t in tagged.columns]
    truth = lake.read("truth.meters").filter(F.col("customer_id").isNotNull())
    joined = tagged.select("customer_id", *[F.col(t).alias(f"tag__{t}") for t in present]).join(
        truth.select("customer_id", *[F.col(tags[t]).alias(f"truth__{t}") for t in present]), "customer_id", "inner")

    def text(c: str):
        return F.col(c).cast("string")

    pairs = F.array(*[F.struct(F.lit(t).alias("tag"), text(f"tag__{t}").alias("got"), text(f"truth__{t}").alias("want"))
                      for t in present])
    long = joined.select(F.explode(pairs).alias("p")).select("p.*")
    values = long.select("tag", F.explode(F.array("got", "want")).alias("value")).filter(F.col("value").isNotNull())
    scored = (long.join(values.distinct(), "tag")
              .groupBy("tag", "value").agg(
                  F.sum((F.col("want") == F.col("value")).cast("int")).alias("planted"),
                  F.sum(F.coalesce((F.col("got") == F.col("value")).cast("int"), F.lit(0))).alias("detected"),
                  F.sum(F.coalesce(((F.col("got") == F.col("value")) & (F.col("want") == F.col("value"))).cast("int"),
                                   F.lit(0))).alias("tp"))
              .collect())  # a handful of (tag, value) rows
    booleans = {t for t in present if isinstance(tagged.schema[t].dataType, BooleanType)}
    out = []
    order = {t: i for i, t in enumerate(present)}
    for r in sorted(scored, key=lambda r: (order[r["tag"]], r["value"])):
        if r["tag"] in booleans and r["value"] != "true":
            continue
        out.append(DetectionScore(f"{r['tag']}={r['value']}", int(r["planted"] or 0), int(r["detected"] or 0),
                                  int(r["tp"] or 0)))
    return out


def uplift_truth_check(lake, as_of: dt.date) -> list[dict]:
    """Planted (truth.campaigns) vs measured (gold.campaign_evaluation) uplift per campaign of cycle ``as_of``.

    Each dict: campaign_id, base_rate, true_uplift, n_treatment, n_control,
    uplift, uplift_ci_low, uplift_ci_high, confidence, covered (planted inside
    the campaign's own interval), uplift_family_low, uplift_family_high,
    family_size, family_confidence, covered_family (planted inside the
    simultaneous interval), holdout_share (configured) and control_share
    (measured among the cycle's targets). ``covered*`` is None when the
    campaign has no interval.
    """
    truth = {r["campaign_id"]: r for r in lake.read_arrow("truth.campaigns").to_pylist() if r["cycle_as_of"] == as_of}
    evaluation = {r["campaign_id"]: r for r in lake.read("gold.campaign_evaluation")
                  .filter((F.col("as_of") == F.lit(as_of)) & (F.col("level") == "campaign")).collect()}
    measured = ("n_treatment", "n_control", "uplift", "uplift_ci_low", "uplift_ci_high", "confidence",
                "uplift_family_low", "uplift_family_high", "family_size", "family_confidence")
    rows = []
    for cid in sorted(truth):
        t, e = truth[cid], evaluation.get(cid)
        row = dict(campaign_id=cid, base_rate=t["base_rate"], true_uplift=t["true_uplift"],
                   holdout_share=t["holdout_share"], **{k: None for k in measured}, covered=None,
                   covered_family=None, control_share=None)
        row.update(n_treatment=0, n_control=0)
        if e is not None:
            n = e["n_treatment"] + e["n_control"]
            row.update({k: e[k] for k in measured}, control_share=e["n_control"] / n if n else None)
            if e["uplift_ci_low"] is not None:
                row["covered"] = e["uplift_ci_low"] <= t["true_uplift"] <= e["uplift_ci_high"]
            if e["uplift_family_low"] is not None:
                row["covered_family"] = e["uplift_family_low"] <= t["true_uplift"] <= e["uplift_family_high"]
        rows.append(row)
    return rows


def rate_advice_accuracy(lake, as_of: dt.date) -> dict:
    """gold.customer_tags.tou_saver (the rate advisor's TOU recommendation) of the as-of vs truth.meters.tou_saver.

    Scored over the customers both sides decide: ``truth_unknown`` counts the customers whose truth is too
    close to a threshold to call (generate.tou_saver_margin_cny), ``tag_unknown`` those the pipeline leaves
    unknown (too few priced days, or a current plan the archive does not give). Returns the counts with
    the DetectionScore of the decided customers (``score``).
    """
    tags = lake.read("gold.customer_tags").filter(F.col("as_of") == F.lit(as_of)).select("customer_id", "tou_saver")
    truth = (lake.read("truth.meters").filter(F.col("customer_id").isNotNull())
             .select("customer_id", F.col("tou_saver").alias("truth")))
    row = (tags.join(truth, "customer_id").agg(
        F.count(F.lit(1)).alias("customers"),
        F.count(F.when(F.col("truth").isNull(), 1)).alias("truth_unknown"),
        F.count(F.when(F.col("truth").isNotNull() & F.col("tou_saver").isNull(), 1)).alias("tag_unknown"),
        F.count(F.when(F.col("truth") & F.col("tou_saver").isNotNull(), 1)).alias("planted"),
        F.count(F.when(F.col("tou_saver") & F.col("truth").isNotNull(), 1)).alias("detected"),
        F.count(F.when(F.col("tou_saver") & F.col("truth"), 1)).alias("tp"),
        F.count(F.when(F.col("truth") & F.col("tou_saver").isNull(), 1)).alias("planted_tag_unknown"))
        .collect()[0])
    return {"customers": row["customers"], "truth_unknown": row["truth_unknown"], "tag_unknown": row["tag_unknown"],
            "planted_tag_unknown": row["planted_tag_unknown"],
            "score": DetectionScore("tou_saver=true", row["planted"], row["detected"], row["tp"])}


def alert_timeliness(lake, tariff, *, baseline_months: int, lead_days: int = 7) -> dict:
    """gold.alert_targets (bill_projection rows, both arms) vs the bill shocks of truth.meters.

    A planted shock belongs to the bill period (calendar month) of its ``bill_shock_start_date``; it is
    scored when the customer can be alerted at all: consent (do_not_contact false), a current plan
    (``tariff.current_plan``) and a bill baseline before the period (the stage's own rule, with
    ``baseline_months``); the others are counted as excluded. Only the periods gold.alert_targets holds rows
    of are scored (a backfill of the last period scores that period).

    Returns: ``periods`` scored; ``planted`` shocks in them; ``excluded`` {reason: count}; ``scored``;
    ``on_time`` (a bill_projection row of the period dated at least ``lead_days`` before its end);
    ``alerted`` (any row of the period); ``before_start`` (on time, but dated before the shock began);
    ``on_time_share``; ``twice`` (customer, alert type and period with more than one row); ``alerts`` (all
    bill_projection rows); ``false_alerts`` (of them, customers without a shock starting in that period),
    ``false_share``, and ``by_period`` {period start: (alerts, false alerts)}.
    """
    from gridpersona.transform import alerts as AL

    alerts = lake.read("gold.alert_targets")
    bills_rows = alerts.filter(F.col("alert_type") == "bill_projection")
    periods = sorted(r[0] for r in alerts.select("period_start").distinct().collect())
    twice = alerts.groupBy("customer_id", "alert_type", "period_start").count().filter(F.col("count") > 1).count()
    truth = (lake.read("truth.meters").filter(F.col("customer_id").isNotNull() & F.col("bill_shock"))
             .select("customer_id", F.col("bill_shock_start_date").alias("start"),
                     F.trunc("bill_shock_start_date", "month").alias("period_start"))
             .filter(F.col("period_start").isin(periods)))
    archive = lake.read("bronze.customer_archive")
    contactable = AL.contactable_customers(archive, tariff)
    billing = lake.read("bronze.billing_payment") if lake.exists("bronze.billing_payment") else None
    base = (AL.bill_baselines(billing, periods, baseline_months).select("customer_id", "period_start",
                                                                        F.lit(True).alias("has_baseline"))
            if billing is not None and periods else None)
    shocks = truth.join(contactable.select("customer_id", F.lit(True).alias("consent"), "plan_id"), "customer_id",
                        "left")
    shocks = (shocks.join(base, ["customer_id", "period_start"], "left") if base is not None
              else shocks.withColumn("has_baseline", F.lit(None).cast("boolean")))
    first = bills_rows.groupBy("customer_id", "period_start").agg(F.min("alert_date").alias("alert_date"))
    shocks = shocks.join(first, ["customer_id", "period_start"], "left")
    reason = (F.when(F.col("consent").isNull(), F.lit("no consent (do_not_contact true or unknown)"))
              .when(F.col("plan_id").isNull(), F.lit("current plan unknown"))
              .when(F.col("has_baseline").isNull(), F.lit("no bill baseline")))
    on_time = F.col("alert_date") <= F.date_sub(F.last_day("period_start"), lead_days)
    rows = shocks.withColumn("reason", reason).groupBy("reason").agg(
        F.count(F.lit(1)).alias("n"),
        F.count(F.when(on_time, 1)).alias("on_time"),
        F.count("alert_date").alias("alerted"),
        F.count(F.when(on_time & (F.col("alert_date") < F.col("start")), 1)).alias("before_start")).collect()
    scored = next((r for r in rows if r["reason"] is None), None)
    n = scored["n"] if scored else 0
    planted_periods = truth.select("customer_id", "period_start", F.lit(True).alias("shock"))
    by_period = (bills_rows.join(planted_periods, ["customer_id", "period_start"], "left").groupBy("period_start")
                 .agg(F.count(F.lit(1)).alias("alerts"), F.count(F.when(F.col("shock").isNull(), 1)).alias("false"))
                 .collect())
    counted = {"alerts": sum(r["alerts"] for r in by_period), "false": sum(r["false"] for r in by_period)}
    return {
        "periods": periods,
        "planted": sum(r["n"] for r in rows),
        "excluded": {r["reason"]: r["n"] for r in rows if r["reason"] is not None},
        "scored": n,
        "on_time": scored["on_time"] if scored else 0,
        "alerted": scored["alerted"] if scored else 0,
        "before_start": scored["before_start"] if scored else 0,
        "on_time_share": (scored["on_time"] / n) if n else None,
        "twice": twice,
        "alerts": counted["alerts"],
        "false_alerts": counted["false"],
        "false_share": counted["false"] / counted["alerts"] if counted["alerts"] else None,
        "by_period": {r["period_start"]: (r["alerts"], r["false"]) for r in sorted(by_period, key=lambda r: r[0])},
        "lead_days": lead_days,
    }


def holiday_vacancy(lake: Lake, as_of: dt.date, first: dt.date, holiday_dates: frozenset[dt.date] | set[dt.date],
                    near_zero_kwh: float, min_completeness: float) -> dict:
    """Issue 16's bar "no holiday absence flagged as vacancy", against truth.meters.archetype.

    For the as-of's gold.customer_tags: ``false_vacancy`` customers tagged vacancy whose planted archetype
    is not ``vacant``; ``holiday_false_vacancy`` those of them whose trailing near-zero run (complete days of
    silver.daily_load_shape ``first`` .. ``as_of`` below ``near_zero_kwh``, counted the plain way: every
    complete day, holidays included) holds a day of ``holiday_dates`` (the bar: 0); ``holiday_near_zero``
    non-vacant customers with such a run of 3+ days reaching into a holiday period (the absences the
    lake holds, tagged or not: the test is real only when this is above 0); ``vacancy_tagged``,
    ``vacant_planted``, ``vacant_tagged`` (true positives).
    """
    tags = lake.read("gold.customer_tags").filter(F.col("as_of") == F.lit(as_of)).select("customer_id", "meter_id",
                                                                                            "vacancy")
    truth = lake.read("truth.meters").filter(F.col("customer_id").isNotNull()).select("customer_id", "archetype")
    complete = F.col("completeness") >= F.lit(float(min_completeness))
    daily = (lake.read("silver.daily_load_shape").filter(F.col("date").between(first, as_of) & complete)
             .select("meter_id", "date", (F.col("daily_kwh") < F.lit(float(near_zero_kwh))).alias("nz")))
    last_break = daily.filter(~F.col("nz")).groupBy("meter_id").agg(F.max("date").alias("_break"))
    holiday = F.col("date").isin(sorted(holiday_dates)) if holiday_dates else F.lit(False)
    runs = (daily.join(last_break, "meter_id", "left")
            .filter(F.col("nz") & (F.col("_break").isNull() | (F.col("date") > F.col("_break"))))
            .groupBy("meter_id").agg(F.count(F.lit(1)).alias("run_days"),
                                     F.max(holiday.cast("int")).alias("in_holiday")))
    rows = (tags.join(truth, "customer_id").join(runs, "meter_id", "left")
            .agg(F.count(F.when(F.col("vacancy"), 1)).alias("vacancy_tagged"),
                 F.count(F.when(F.col("archetype") == "vacant", 1)).alias("vacant_planted"),
                 F.count(F.when(F.col("vacancy") & (F.col("archetype") == "vacant"), 1)).alias("vacant_tagged"),
                 F.count(F.when(F.col("vacancy") & (F.col("archetype") != "vacant"), 1)).alias("false_vacancy"),
                 F.count(F.when(F.col("vacancy") & (F.col("archetype") != "vacant") & (F.col("in_holiday") == 1), 1))
                 .alias("holiday_false_vacancy"),
                 F.count(F.when((F.col("archetype") != "vacant") & (F.col("in_holiday") == 1)
                                & (F.col("run_days") >= 3), 1)).alias("holiday_near_zero"))
            .first())
    return {k: int(v) for k, v in rows.asDict().items()}


def anomaly_detection(lake, as_of: dt.date) -> dict:
    """gold.anomaly_flags of the as-of vs the planted cases of truth.anomalies.

    Per kind: ``planted`` cases of the kind, ``detected`` flags of the kind, ``true_positive`` flags of the kind
    on a meter whose planted case is that kind (a flag names the right kind). Two overall scores: ``strict``
    (the same match summed over the kinds: a flag of the wrong kind is a false positive and leaves its case
    missed) and ``any_kind`` (per meter: a flagged meter with any planted case is found, whatever the flags
    say). ``unplanted_meters``: meters flagged without a planted case, with ``unplanted_by_flag`` {flag: meters};
    ``start_error_days``: median |flag start - planted start| over the right-kind matches (None: none).
    """
    from gridpersona.contracts.truth import ANOMALY_KINDS

    flags = (lake.read("gold.anomaly_flags").filter(F.col("as_of") == F.lit(as_of))
             .select("meter_id", "flag", F.col("start_date").alias("flag_start")))
    truth = lake.read("truth.anomalies").select("meter_id", "kind", "start_date")
    joined = flags.join(truth, "meter_id", "full").collect()
    per_kind, starts = {}, []
    for kind in ANOMALY_KINDS:
        planted = {r["meter_id"] for r in joined if r["kind"] == kind}
        detected = {r["meter_id"] for r in joined if r["flag"] == kind}
        per_kind[kind] = DetectionScore(kind, len(planted), len(detected), len(planted & detected))
    for r in joined:
        if r["flag"] is not None and r["flag"] == r["kind"]:
            starts.append(abs((r["flag_start"] - r["start_date"]).days))
    planted_meters = {r["meter_id"] for r in joined if r["kind"] is not None}
    flagged_meters = {r["meter_id"] for r in joined if r["flag"] is not None}
    unplanted = Counter(r["flag"] for r in joined if r["flag"] is not None and r["kind"] is None)
    scores = list(per_kind.values())
    return {
        "per_kind": scores,
        "strict": DetectionScore("all (kind named)", sum(s.planted for s in scores), sum(s.detected for s in scores),
                                 sum(s.true_positive for s in scores)),
        "any_kind": DetectionScore("all (any flag)", len(planted_meters), len(flagged_meters),
                                   len(planted_meters & flagged_meters)),
        "unplanted_meters": len(flagged_meters - planted_meters),
        "unplanted_by_flag": dict(sorted(unplanted.items())),
        "start_error_days": float(np.median(starts)) if starts else None,
    }
