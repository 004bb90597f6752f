"""Equivalence check for incremental nightly runs (issue 14): N nightly runs == one window run.

    python bench/incremental_check.py [--meters 300] [--days 30] [--window-days N] [--work /tmp/incr_check]
        [--late-1 0.03] [--late-3 0.01] [--duplicates 20] [--out-of-range 10] [--env test] [--set KEY=VALUE ...]

1. Generates a synthetic lake (gridpersona.synthetic.generate) of --meters x --days ("source").
2. Lake B ("nightly"): the source's bronze tables, except bronze.ami_interval, which lands day by day:
   day k's readings land with day k, except a share that lands late (--late-1 of them with day k+1,
   --late-3 with day k+3), a few readings delivered twice (the copy lands two days late) and a few
   with an out-of-range value. After each landing, `clean` then `shapes` run with --incremental
   (as-of = that day; landings after the last day run with as-of = the last day).
3. Lake A ("window"): the same final bronze, one whole-window run of clean and shapes
   (as-of = the last day, window = --window-days, default --days).
4. Compares the silver tables (ami_clean, ami_quarantine, meter_day_quality, meter_day_readings,
   daily_load_shape) of A and B over A's window dates with bench/table_checksums.py's order-independent checksum, and
   prints per night the planned dates and stage seconds, then IDENTICAL or the differing tables.
   B also holds rows dated before the data began (its first run planned its whole window, which
   reached back before the first reading): counted and shown apart, not compared.

Exit status: 0 identical, 1 a table differs. Measured, not tested: the suite's e2e test holds the
same property on a tiny lake (tests/test_incremental.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from table_checksums import arrow_checksum  # noqa: E402

from gridpersona.config import load_settings  # noqa: E402
from gridpersona.console import render_table, setup_logging  # noqa: E402
from gridpersona.contracts.bronze import AMI_INTERVAL  # noqa: E402
from gridpersona.contracts.ops import JOB_RUNS  # noqa: E402
from gridpersona.lake import Lake, spark_conf  # noqa: E402
from gridpersona.session import build_spark  # noqa: E402
from gridpersona.stages.pipeline import run_pipeline  # noqa: E402
from gridpersona.stages.runner import parse_compact_dates  # noqa: E402

SILVER = ("silver.ami_clean", "silver.ami_quarantine", "silver.meter_day_quality", "silver.meter_day_readings",
          "silver.daily_load_shape")
STAGES = ("clean", "shapes")


def landing_batches(readings: pa.Table, first: dt.date, args) -> dict[int, pa.Table]:
    """{landing day index: readings landing that day} (see the module docstring)."""
    rng = np.random.default_rng(args.seed)
    n = readings.num_rows
    day = np.array([(d - first).days for d in readings.column("date").to_pylist()], dtype=np.int64)
    u = rng.random(n)
    landing = day + np.where(u < args.late_1, 1, np.where(u < args.late_1 + args.late_3, 3, 0))
    kwh = readings.column("kwh").to_numpy(zero_copy_only=False).astype(float)
    bad = rng.choice(n, size=min(args.out_of_range, n), replace=False)
    kwh[bad] = args.max_interval_kwh * 10  # quarantined as out_of_range
    readings = readings.set_column(readings.schema.get_field_index("kwh"), "kwh",
                                   pa.array(kwh, type=readings.schema.field("kwh").type))
    twice = rng.choice(n, size=min(args.duplicates, n), replace=False)
    readings = pa.concat_tables([readings, readings.take(pa.array(twice))])
    landing = np.concatenate([landing, day[twice] + 2])
    return {int(k): readings.filter(pa.array(landing == k)) for k in np.unique(landing)}


def silver_in(lake: Lake, table: str, first: dt.date, last: dt.date) -> tuple[pa.Table, int]:
    """(rows of ``table`` dated first .. last, rows dated otherwise)."""
    data = lake.read_arrow(table)
    dates = data.column("date")
    inside = pc.and_(pc.greater_equal(dates, pa.scalar(first, pa.date32())),
                     pc.less_equal(dates, pa.scalar(last, pa.date32())))
    kept = data.filter(inside)
    return kept, data.num_rows - kept.num_rows


def copy_bronze(source: Lake, dest: Lake) -> None:
    for table in source.list_tables():
        if table.startswith("bronze.") and table != AMI_INTERVAL.name:
            shutil.copytree(source.path(table), dest.path(table))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meters", type=int, default=300)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--window-days", type=int, help="window of both lakes' runs (default: --days)")
    p.add_argument("--start", default="2026-06-01")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--late-1", type=float, default=0.03, help="share of a day's readings landing one day late")
    p.add_argument("--late-3", type=float, default=0.01, help="share landing three days late")
    p.add_argument("--duplicates", type=int, default=20, help="readings delivered a second time, two days late")
    p.add_argument("--out-of-range", type=int, default=10, help="readings given an out-of-range value")
    p.add_argument("--work", default="/tmp/incr_check", help="folder for the three lakes (emptied first)")
    p.add_argument("--env", default="test")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    setup_logging(False)
    window_days = args.window_days or args.days
    first = dt.date.fromisoformat(args.start)
    last = first + dt.timedelta(days=args.days - 1)
    window_first = last - dt.timedelta(days=window_days - 1)
    shutil.rmtree(args.work, ignore_errors=True)

    def settings_at(name: str):
        return load_settings(args.env, [f"pipeline.window_days={window_days}", *args.overrides,
                                        f"lake.root={os.path.join(args.work, name)}"])

    source_settings = settings_at("source")
    args.max_interval_kwh = source_settings.clean.max_interval_kwh
    spark = build_spark(source_settings, app_name="gridpersona-incremental-check",
                        lake_conf=spark_conf(source_settings))
    from gridpersona.synthetic.generate import generate_lake

    source = Lake(source_settings, spark)
    t0 = time.perf_counter()
    generate_lake(source_settings, source, meters=args.meters, days=args.days, start=first)
    print(f"generated {args.meters} meters x {args.days} days in {time.perf_counter() - t0:.1f} s")
    batches = landing_batches(source.read_arrow(AMI_INTERVAL.name), first, args)

    nightly_settings = settings_at("nightly")
    nightly = Lake(nightly_settings, spark)
    copy_bronze(source, nightly)
    rows = []
    for day, batch in sorted(batches.items()):
        nightly.write_arrow(AMI_INTERVAL.name, batch, mode="append", partition_by=["date"])
        as_of = min(first + dt.timedelta(days=day), last)
        line = [str(day), str(as_of), f"{batch.num_rows:,}"]
        for stage in STAGES:
            (_, result), = run_pipeline(nightly_settings, spark, nightly, stage, as_of, incremental=True)
            runs = [r for r in nightly.read_arrow(JOB_RUNS.name).to_pylist()
                    if r["stage"] == stage and r["status"] == "succeeded"]
            planned = max(runs, key=lambda r: r["started_at"])["dates"]
            line += [str(len(parse_compact_dates(planned) or [])), f"{result.seconds:.1f}"]
        rows.append(line)
    print(render_table(["landing", "as-of", "readings", "clean dates", "clean s", "shapes dates", "shapes s"], rows,
                       align_right=[2, 3, 4, 5, 6]))
    nightly_seconds = sum(float(r[4]) + float(r[6]) for r in rows)

    window_settings = settings_at("window")
    window = Lake(window_settings, spark)
    copy_bronze(source, window)
    window.write_arrow(AMI_INTERVAL.name, pa.concat_tables(batches.values()), mode="append", partition_by=["date"])
    window_seconds = 0.0
    for stage in STAGES:
        (_, result), = run_pipeline(window_settings, spark, window, stage, last, window_days)
        window_seconds += result.seconds
    print(f"nightly runs: {nightly_seconds:.1f} s in all ({len(rows)} nights); one window run of "
          f"{window_days} days: {window_seconds:.1f} s")

    differ = []
    table_rows = []
    for table in SILVER:
        a, a_outside = silver_in(window, table, window_first, last)
        b, b_outside = silver_in(nightly, table, window_first, last)
        ca, cb = arrow_checksum(a), arrow_checksum(b)
        same = (ca["rows"], ca["checksum"]) == (cb["rows"], cb["checksum"])
        if not same:
            differ.append(table)
        table_rows.append([table, f"{ca['rows']:,}", ca["checksum"], f"{cb['rows']:,}", cb["checksum"],
                           f"{b_outside:,}", "same" if same else "DIFFERS"])
    print(render_table(["table", "window rows", "window checksum", "nightly rows", "nightly checksum",
                        "nightly rows outside", ""], table_rows, align_right=[1, 3, 5]))
    spark.stop()
    if differ:
        print(f"DIFFERENT: {', '.join(differ)} (dates {window_first} .. {last})")
        return 1
    print(f"IDENTICAL: {len(SILVER)} silver tables over {window_first} .. {last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
