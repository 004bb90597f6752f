"""Planted vs measured campaign uplift on a synthetic lake (issue 4: campaigns and A/B evaluation).

    PYTHONPATH=lib python scripts/campaign_check.py --lake /tmp/camplake --meters 3300 --days 35
    PYTHONPATH=lib python scripts/campaign_check.py --lake /tmp/outlake --outcomes      # 3300 x 90 days

Generates the lake (unless --reuse), runs the whole pipeline for the campaign
cycle's day (`run all`: the campaigns target from the tags stage's own
gold.customer_tags; --tags-from-lake runs only campaigns and evaluate over the
tags the lake already holds) and prints, per campaign, the planted uplift, the
measured uplift with both its intervals, whether each covers the planted value,
and the measured control share of the targets.

The bar it checks (exit status 0 or 1) is the simultaneous one: every planted
uplift inside its family interval (Bonferroni over the m campaigns of the
cycle; all m cover together with probability >= campaigns.confidence). The
per-campaign intervals are reported too, but all m of them covering is not a
bar: with m = 8 independent 95 % intervals that happens only ~66 % of the time.

--outcomes checks the business outcomes instead (issue 15): the generator plants a past cycle
generate.outcome_days before the lake's last day with a kWh saving x for the treated customers of
generate.outcome_kwh_campaign and a closure probability lowered by delta for those of
generate.outcome_churn_campaign (truth.campaign_outcomes). The script runs `all` at that cycle (targets),
clean and shapes incrementally to the last day (the days after it), then `evaluate` at the cycle, and
checks that log(1 - x) and -delta lie inside their 95 % intervals in gold.campaign_outcomes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from gridpersona.config import load_settings
from gridpersona.console import render_table, setup_logging
from gridpersona.synthetic.generate import generate_lake
from gridpersona.synthetic.truth_checks import uplift_truth_check
from gridpersona.lake import Lake, spark_conf
from gridpersona.stages.pipeline import run_pipeline
from gridpersona.session import build_spark


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lake", required=True, help="lake root")
    p.add_argument("--meters", type=int, default=3300)
    p.add_argument("--days", type=int, default=None, help="days of the lake (default 35; 90 with --outcomes)")
    p.add_argument("--start", default="2026-06-01")
    p.add_argument("--env", default="local")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--reuse", action="store_true", help="keep an existing lake; do not generate")
    p.add_argument("--tags-from-lake", action="store_true", help="run only campaigns and evaluate, over the lake's gold.customer_tags as they are")
    p.add_argument("--outcomes", action="store_true",
                   help="check the planted kWh and churn effects of the past cycle (truth.campaign_outcomes) instead "
                        "of the response uplifts; --days defaults to 90")
    args = p.parse_args(argv)
    setup_logging(False)
    settings = load_settings(args.env, [f"lake.root={args.lake}", *args.overrides])
    spark = build_spark(settings, app_name="gridpersona-campaign-check", lake_conf=spark_conf(settings))
    lake = Lake(settings, spark)
    start = dt.date.fromisoformat(args.start)
    days = args.days if args.days is not None else (90 if args.outcomes else 35)
    if not args.reuse:
        generate_lake(settings, lake, meters=args.meters, days=days, start=start)
    if args.outcomes:
        code = check_outcomes(settings, spark, lake, start + dt.timedelta(days=days - 1), args.tags_from_lake)
        spark.stop()
        return code
    as_of = max(r["cycle_as_of"] for r in lake.read_arrow("truth.campaigns").to_pylist())
    if args.tags_from_lake:
        results = run_pipeline(settings, spark, lake, "campaigns", as_of)
        results += run_pipeline(settings, spark, lake, "evaluate", as_of)
    else:
        results = run_pipeline(settings, spark, lake, "all", as_of)
    for stage, result in results:
        print(f"[{stage}] " + "\n[{stage}] ".join(result.notes).replace("{stage}", stage))
    rows = uplift_truth_check(lake, as_of)

    def pp(x):
        return "-" if x is None else f"{100 * x:+.2f}"

    def yes(covered):
        return {True: "yes", False: "NO", None: "-"}[covered]

    table = [[r["campaign_id"], f"{100 * r['base_rate']:.2f}", pp(r["true_uplift"]), pp(r["uplift"]),
              f"[{pp(r['uplift_ci_low'])}, {pp(r['uplift_ci_high'])}]", yes(r["covered"]),
              f"[{pp(r['uplift_family_low'])}, {pp(r['uplift_family_high'])}]", yes(r["covered_family"]),
              f"{r['n_treatment']:,}", f"{r['n_control']:,}", f"{100 * r['holdout_share']:.0f}%",
              "-" if r["control_share"] is None else f"{100 * r['control_share']:.1f}%"] for r in rows]
    confidence = settings.campaigns.confidence
    family = next((r for r in rows if r["family_confidence"] is not None), None)
    m = family["family_size"] if family else 0
    print(f"\ncycle {as_of}: planted vs measured uplift (percentage points); per-campaign interval: "
          f"{confidence:.0%} Newcombe; family interval: Bonferroni over the cycle's {m} evaluated campaigns, each at "
          + (f"{family['family_confidence']:.4%}" if family else "-"))
    print(render_table(["campaign", "base %", "planted", "measured", f"{confidence:.0%} interval", "covers",
                        "family interval", "covers", "n treat", "n ctrl", "holdout", "ctrl share"], table,
                       align_right=[1, 2, 3, 8, 9, 10, 11]))
    n_c = sum(r["n_control"] for r in rows)
    n = n_c + sum(r["n_treatment"] for r in rows)
    covered = sum(1 for r in rows if r["covered"])
    covered_family = sum(1 for r in rows if r["covered_family"])
    print(f"control share over all targets: {n_c:,}/{n:,} = {n_c / n:.2%}" if n else "no targets")
    print(f"planted uplift inside its per-campaign {confidence:.0%} interval: {covered}/{len(rows)} campaigns "
          f"(not a bar: all {m} cover together only with probability ~{confidence ** m:.0%})")
    print(f"planted uplift inside its family interval: {covered_family}/{len(rows)} campaigns "
          f"(the bar checked: all {m} cover together with probability >= {confidence:.0%}) -> "
          + ("PASS" if covered_family == len(rows) else "FAIL"))
    unevaluated = [r["campaign_id"] for r in rows if r["covered_family"] is None]
    if unevaluated:
        print(f"no interval (a group without targets or responses), so the bar fails for: {', '.join(unevaluated)}")
    spark.stop()
    return 0 if covered_family == len(rows) else 1


def check_outcomes(settings, spark, lake, last_day: dt.date, tags_from_lake: bool) -> int:
    """Target the past cycle of truth.campaign_outcomes, run the nightly stages to the lake's last day, evaluate the
    cycle, and check every planted effect against its 95 % interval in gold.campaign_outcomes; 0 when all inside."""
    from pyspark.sql import functions as F

    planted = lake.read_arrow("truth.campaign_outcomes").to_pylist() if lake.exists("truth.campaign_outcomes") else []
    if not planted:
        print("truth.campaign_outcomes is empty: no past cycle planted (generate.plant_outcomes false, or a lake "
              f"shorter than 2 x generate.outcome_days = {2 * settings.generate.outcome_days} days)")
        return 1
    cycle = planted[0]["cycle_as_of"]
    # A user's sequence: target at the cycle, let the nightly runs land the days after it, then evaluate it.
    if tags_from_lake:
        results = run_pipeline(settings, spark, lake, "campaigns", cycle)
    else:
        results = run_pipeline(settings, spark, lake, "all", cycle)
    for stage in ("clean", "shapes"):
        results += run_pipeline(settings, spark, lake, stage, last_day, incremental=True)
    results += run_pipeline(settings, spark, lake, "evaluate", cycle)
    for stage, result in results:
        if stage in ("campaigns", "evaluate"):
            print(f"[{stage}] " + f"\n[{stage}] ".join(result.notes))
    rows = {(r["campaign_id"], r["outcome"]): r for r in
            lake.read("gold.campaign_outcomes").filter((F.col("as_of") == F.lit(cycle))
                                                       & (F.col("level") == "campaign")).collect()}
    power = {(r["campaign_id"], r["outcome"]): r for r in
             lake.read("gold.campaign_power").filter(F.col("as_of") == F.lit(cycle)).collect()}

    def f(x, digits=4):
        return "-" if x is None else f"{x:+.{digits}f}"

    table, inside = [], []
    for t in planted:
        r = rows.get((t["campaign_id"], t["outcome"]))
        ok = r is not None and r["ci_low"] is not None and r["ci_low"] <= t["planted_effect"] <= r["ci_high"]
        fam = (r is not None and r["family_low"] is not None
               and r["family_low"] <= t["planted_effect"] <= r["family_high"])
        inside.append(ok)
        pw = power.get((t["campaign_id"], t["outcome"]))
        table.append([t["campaign_id"], t["outcome"], f(t["planted_effect"]), f(r and r["effect"]),
                      f"[{f(r and r['ci_low'])}, {f(r and r['ci_high'])}]", "yes" if ok else "NO",
                      f"[{f(r and r['family_low'])}, {f(r and r['family_high'])}]", "yes" if fam else "NO",
                      f"{r['n_treatment']:,}/{r['n_control']:,}" if r else "-",
                      f"{r['missing_treatment']:,}/{r['missing_control']:,}" if r else "-",
                      "-" if not r or r["mde"] is None else f"{r['mde']:.4f}",
                      "-" if not pw or pw["mde"] is None else f"{pw['mde']:.4f}",
                      (r and r["reason"]) or ""])
    print(f"\ncycle {cycle}, outcome period {planted[0]['window_first']} .. {planted[0]['window_last']}: planted vs "
          f"measured effect (treatment - control), {settings.campaigns.confidence:.0%} interval and the family's")
    print(render_table(["campaign", "outcome", "planted", "measured", "95% interval", "covers", "family interval",
                        "covers", "n t/c", "missing t/c", "MDE (measured)", "MDE (targeting)", "reason"], table,
                       align_right=[2, 3, 8, 9, 10, 11]))
    verdict = all(inside)
    print(f"planted effects inside their 95% intervals: {sum(inside)}/{len(inside)} -> {'PASS' if verdict else 'FAIL'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
