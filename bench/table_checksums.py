"""Order-independent checksums of every table in a lake, to compare two runs of the pipeline.

    python bench/table_checksums.py LAKE_DIR [--tables silver.daily_load_shape,...] [--json OUT] [--compare OTHER.json]

Reads each Delta table's latest version with the embedded `deltalake` reader (no Spark, no
gridpersona import: the same script checks a lake written by any version of the code), and
prints per table the row count and a checksum that is the sum over rows of a 64-bit hash of the
row's values: equal for two tables holding the same rows as a multiset, whatever their order or
file layout. Columns that hold wall-clock stamps, run ids or code versions (they differ between
any two runs by construction) are left out and listed; `ops.job_runs` is skipped for the same reason.
With --compare, prints which tables differ from a previous --json output and exits 1 if any does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import pandas as pd
from deltalake import DeltaTable

VOLATILE = {"trained_at", "created_at", "run_id", "code_version", "started_at", "finished_at", "generated_at",
            "written_at", "ingested_at", "ingest_run_id", "source_file"}
SKIP = {"ops.job_runs"}


def tables(root: str) -> list[str]:
    out = []
    for layer in sorted(os.listdir(root)):
        folder = os.path.join(root, layer)
        if layer.startswith(("_", ".")) or not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if os.path.isdir(os.path.join(folder, name, "_delta_log")):
                out.append(f"{layer}.{name}")
    return out


def checksum(root: str, table: str) -> dict:
    layer, name = table.split(".", 1)
    return arrow_checksum(DeltaTable(os.path.join(root, layer, name)).to_pyarrow_table())


def arrow_checksum(data) -> dict:
    """Rows, the order-independent checksum and the volatile columns left out, of an Arrow table."""
    kept = [c for c in data.column_names if c not in VOLATILE]
    frame = data.select(kept).to_pandas()
    # Lists and maps are hashed through their text form; floats through repr (exact to the bit).
    for c in frame.columns:
        if frame[c].dtype == object:
            frame[c] = frame[c].map(lambda v: None if v is None else repr(v.tolist() if hasattr(v, "tolist") else v))
    frame = frame[sorted(frame.columns)]
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype="uint64")
    total = int(hashes.sum(dtype="uint64")) if len(hashes) else 0
    return {"rows": len(frame), "checksum": f"{total:016x}",
            "left_out": sorted(c for c in data.column_names if c in VOLATILE)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lake")
    p.add_argument("--json", help="write the checksums here")
    p.add_argument("--compare", help="a --json file of another run to compare with")
    p.add_argument("--tables", help="comma-separated tables to check (default: every table of the lake); "
                                    "--compare then looks at these only")
    args = p.parse_args(argv)
    present = tables(args.lake)
    wanted = [t for t in args.tables.split(",") if t] if args.tables else [t for t in present if t not in SKIP]
    missing = [t for t in wanted if t not in present]
    if missing:
        p.error(f"no such table(s) in {args.lake}: {', '.join(missing)}")
    result = {t: checksum(args.lake, t) for t in wanted}
    for t, r in result.items():
        print(f"{t:40s} {r['rows']:>12,d}  {r['checksum']}  {' '.join(r['left_out'])}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, sort_keys=True)
    if args.compare:
        with open(args.compare) as fh:
            other = json.load(fh)
        if args.tables:
            other = {t: v for t, v in other.items() if t in result}
        differ = sorted(t for t in set(result) | set(other)
                        if (result.get(t) or {}).get("checksum") != (other.get(t) or {}).get("checksum")
                        or (result.get(t) or {}).get("rows") != (other.get(t) or {}).get("rows"))
        print(f"{len(set(result) | set(other)) - len(differ)} tables identical, {len(differ)} differ"
              + (": " + ", ".join(differ) if differ else ""))
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
