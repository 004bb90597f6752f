"""Generate the benchmark's synthetic lake (run by bench/run.py in a child process).

    .venv/bin/python bench/genlake.py --lake-root DIR --meters N --days D [--env local] [--set KEY=VALUE ...]

A child process keeps the generator's memory out of the Spark driver whose peak
RSS the benchmark reports. Writes ``<lake-root>/_bench_lake.json`` (meters, days,
seed, start, interval, row counts) last, so a lake without it is incomplete and
is regenerated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

MARKER = "_bench_lake.json"


def lake_identity(settings, meters: int, days: int) -> dict:
    """What makes two benchmark lakes the same: size, seed, start, interval and the generator config."""
    return {"meters": meters, "days": days, "seed": settings.generate.seed, "start": str(settings.generate.start),
            "interval_minutes": settings.ami.interval_minutes, "time_zone": settings.ami.time_zone,
            "generate_config": settings.generate.model_dump(mode="json", exclude={"meters", "days"})}


def read_marker(root: str) -> dict | None:
    try:
        with open(os.path.join(root, MARKER)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lake-root", required=True)
    p.add_argument("--meters", type=int, required=True)
    p.add_argument("--days", type=int, required=True)
    p.add_argument("--env", default="local")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    from gridpersona.config import load_settings
    from gridpersona.synthetic.generate import generate_lake
    from gridpersona.lake import Lake

    settings = load_settings(args.env, [*args.overrides, f"lake.root={args.lake_root}"])
    marker = os.path.join(args.lake_root, MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    t0 = time.perf_counter()
    counts = generate_lake(settings, Lake(settings), meters=args.meters, days=args.days,
                           progress=lambda msg: print(f"  generate: {msg}", file=sys.stderr, flush=True))
    info = {**lake_identity(settings, args.meters, args.days), "rows": counts,
            "generate_seconds": round(time.perf_counter() - t0, 2)}
    with open(marker, "w") as fh:
        json.dump(info, fh, indent=2)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
