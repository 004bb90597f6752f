"""Entry point shared by the spark-submit scripts in jobs/.

    spark-submit jobs/clean.py --as-of 2026-08-29 [--window-days 90 | --incremental] [--env cluster] [--set key=value ...]

Parses arguments, loads and validates config (before any Spark work), runs the
stage through the same runner as `gridpersona run` (timings, row counts,
ops.job_runs) and exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import sys

from gridpersona.app.cli import INCREMENTAL_HELP, _date, _positive, stage_summary
from gridpersona.config import ConfigError, load_settings
from gridpersona.console import setup_logging


def main(stage: str, argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"jobs/{stage.replace('-', '_')}.py", description=f"gridpersona {stage} stage")
    p.add_argument("--as-of", type=_date, required=True, help="last local day of the window, YYYY-MM-DD")
    window = p.add_mutually_exclusive_group()
    window.add_argument("--window-days", type=_positive, help="days in the window (default: pipeline.window_days)")
    window.add_argument("--incremental", action="store_true", help=INCREMENTAL_HELP)
    p.add_argument("--env", default="local", help="conf/<env>.yaml (default: local)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--conf-dir", help="config folder (default: the project's conf/)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    try:
        settings = load_settings(args.env, args.overrides, conf_dir=args.conf_dir)
    except ConfigError as exc:
        print(f"{stage}: error: {exc}", file=sys.stderr)
        return 2
    from gridpersona.lake import Lake, spark_conf
    from gridpersona.stages.pipeline import run_pipeline
    from gridpersona.session import build_spark

    spark = build_spark(settings, app_name=f"gridpersona-{stage}", lake_conf=spark_conf(settings))
    results = run_pipeline(settings, spark, Lake(settings, spark), stage, args.as_of, args.window_days,
                           incremental=args.incremental)
    print(stage_summary(results))
    return 0
