"""Where clean's time goes: each step of transform.clean alone, cached before the next, wall and CPU seconds.

    .venv/bin/python bench/clean_profile.py --lake LAKE_ROOT --as-of 2026-08-29 [--window-days 90] [--env local]

LAKE_ROOT: a lake with bronze.ami_interval and bronze.customer_archive (e.g. the default lake
`gridpersona demo` makes). Nothing is written to the lake: the clean rows go to a `noop` sink and to
Parquet under /tmp. CPU seconds: this process, the JVM and the Python workers (psutil).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time

import psutil
from pyspark import StorageLevel

from gridpersona.config import load_settings
from gridpersona.lake import Lake, spark_conf
from gridpersona.session import build_spark
from gridpersona.stages.inputs import read_bronze
from gridpersona.transform import clean as C


def cpu_seconds() -> float:
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lake", required=True)
    p.add_argument("--as-of", required=True, type=dt.date.fromisoformat)
    p.add_argument("--window-days", type=int, default=90)
    p.add_argument("--env", default="local")
    args = p.parse_args()
    settings = load_settings(env=args.env, overrides=[f"lake.root={args.lake}"])
    spark = build_spark(settings, lake_conf=spark_conf(settings))
    lake = Lake(settings, spark)
    s = settings
    first = args.as_of - dt.timedelta(days=args.window_days - 1)
    calendar = spark.createDataFrame(C.local_calendar(first, args.as_of, s.ami.time_zone, s.ami.interval_minutes),
                                     C.calendar_rows_schema())
    raw = read_bronze(lake, "bronze.ami_interval").filter(f"date between '{first}' and '{args.as_of}'")
    archive = read_bronze(lake, "bronze.customer_archive").select("meter_id", "contracted_capacity_kva")
    rule = C.OutlierRule(scale_multiple=s.clean.outlier_scale_multiple, scale_floor_kw=s.clean.outlier_scale_floor_kw,
                         neighbour_multiple=s.clean.outlier_neighbour_multiple, capacity_margin=s.clean.capacity_margin)
    out = C.clean_interval_readings(raw, archive, calendar, time_zone=s.ami.time_zone,
                                    interval_minutes=s.ami.interval_minutes, first_date=first, last_date=args.as_of,
                                    max_interval_kwh=s.clean.max_interval_kwh,
                                    max_gap=s.clean.max_interpolate_intervals, rule=rule,
                                    lookback_days=s.clean.scale_lookback_days,
                                    cache=lambda df: df.persist(StorageLevel.MEMORY_AND_DISK))
    (days,) = out.cached
    tagged = C.tag_reasons(raw, archive, calendar, time_zone=s.ami.time_zone, interval_minutes=s.ami.interval_minutes,
                           first_date=first, last_date=args.as_of, max_interval_kwh=s.clean.max_interval_kwh)
    steps = [
        ("bronze scan and row checks (noop)", lambda: tagged.write.format("noop").mode("overwrite").save()),
        ("shuffle by meter + numpy kernel -> meter-day rows (cached)", days.count),
        ("clean rows (noop)", lambda: out.clean.write.format("noop").mode("overwrite").save()),
        ("clean rows to Parquet", lambda: out.clean.write.mode("overwrite").partitionBy("date")
         .parquet(tempfile.mkdtemp(prefix="clean_profile_"))),
        ("quarantine rows (noop)", lambda: out.quarantine.write.format("noop").mode("overwrite").save()),
    ]
    print(f"{'step':55} {'wall s':>8} {'CPU s':>8}")
    for name, run in steps:
        t0, c0 = time.perf_counter(), cpu_seconds()
        run()
        print(f"{name:55} {time.perf_counter() - t0:8.1f} {cpu_seconds() - c0:8.1f}", flush=True)
    out.release()
    spark.stop()


if __name__ == "__main__":
    main()
