"""Where the shapes time goes: Spark SQL variants of the readings -> meter-day aggregation.

    .venv/bin/python bench/agg_probe.py --lake-root /tmp/benchlake/m20000_d30 --days 5 \
        [--variants scan,countsum,cond96,collect,two_level,shapes]

Each variant reads the first ``--days`` days of ``silver.ami_clean`` and writes to Spark's
``noop`` sink (no output cost); printed: wall seconds and CPU seconds of this process and
the JVM. Variants:

- ``scan``: the five columns shapes reads;
- ``countsum``: ``groupBy(meter_id, date)`` with only ``count`` and ``sum(kwh)``: the floor
  of any meter-day aggregation;
- ``cond96``: one level, a ``sum(when(slot = i, kwh))`` per slot (shapes before session 3);
- ``collect``: ``array_sort(collect_list(struct(slot, kwh)))`` per meter-day;
- ``two_level``: :func:`gridpersona.transform.shapes.slot_columns` (the current shapes);
- ``shapes``: the whole :func:`gridpersona.transform.shapes.daily_load_shapes`.

Outside every benchmark figure; see bench/README.md "Latest results".
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from pyspark.sql import functions as F

from gridpersona.config import load_settings
from gridpersona.lake import Lake
from gridpersona.stages.runner import StageContext
from gridpersona.stages.clean import calendar_frame
from gridpersona.transform import shapes as S

from memwatch import tree_cpu_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lake-root", required=True)
    p.add_argument("--days", type=int, default=5, help="first N days of the lake's window (default 5)")
    p.add_argument("--env", default="local")
    p.add_argument("--variants", default="scan,countsum,cond96,collect,two_level,shapes")
    args = p.parse_args()
    s = load_settings(args.env, [f"lake.root={args.lake_root}"])
    lake = Lake(s)
    first = s.generate.start
    last = first + dt.timedelta(days=args.days - 1)
    clean = lake.read("silver.ami_clean").filter(F.col("date").between(first, last))
    cols = clean.select("meter_id", "date", "slot", "kwh", "quality")
    n = S.slots_per_day(s.ami.interval_minutes)
    ctx = StageContext(s, lake.spark, lake, last, args.days)
    variants = {
        "scan": lambda: cols,
        "countsum": lambda: cols.groupBy("meter_id", "date").agg(F.count(F.lit(1)), F.sum("kwh")),
        "cond96": lambda: cols.groupBy("meter_id", "date").agg(
            *[F.sum(F.when(F.col("slot") == i, F.col("kwh"))) for i in range(n)]),
        "collect": lambda: cols.groupBy("meter_id", "date").agg(
            F.array_sort(F.collect_list(F.struct("slot", "kwh"))).alias("l")),
        "two_level": lambda: S.slot_columns(cols, n),
        "shapes": lambda: S.daily_load_shapes(clean, calendar_frame(ctx), interval_minutes=s.ami.interval_minutes,
                                              tariff=s.tariff, normalization=s.shapes.normalization),
    }
    cols.limit(10).write.format("noop").mode("overwrite").save()  # session warm-up, not reported
    rows = clean.count()
    print(f"{rows:,} readings, {first} .. {last}")
    for name in args.variants.split(","):
        t, c = time.perf_counter(), tree_cpu_seconds()
        variants[name]().write.format("noop").mode("overwrite").save()
        print(f"{name:10s} wall {time.perf_counter() - t:6.1f} s  cpu {tree_cpu_seconds() - c:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
