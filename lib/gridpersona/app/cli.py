"""The `gridpersona` command.

    gridpersona [--env NAME] [--set KEY=VALUE ...] COMMAND [ARGS]

Configuration is loaded and validated before any Spark session starts, so a bad
key fails in a second, naming the file and the key.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time

from gridpersona import __version__
from gridpersona.config import ConfigError, Settings, load_settings
from gridpersona.console import human_bytes, render_table, setup_logging, timed

log = logging.getLogger("gridpersona")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


INCREMENTAL_HELP = ("clean and shapes write only the dates of the pipeline.window_days window that are new or "
                    "changed since their last succeeded run (late readings included; clean also the days those "
                    "reach through its look-back); other stages run as usual. Not with --window-days")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gridpersona",
        description="Smart-meter interval data -> load segments, customer portraits and campaign targets (PySpark + Delta).",
    )
    p.add_argument("--env", default="local", help="environment config conf/<env>.yaml over conf/base.yaml (default: local)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set lake.root=/data/lake (repeatable)")
    p.add_argument("--conf-dir", default=None, help="config folder (default: the project's conf/)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"gridpersona {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    g = sub.add_parser("generate", help="write a synthetic lake with known ground truth (bronze.* and truth.*)")
    g.add_argument("--meters", type=_positive, help="meters in the archive (default: generate.meters)")
    g.add_argument("--days", type=_positive, help="days of interval data (default: generate.days)")
    g.add_argument("--seed", type=int, help="random seed (default: generate.seed)")
    g.add_argument("--start", type=_date, help="first local day, YYYY-MM-DD (default: generate.start)")
    g.add_argument("--interval-minutes", type=int, choices=(15, 30, 60), help="meter interval (default: ami.interval_minutes)")

    i = sub.add_parser("ingest", help="land Parquet/CSV files into a bronze table (contract-checked, rejects kept)")
    i.add_argument("table", help="bronze table, e.g. bronze.ami_interval")
    i.add_argument("paths", nargs="+", help="files or folders of .parquet or .csv")
    i.add_argument("--format", dest="fmt", choices=("csv", "parquet"), help="input format (default: from the file extension)")
    i.add_argument("--map", dest="mapping", action="append", default=[], metavar="COLUMN=SOURCE",
                   help="contract column <- source column, e.g. --map kwh=ENERGY (repeatable; over ingest.column_mappings)")
    i.add_argument("--replace-range", nargs=2, type=_date, metavar=("FIRST", "LAST"),
                   help="replace the rows of these local dates (inclusive) instead of appending")
    i.add_argument("--time-zone", help="zone of zone-less timestamps in the files (default: ingest.source_time_zone)")
    i.add_argument("--delimiter", help="CSV field delimiter, e.g. ';' or '\\t' for a tab (default: ingest.csv_delimiter)")

    ct = sub.add_parser("create-table", help="create an empty bronze table of its contract (an input you have no rows for)",
                        description="Create bronze TABLE with its contract's columns, types and partitioning and no "
                                    "rows. An optional input that is absent already reads as empty; an empty table "
                                    "says so explicitly. An existing table is left as it is.")
    ct.add_argument("table", help="bronze table, e.g. bronze.contact_history")

    t = sub.add_parser("tables", help="list the lake's tables with version, rows and size")
    t.add_argument("--layer", help="only this layer (bronze, silver, gold, truth, ops)")

    h = sub.add_parser("history", help="a table's Delta versions, newest first")
    h.add_argument("table")
    h.add_argument("--limit", type=_positive, default=20)

    rn = sub.add_parser("runs", help="stage runs from ops.job_runs, newest first: running, succeeded, failed or crashed",
                        description="One line per stage run: status (running, succeeded, failed, or crashed: a "
                                    "stage whose process died before it ended), start, duration, rows and the Delta "
                                    "versions it read and published. A crashed stage published nothing; rerun it.")
    rn.add_argument("--as-of", type=_date, help="only runs for this as-of date")
    rn.add_argument("--limit", type=_positive, default=20, help="at most N stage runs (default 20)")

    from gridpersona.stages.pipeline import STAGE_ORDER

    r = sub.add_parser("run", help="run one pipeline stage or all of them for an as-of date")
    r.add_argument("stage", help=", ".join(STAGE_ORDER) + ", or all")
    r.add_argument("--as-of", type=_date, required=True, help="last local day of the run's window, YYYY-MM-DD")
    window = r.add_mutually_exclusive_group()
    window.add_argument("--window-days", type=_positive,
                        help="days in the window, ending on --as-of (default: pipeline.window_days); every date of "
                             "it is rewritten (a backfill)")
    window.add_argument("--incremental", action="store_true", help=INCREMENTAL_HELP)
    r.add_argument("--allow-empty", action="store_true",
                   help="run even when the window holds no input rows (default: fail before writing anything)")

    tc = sub.add_parser("truth-check", help="score the pipeline's outputs (faults, segments, tags) against a synthetic "
                                            "lake's ground truth")
    tc.add_argument("--as-of", type=_date, required=True)
    tc.add_argument("--window-days", type=_positive, help="default: pipeline.window_days")

    q = sub.add_parser("sql", help="run read-only Spark SQL over the lake's tables by their layer.table names",
                       description="Run one Spark SQL statement with every lake table registered as a read-only view "
                                   "under its layer.table name (e.g. gold.customer_segments). Queries, SHOW, DESCRIBE "
                                   "and USE only: anything that writes, changes the catalog or settings, loads code or "
                                   "reads files by path is refused (exit 2, one line). PII columns (customer_name, "
                                   "phone, address) are never in layer.table views; pii.customer_archive has them for "
                                   "--allow-pii.")
    q.add_argument("statement", help='the SQL statement, e.g. "SELECT segment_label, count(*) FROM gold.customer_segments GROUP BY 1"')
    q.add_argument("--format", dest="fmt", choices=("table", "csv", "json"), default="table",
                   help="table (default, readable), csv (header row first) or json (JSON Lines: one object per row)")
    q.add_argument("--limit", type=int, default=1000, metavar="N",
                   help="print at most N rows (default 1000; 0 = all rows, mind the driver's memory)")
    q.add_argument("--allow-pii", action="store_true",
                   help="the pii role: may read the pii.* views (customer name, phone, address)")

    ss = sub.add_parser("sql-server", help="serve the lake read-only over JDBC/ODBC (Spark's Hive Thrift server) for beeline and BI tools",
                        description="Start Spark's Hive Thrift server inside this driver with every lake table "
                                    "registered as a read-only view under its layer.table name. Users log in with the "
                                    "name and password of `gridpersona sql-user` (sql_server.users_file); without a "
                                    "users file it starts only on a loopback address, unauthenticated. Connect with "
                                    "$SPARK_HOME/bin/beeline -u jdbc:hive2://HOST:PORT -n USER -p PASSWORD. Runs until "
                                    "Ctrl-C / SIGTERM.")
    ss.add_argument("--port", type=_positive, default=10000, help="TCP port (default 10000)")
    ss.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; any other address needs a users file)")
    ss.add_argument("--refresh-seconds", type=float, default=60.0,
                    help="re-register tables whose Delta version moved, every N seconds (default 60; 0 = never)")

    su = sub.add_parser("sql-user", help="manage sql-server users (name, role analyst|pii, password)",
                        description="Add, list or remove the users of `gridpersona sql-server` in sql_server.users_file "
                                    "(mode 0600; passwords stored as PBKDF2-SHA256 hashes). Role analyst reads the "
                                    "layer.table views; role pii also reads the pii.* views (customer PII).")
    su_sub = su.add_subparsers(dest="action", metavar="ACTION")
    su_sub.required = True
    sa = su_sub.add_parser("add", help="add a user, or replace its role and password")
    sa.add_argument("name")
    sa.add_argument("--role", choices=("analyst", "pii"), required=True)
    sa.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    su_sub.add_parser("list", help="user names and roles")
    sr = su_sub.add_parser("remove", help="remove a user")
    sr.add_argument("name")

    rp = sub.add_parser("report", help="write a self-contained HTML report (pictures inline) of one as-of",
                        description="Self-contained HTML: stage timings and rows (ops.job_runs), data quality, "
                                    "segment table, centroid load curves, segment radar, tag distributions, "
                                    "campaign funnel. Aggregates only, no customer rows or PII, unless "
                                    "--customer asks for a customer's portrait page.")
    rp.add_argument("--as-of", type=_date, help="as-of date (default: the newest in gold.segment_profile)")
    rp.add_argument("--out", help="output file (default: <lake.root>/_reports/report-<as-of>.html)")
    rp.add_argument("--customer", action="append", default=[], metavar="ID",
                    help="add a portrait page for this customer id (repeatable): the numbers of "
                         "gold.customer_portrait, a radar of percentiles among peers of the same customer type, "
                         "the weekday/weekend load curve against the peers' mean and the segment centroid")

    d = sub.add_parser("demo", help="the main job on the embedded default: generate the lake if absent, then list it")
    d.add_argument("--regenerate", action="store_true", help="regenerate the synthetic lake even if it exists")
    return p


def _lake(settings: Settings, spark=None):
    from gridpersona.lake import Lake

    return Lake(settings, spark)


def cmd_generate(settings: Settings, args) -> int:
    from gridpersona.synthetic.generate import generate_lake

    lake = _lake(settings)
    with timed("generate") as info:
        counts = generate_lake(settings, lake, meters=args.meters, days=args.days, seed=args.seed, start=args.start,
                               interval_minutes=args.interval_minutes, progress=log.info)
        info["rows"] = sum(counts.values())
    print(render_table(["table", "rows"], [[t, f"{n:,}"] for t, n in sorted(counts.items())], align_right=[1]))
    print(f"lake: {lake.root}  ({info['seconds']:.1f} s)")
    return 0


def cmd_ingest(settings: Settings, args) -> int:
    from gridpersona.stages.ingest import ingest_files

    mapping = {}
    for item in args.mapping:
        column, sep, source = item.partition("=")
        if not sep or not column or not source:
            raise ConfigError(f"--map {item!r}: expected COLUMN=SOURCE, e.g. --map kwh=ENERGY")
        mapping[column.strip()] = source.strip()
    delimiter = "\t" if args.delimiter in ("\\t", "tab") else args.delimiter
    lake = _lake(settings)
    report = ingest_files(lake.spark, lake, settings, args.table, args.paths, fmt=args.fmt, mapping=mapping,
                          replace_range=tuple(args.replace_range) if args.replace_range else None, time_zone=args.time_zone,
                          delimiter=delimiter)
    print(report.render())
    return 0


def cmd_create_table(settings: Settings, args) -> int:
    from gridpersona.stages.inputs import create_empty_bronze

    lake = _lake(settings)
    version = create_empty_bronze(lake, args.table)
    if version is None:
        print(f"{args.table} already exists at {lake.path(args.table)} (version {lake.version(args.table)}): left as it is")
    else:
        print(f"{args.table} created empty at {lake.path(args.table)} (version {version})")
    return 0


def cmd_tables(settings: Settings, args) -> int:
    lake = _lake(settings)
    names = [t for t in lake.list_tables() if not args.layer or t.split(".")[0] == args.layer]
    if not names:
        print(f"no tables under {lake.root} (run `gridpersona generate` or `gridpersona demo`)")
        return 0
    print(tables_report(lake, names))
    return 0


def tables_report(lake, names: list[str]) -> str:
    rows = []
    total_rows, total_bytes = 0, 0
    for name in names:
        info = lake.info(name)
        total_rows += info.rows or 0
        total_bytes += info.size_bytes
        rows.append([name, info.version, "-" if info.rows is None else f"{info.rows:,}", human_bytes(info.size_bytes),
                     info.files, ",".join(info.partition_by) or "-"])
    rows.append(["total", "", f"{total_rows:,}", human_bytes(total_bytes), "", ""])
    return render_table(["table", "version", "rows", "size", "files", "partitioned by"], rows, align_right=[1, 2, 3, 4]) + f"\nlake: {lake.root}"


def cmd_history(settings: Settings, args) -> int:
    lake = _lake(settings)
    rows = []
    for h in lake.history(args.table, args.limit):
        when = dt.datetime.fromtimestamp(h["timestamp"] / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        params = {k: v for k, v in (h["parameters"] or {}).items() if k in ("mode", "partitionBy", "predicate")}
        rows.append([h["version"], when, h["operation"], " ".join(f"{k}={v}" for k, v in params.items())])
    print(render_table(["version", "committed", "operation", "parameters"], rows, align_right=[0]))
    return 0


def _versions_text(versions: dict) -> str:
    return ", ".join(f"{t}@{v}" for t, v in sorted(versions.items())) or "-"


def cmd_runs(settings: Settings, args) -> int:
    from gridpersona.stages.runner import stage_runs

    lake = _lake(settings)
    runs = stage_runs(lake, as_of=args.as_of, limit=args.limit)
    if not runs:
        print(f"no stage runs in ops.job_runs under {lake.root}" + (f" for as-of {args.as_of}" if args.as_of else ""))
        return 0
    rows = []
    for r in runs:
        started = r["started_at"].astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if r["started_at"] else "-"
        rows.append([r["run_id"], r["stage"], str(r["as_of"]), r["status"], started,
                     "-" if r["duration_s"] is None else f"{r['duration_s']:.1f}",
                     "-" if r["rows_in"] is None else f"{r['rows_in']:,}", "-" if r["rows_out"] is None else f"{r['rows_out']:,}",
                     _versions_text(r["versions_read"]), _versions_text(r["versions_written"])])
    print(render_table(["run", "stage", "as-of", "status", "started (UTC)", "seconds", "rows in", "rows out",
                        "read", "published"], rows, align_right=[5, 6, 7]))
    crashed = [r for r in runs if r["status"] == "crashed"]
    if crashed:
        print(f"{len(crashed)} crashed stage run(s): they published nothing (readers see the previous versions); "
              f"rerun the stage, e.g. `gridpersona run {crashed[0]['stage']} --as-of {crashed[0]['as_of']}`")
    return 0


def stage_summary(results) -> str:
    rows = []
    for name, res in results:
        outs = ", ".join(f"{t} {n:,}" for t, n in res.outputs.items())
        rate = f"{res.rows_in / res.seconds:,.0f}" if res.rows_in and res.seconds else "-"
        rows.append([name, f"{res.seconds:.1f}", f"{res.rows_in:,}", rate, outs])
    total = sum(res.seconds for _, res in results)
    rows.append(["total", f"{total:.1f}", "", "", ""])
    return render_table(["stage", "seconds", "rows in", "rows/s", "rows out"], rows, align_right=[1, 2, 3])


def cmd_run(settings: Settings, args) -> int:
    from gridpersona.stages.pipeline import resolve_stages, run_pipeline

    resolve_stages(args.stage)  # a typo fails here, before a Spark session starts
    lake = _lake(settings)
    # No session yet: run_pipeline checks the window's input from the Delta log before starting one.
    results = run_pipeline(settings, None, lake, args.stage, args.as_of, args.window_days,
                           allow_empty=args.allow_empty, incremental=args.incremental)
    print(stage_summary(results))
    return 0


def cmd_truth_check(settings: Settings, args) -> int:
    lake = _lake(settings)
    days = args.window_days or settings.pipeline.window_days
    first = args.as_of - dt.timedelta(days=days - 1)
    print(truth_report(lake, first, args.as_of, settings.ami.interval_minutes))
    return 0


def truth_report(lake, first: dt.date, last: dt.date, interval_minutes: int) -> str:
    from pyspark.sql import functions as F

    from gridpersona.synthetic.truth_checks import fault_detection, segment_agreement

    # A window reaching back before the lake's first day would count those days' intervals as long gaps.
    lake_first = lake.read("bronze.ami_interval").agg(F.min("date")).collect()[0][0]
    first = max(first, lake_first) if lake_first else first
    scores = fault_detection(lake, first, last, interval_minutes)
    lines = ["fault detection vs truth.faults (local days %s .. %s)" % (first, last),
             render_table(["fault", "planted", "detected", "true pos", "precision", "recall"],
                          [[s.category, f"{s.planted:,}", f"{s.detected:,}", f"{s.true_positive:,}",
                            f"{s.precision:.4f}", f"{s.recall:.4f}"] for s in scores], align_right=[1, 2, 3, 4, 5])]
    if lake.exists("gold.customer_segments"):
        agree = segment_agreement(lake, last)
        lines += ["", f"segments vs truth.meters.archetype ({agree['meters']:,} meters): "
                      f"ARI(segment_id) {agree['ari_segment_id']:.4f}, ARI(segment_label) {agree['ari_segment_label']:.4f}",
                  render_table(["archetype", "majority label", "share"],
                               [[a, lab, f"{share:.3f}"] for a, (lab, share) in sorted(agree["majority_label"].items())],
                               align_right=[2])]
    if lake.exists("gold.customer_tags"):
        lines += ["", tag_accuracy_report(lake, last)]
        lines += ["", holiday_vacancy_report(lake, first, last)]
        if "tou_saver" in lake.read("gold.customer_tags").columns:
            lines += ["", rate_advice_report(lake, last)]
    if lake.exists("gold.alert_targets") and lake.exists("truth.meters") \
            and "bill_shock_start_date" in lake.read("truth.meters").columns:
        lines += ["", alert_timeliness_report(lake)]
    if lake.exists("gold.anomaly_flags") and lake.exists("truth.anomalies"):
        lines += ["", anomaly_report(lake, last)]
    return "\n".join(lines)


# Issue 16's bar for abnormal-use flags: planted cases found with precision and recall of at least 0.80.
ANOMALY_BAR = 0.80


def anomaly_report(lake, as_of: dt.date) -> str:
    """gold.anomaly_flags vs truth.anomalies: precision / recall per kind and overall, with the bar."""
    from gridpersona.synthetic.truth_checks import anomaly_detection

    r = anomaly_detection(lake, as_of)
    if not (r["strict"].planted or r["strict"].detected):
        return f"anomalies: no planted case and no flag for {as_of} (a lake of 28+ days plants them)"
    rows = []
    for s in [*r["per_kind"], r["strict"], r["any_kind"]]:
        bar = s in (r["strict"], r["any_kind"])
        verdict = ("ok" if min(s.precision, s.recall) >= ANOMALY_BAR else "BELOW") if bar else "-"
        rows.append([s.category, f"{s.planted:,}", f"{s.detected:,}", f"{s.true_positive:,}", f"{s.precision:.4f}",
                     f"{s.recall:.4f}", f"{ANOMALY_BAR:.2f}" if bar else "-", verdict])
    unplanted = ", ".join(f"{k} {v:,}" for k, v in r["unplanted_by_flag"].items()) or "none"
    start = "-" if r["start_error_days"] is None else f"{r['start_error_days']:.1f}"
    return (f"anomalies vs truth.anomalies (as of {as_of}; a flag of kind k finds a case of kind k; 'any flag': a "
            f"flagged meter with any case); {r['unplanted_meters']:,} meters flagged without a planted case "
            f"({unplanted}); median start-date error {start} days\n"
            + render_table(["kind", "planted", "flagged", "true pos", "precision", "recall", "bar", ""], rows,
                           align_right=[1, 2, 3, 4, 5, 6]))


def holiday_vacancy_report(lake, first: dt.date, last: dt.date) -> str:
    """Issue 16's bar: no customer tagged vacancy for a holiday absence (non-vacant archetype, near-zero
    run in a holiday period of the run's calendar)."""
    from gridpersona.stages.calendar import holiday_calendar
    from gridpersona.synthetic.truth_checks import holiday_vacancy

    s = lake.settings
    cal = holiday_calendar(lake, s, first, last)
    r = holiday_vacancy(lake, last, first, cal.period_dates(), s.tags.features.near_zero_daily_kwh,
                        s.tags.features.min_completeness)
    verdict = "ok" if r["holiday_false_vacancy"] == 0 else "BELOW"
    return (f"vacancy vs holidays ({cal.note}): {r['holiday_false_vacancy']:,} non-vacant customers tagged vacancy "
            f"with a near-zero run in a holiday period (bar 0: {verdict}); {r['holiday_near_zero']:,} non-vacant "
            f"customers near-zero for 3+ days into a holiday period; vacancy tagged {r['vacancy_tagged']:,} "
            f"({r['vacant_tagged']:,} of {r['vacant_planted']:,} planted vacant, {r['false_vacancy']:,} not vacant)")


# Issue 15's bars for mid-cycle alerts: planted bill shocks alerted at least ALERT_LEAD_DAYS before their
# period ends (share >= ALERT_ON_TIME_BAR), nobody twice in a period, alerts without a shock <= ALERT_FALSE_BAR.
ALERT_LEAD_DAYS, ALERT_ON_TIME_BAR, ALERT_FALSE_BAR = 7, 0.90, 0.05


def alert_timeliness_report(lake) -> str:
    """gold.alert_targets (bill_projection) vs the planted bill shocks of truth.meters, with the bars."""
    from gridpersona.synthetic.truth_checks import alert_timeliness

    s = lake.settings
    r = alert_timeliness(lake, s.tariff, baseline_months=s.alerts.baseline_months, lead_days=ALERT_LEAD_DAYS)
    if not r["periods"]:
        return "alerts: gold.alert_targets has no rows (run alerts for the days of a bill period)"
    excluded = ", ".join(f"{v:,} {k}" for k, v in sorted(r["excluded"].items())) or "none"

    def share(x):
        return "-" if x is None else f"{x:.1%}"

    on_time_ok = r["on_time_share"] is not None and r["on_time_share"] >= ALERT_ON_TIME_BAR
    false_ok = r["false_share"] is not None and r["false_share"] <= ALERT_FALSE_BAR
    rows = [[f"shocks alerted >= {r['lead_days']} days before the period ends", f"{r['on_time']:,} / {r['scored']:,}",
             share(r["on_time_share"]), f">= {ALERT_ON_TIME_BAR:.0%}", "ok" if on_time_ok else "BELOW"],
            ["customers alerted twice in a period", f"{r['twice']:,}", "-", "0", "ok" if r["twice"] == 0 else "BELOW"],
            ["bill alerts without a planted shock", f"{r['false_alerts']:,} / {r['alerts']:,}", share(r["false_share"]),
             f"<= {ALERT_FALSE_BAR:.0%}", "ok" if false_ok else "BELOW"]]
    periods = ", ".join(p.isoformat()[:7] for p in r["periods"])
    split = "; ".join(f"{p.isoformat()[:7]}: {n:,} bill alerts, {f:,} without a shock" for p, (n, f) in
                      r["by_period"].items())
    return (f"alerts vs truth.meters.bill_shock (periods {periods}; {r['planted']:,} planted shocks, not scored: "
            f"{excluded}; {r['before_start']:,} of the on-time alerts came before the shock began; both arms)\n"
            + render_table(["measure", "count", "share", "bar", ""], rows, align_right=[1, 2])
            + (f"\nby period: {split}" if split else ""))


# Issue 15's bar for the rate advisor: planted TOU savers found with precision and recall of at least 0.95.
RATE_ADVICE_BAR = 0.95


def rate_advice_report(lake, as_of: dt.date) -> str:
    """The tou_saver tag (rate advisor) vs truth.meters.tou_saver, with the bar and what was not scored."""
    from gridpersona.synthetic.truth_checks import rate_advice_accuracy

    r = rate_advice_accuracy(lake, as_of)
    s = r["score"]
    if not (s.planted or s.detected):  # nothing to score is no evidence, not a pass
        return f"rate advisor: no customer of {as_of} could be scored against truth.meters.tou_saver"
    verdict = "ok" if min(s.precision, s.recall) >= RATE_ADVICE_BAR else "BELOW"
    return (f"rate advisor vs truth.meters.tou_saver (as of {as_of}; {r['customers']:,} customers; not scored: "
            f"{r['truth_unknown']:,} too close to call, {r['tag_unknown']:,} unknown to the pipeline, "
            f"{r['planted_tag_unknown']:,} of them planted savers)\n"
            + render_table(["tag=value", "planted", "tagged", "true pos", "precision", "recall", "bar", ""],
                           [[s.category, f"{s.planted:,}", f"{s.detected:,}", f"{s.true_positive:,}",
                             f"{s.precision:.4f}", f"{s.recall:.4f}", f"{RATE_ADVICE_BAR:.2f}", verdict]],
                           align_right=[1, 2, 3, 4, 5, 6]))


# Accuracy bars of issue 4 per planted tag (precision and recall of each planted value).
TAG_ACCURACY_BARS = {"ev_owner": 0.90, "vacancy": 0.90, "credit_rating": 0.95, "payment_channel_pref": 0.95,
                     "interaction_channel_pref": 0.95}


def tag_accuracy_report(lake, as_of: dt.date) -> str:
    """gold.customer_tags of the as-of vs truth.meters: precision / recall per planted tag value, with the bars."""
    from gridpersona.synthetic.truth_checks import tag_accuracy

    scores = tag_accuracy(lake, as_of)
    if not any(s.planted or s.detected for s in scores):
        return f"tags: gold.customer_tags has no rows for {as_of} (run tags --as-of {as_of})"
    rows = []
    for s in scores:
        bar = TAG_ACCURACY_BARS.get(s.category.split("=")[0])
        verdict = "-" if bar is None else ("ok" if min(s.precision, s.recall) >= bar else "BELOW")
        rows.append([s.category, f"{s.planted:,}", f"{s.detected:,}", f"{s.true_positive:,}", f"{s.precision:.4f}",
                     f"{s.recall:.4f}", "-" if bar is None else f"{bar:.2f}", verdict])
    return (f"tags vs truth.meters (as of {as_of}; customers of the archive)\n"
            + render_table(["tag=value", "planted", "tagged", "true pos", "precision", "recall", "bar", ""], rows,
                           align_right=[1, 2, 3, 4, 5, 6]))


def latest_ami_date(lake) -> dt.date:
    """The last local day present in bronze.ami_interval (from the Delta log, no Spark job)."""
    return max(v for v in lake.partition_values("bronze.ami_interval", "date") if v is not None)


def segment_summary(lake, as_of: dt.date) -> str:
    from pyspark.sql import functions as F

    rows = (lake.read("gold.segment_profile").filter(F.col("as_of") == as_of)
            .orderBy(F.col("meters").desc(), "segment_id").collect())
    table = [[r["segment_id"], r["segment_label"], r["segment_name_zh"], r["segment_name_en"], f"{r['meters']:,}", f"{r['share']:.1%}",
              f"{r['mean_daily_kwh']:.1f}", f"{r['peak_share']:.1%}", f"{r['valley_share']:.1%}", f"{r['load_factor']:.2f}"]
             for r in rows]
    return render_table(["segment", "label", "中文", "English", "meters", "share", "kWh/day", "peak", "valley", "load factor"],
                        table, align_right=[0, 4, 5, 6, 7, 8, 9])


def cmd_sql(settings: Settings, args) -> int:
    from gridpersona.analyst.sql import format_result, run_query

    if args.limit < 0:
        raise ValueError("--limit must be >= 0 (0 = all rows)")
    from gridpersona.session import build_spark
    from gridpersona.analyst.guard import build_jar
    from gridpersona.lake import spark_conf

    build_jar()  # before the JVM starts: the guard must be on its class path
    spark = build_spark(settings, app_name=f"{settings.spark.app_name}-sql", sql_surface=True, ui=settings.sql_server.ui,
                        lake_conf=spark_conf(settings))
    lake = _lake(settings, spark)
    result = run_query(spark, lake, args.statement, limit=args.limit or None, allow_pii=args.allow_pii)
    text = format_result(result, args.fmt)
    if text:
        print(text)
    if args.fmt == "table":
        print(f"({len(result.rows):,} row{'s' if len(result.rows) != 1 else ''})", file=sys.stderr)
    if result.truncated:
        print(f"(stopped at --limit {args.limit:,} rows; --limit 0 prints all)", file=sys.stderr)
    return 0


def cmd_sql_server(settings: Settings, args) -> int:
    from gridpersona.analyst.server import serve

    def ready(url: str, tables: list[str]) -> None:
        print(f"sql-server listening on {url} with {len(tables)} tables", flush=True)
        print(f"  beeline: $SPARK_HOME/bin/beeline -u {url} -e \"SHOW TABLES IN gold\"", flush=True)

    return serve(settings, host=args.host, port=args.port, refresh_seconds=args.refresh_seconds, ready=ready)


def cmd_sql_user(settings: Settings, args) -> int:
    import getpass
    import os

    from gridpersona.analyst.users import UsersFileError, add_user, check_mode, read_users, remove_user

    path = os.path.abspath(os.path.expanduser(settings.sql_server.users_file))
    if os.path.exists(path):
        check_mode(path)
    if args.action == "list":
        users = read_users(path)
        print(render_table(["user", "role"], [[n, users[n][0]] for n in sorted(users)]) if users else "no users")
        print(f"users file: {path}", file=sys.stderr)
        return 0
    if args.action == "remove":
        remove_user(path, args.name)
        print(f"removed {args.name} from {path}")
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise UsersFileError("the two passwords differ; nothing changed")
    existed = add_user(path, args.name, args.role, password)
    print(f"{'updated' if existed else 'added'} {args.name} (role {args.role}) in {path}")
    return 0


def cmd_report(settings: Settings, args) -> int:
    from gridpersona.analyst.report import write_report

    lake = _lake(settings)
    path, report = write_report(lake, out=args.out, as_of=args.as_of, customers=args.customer)
    print(f"report for as-of {report.as_of}: {path}")
    print(f"  pictures: {', '.join(report.images) or 'none'}")
    if report.customers:
        print(f"  customer pages: {', '.join(report.customers)}")
    if report.missing:
        print(f"  not computed for this as-of: {', '.join(report.missing)}")
    return 0


def cmd_demo(settings: Settings, args) -> int:
    from gridpersona.stages.pipeline import run_pipeline

    lake = _lake(settings)
    started = time.perf_counter()
    if args.regenerate or not lake.exists("bronze.ami_interval"):
        ns = argparse.Namespace(meters=None, days=None, seed=None, start=None, interval_minutes=None)
        cmd_generate(settings, ns)
    else:
        log.info("synthetic lake present at %s (use --regenerate to rebuild it)", lake.root)
    as_of = latest_ami_date(lake)
    results = run_pipeline(settings, lake.spark, lake, "all", as_of, settings.pipeline.window_days)
    print()
    print(f"segments as of {as_of} (window {settings.pipeline.window_days} days):")
    print(segment_summary(lake, as_of))
    print()
    print(stage_summary(results))
    print()
    print(tables_report(lake, lake.list_tables()))
    from gridpersona.analyst.report import write_report

    path, report = write_report(lake, as_of=as_of)
    print(f"report ({len(report.images)} pictures): {path}")
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 0


COMMANDS = {"generate": cmd_generate, "ingest": cmd_ingest, "create-table": cmd_create_table, "tables": cmd_tables, "history": cmd_history,
            "run": cmd_run, "runs": cmd_runs, "truth-check": cmd_truth_check, "demo": cmd_demo, "sql": cmd_sql, "report": cmd_report,
            "sql-server": cmd_sql_server, "sql-user": cmd_sql_user}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from gridpersona.lake import LakeError
    from gridpersona.analyst.guard import GuardUnavailable

    settings = None
    try:
        settings = load_settings(args.env, args.overrides, conf_dir=args.conf_dir)
        return COMMANDS[args.command](settings, args)
    except (ConfigError, LakeError, FileNotFoundError, ValueError, GuardUnavailable) as exc:
        # Errors meant for people: no traceback (use -v for one).
        if args.verbose:
            log.exception("failed")
        print(f"gridpersona {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from gridpersona.session import out_of_memory_message

        message = out_of_memory_message(exc, settings)
        if message is None:
            raise
        if args.verbose:
            log.exception("failed")
        print(f"gridpersona {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
