"""Run real half-hourly meter data through gridpersona as a user would, and print the real-data bars.

    .venv/bin/python bench/realdata.py                       # ../shared/realdata sample, work dir in /tmp
    .venv/bin/python bench/realdata.py --data OTHER.parquet  # another sample with the same columns

The input is a Parquet file of ``meter_id`` (string), ``ts`` (UTC timestamp, start of the interval) and
``kwh`` (double). Steps, each a ``gridpersona`` command in a child process (exactly what a user types):

1. ``ingest bronze.ami_interval`` the file (``ami.interval_minutes``/``ami.time_zone`` from the flags);
2. ``ingest bronze.customer_archive`` a generated *minimal* archive: the required columns only
   (``customer_id``, ``meter_id``, ``region``, ``customer_type``), nothing else known;
3. ``run all --as-of <last day> --window-days <days>``;
4. a retrain with another seed (``run segment-train`` + ``run segment-assign`` with
   ``--set segment.seed=<other>``) for the same as-of, compared meter by meter with the first;
5. ``report`` (the HTML report of the as-of).

Then it reads the lake (Delta tables through ``deltalake``) and prints the issue-11 bars: stages
finished, distinct segment labels, share of meters in segments without a specific pattern name,
labels kept by the retrain, outlier replacements per 100,000 readings and share of energy, categorical
tags that give one confident value to > 95 % of customers although their source data is absent, and
treatment targets whose opt-out is unknown. It also draws the segment centroids to a PNG to look at.
Writes everything under ``--work`` (default: a fresh temporary folder) and the figures as JSON. Exit
status 1 when a bar is missed. Not a test: the sample is not part of the product.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gridpersona.stages.inputs import OPTIONAL_TABLES
from gridpersona.synthetic.truth_checks import adjusted_rand_index

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "realdata", "edrp_scotland_2009_half_a.parquet")
# Label codes that name no specific pattern: the old catch-all (current models generate a label from the curve).
GENERIC_LABELS = ("mixed",)


def log(msg: str) -> None:
    print(f"[realdata {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Runner:
    """Runs ``gridpersona`` commands on one lake, recording wall and CPU seconds of each."""

    def __init__(self, lake_root: str, settings: list[str], env: str):
        self.base = [sys.executable, "-m", "gridpersona.app.cli", "--env", env, "--set", f"lake.root={lake_root}"]
        for s in settings:
            self.base += ["--set", s]
        self.timings: list[dict] = []

    def __call__(self, *args: str, extra_set: tuple[str, ...] = (), check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(self.base)
        for s in extra_set:
            cmd += ["--set", s]
        cmd += list(args)
        label = " ".join(args[:2]) + (f" ({', '.join(extra_set)})" if extra_set else "")
        t = time.perf_counter()
        proc, cpu = run_measured(cmd)
        wall = time.perf_counter() - t
        self.timings.append(dict(step=label, wall_s=round(wall, 1), cpu_s=round(cpu, 1), status=proc.returncode))
        log(f"{label}: exit {proc.returncode} in {wall:.1f} s wall, {cpu:.1f} s CPU")
        if proc.returncode != 0 and check:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            log(f"{label} failed:\n{tail}")
        return proc


def run_measured(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` to completion: (its result, CPU seconds of its whole process tree, the Spark JVM included).

    The JVM is a grandchild that its parent may not reap, so ``RUSAGE_CHILDREN`` misses it; the tree's
    CPU times are sampled instead (twice a second, the last sample of each process kept).
    """
    import psutil

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=ROOT)
        seen: dict[int, float] = {}
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                for p in [root, *root.children(recursive=True)]:
                    c = p.cpu_times()
                    seen[p.pid] = c.user + c.system + c.children_user + c.children_system
            except psutil.Error:
                pass
            time.sleep(0.5)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read()), sum(seen.values())


def minimal_archive(data: pa.Table, path: str) -> int:
    meters = sorted(pc.unique(data.column("meter_id")).to_pylist())
    table = pa.table({"customer_id": [f"C{m}" for m in meters], "meter_id": meters,
                      "region": ["R1"] * len(meters), "customer_type": ["residential"] * len(meters)})
    pacsv.write_csv(table, path)
    return len(meters)


def read_delta(lake_root: str, table: str, columns: list[str] | None = None):
    from deltalake import DeltaTable

    path = os.path.join(lake_root, *table.split("."))
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        return None
    return DeltaTable(path).to_pyarrow_table(columns=columns).to_pandas()


def segment_figures(lake_root: str, as_of: dt.date) -> dict:
    seg = read_delta(lake_root, "gold.customer_segments")
    model = read_delta(lake_root, "gold.segment_model")
    if seg is None or model is None:
        return {}
    seg = seg[seg["as_of"] == as_of]
    version = seg["model_version"].iloc[0]
    model = model[model["model_version"] == version].sort_values("segment_id")
    counts = seg.groupby("segment_id").size()
    segments = []
    for _, r in model.iterrows():
        row = dict(segment_id=int(r["segment_id"]), label=r["segment_label"], name_en=r["name_en"],
                   name_zh=r["name_zh"], meters=int(counts.get(r["segment_id"], 0)),
                   mean_daily_kwh=None if r["mean_daily_kwh"] is None else round(float(r["mean_daily_kwh"]), 2))
        segments.append(row)
    labels = [s["label"] for s in segments]
    names = [s["name_en"] for s in segments]
    generic = sum(s["meters"] for s in segments if s["label"] in GENERIC_LABELS or
                  str(s.get("label_kind", "")) == "fallback")
    head = model.iloc[0]
    out = dict(model_version=version, k=int(head["k"]), segments=segments,
               labels_distinct=len(set(labels)) == len(labels) and len(set(names)) == len(names),
               generic_share=generic / max(1, len(seg)),
               silhouette=None if head["silhouette"] is None else round(float(head["silhouette"]), 4),
               silhouette_by_k=json.loads(head["silhouette_by_k"]))
    for extra in ("stability", "weak_structure"):  # stored by newer models
        if extra in model.columns:
            v = head[extra]
            out[extra] = None if v is None else (str(v) if isinstance(v, (bool, np.bool_)) else round(float(v), 4))
    out["assignments"] = seg[["meter_id", "segment_id", "segment_label"]].sort_values("meter_id")
    return out


def outlier_figures(lake_root: str) -> dict:
    clean = read_delta(lake_root, "silver.ami_clean", ["meter_id", "quality", "kwh", "kwh_raw"])
    if clean is None:
        return {}
    kept = clean[clean["quality"].isin(["measured", "outlier_replaced"])]
    replaced = clean[clean["quality"] == "outlier_replaced"]
    energy = float(kept["kwh_raw"].abs().sum())
    changed = float((replaced["kwh_raw"] - replaced["kwh"]).abs().sum())
    return dict(readings=int(len(kept)), replaced=int(len(replaced)),
                replaced_per_100k=1e5 * len(replaced) / max(1, len(kept)),
                replaced_meters=int(replaced["meter_id"].nunique()),
                replaced_energy_kwh=round(changed, 2), replaced_energy_share=changed / energy if energy else 0.0,
                replaced_median_kwh=float(replaced["kwh_raw"].median()) if len(replaced) else None)


def tag_figures(lake_root: str, as_of: dt.date) -> dict:
    tags = read_delta(lake_root, "gold.customer_tags")
    catalog = read_delta(lake_root, "gold.tag_catalog")
    if tags is None or catalog is None:
        return {}
    from gridpersona.contracts.bronze import BRONZE

    # What a minimal archive leaves unknown: the optional sources and every archive column beyond the required.
    absent = set(OPTIONAL_TABLES) | {c.name for c in BRONZE["bronze.customer_archive"].columns if c.nullable}
    tags = tags[tags["as_of"] == as_of]
    catalog = catalog[catalog["as_of"] == as_of].sort_values("position")
    rows = []
    for _, c in catalog.iterrows():
        code = c["code"]
        if code not in tags.columns or c["value_type"] == "double":
            continue
        values = tags[code]
        known = values.dropna()
        top_value, top_share = None, 0.0
        if len(known):
            vc = known.astype(str).value_counts()
            top_value, top_share = vc.index[0], float(vc.iloc[0]) / len(values)
        needs = None
        for col in ("needs", "sources"):
            if col in catalog.columns and c[col] is not None:
                needs = list(c[col]) if not isinstance(c[col], str) else [c[col]]
        # needs [] (e.g. three-valued "any known signal" tags) says nothing: suspect, like a missing needs list.
        source_absent = None if not needs else any(str(n) in absent for n in needs)
        rows.append(dict(tag=code, known_share=len(known) / max(1, len(values)), top_value=top_value,
                         top_share=top_share, needs=needs, source_absent=source_absent,
                         distribution={str(k): int(v) for k, v in values.astype(object).where(values.notna(), "unknown")
                                       .astype(str).value_counts().items()}))
    return dict(customers=int(len(tags)), tags=rows)


def campaign_figures(lake_root: str, as_of: dt.date) -> dict:
    targets = read_delta(lake_root, "gold.campaign_targets")
    archive = read_delta(lake_root, "bronze.customer_archive", ["customer_id", "do_not_contact"])
    if targets is None:
        return {}
    targets = targets[targets["as_of"] == as_of]
    treat = targets[targets["ab_group"] == "treatment"]
    unknown = set(archive.loc[archive["do_not_contact"].isna(), "customer_id"])
    return dict(targets=int(len(targets)), treatment=int(len(treat)),
                treatment_unknown_opt_out=int(treat["customer_id"].isin(unknown).sum()),
                per_campaign={str(k): int(v) for k, v in targets.groupby("campaign_id").size().items()}
                if "campaign_id" in targets.columns else {})


def plot_centroids(lake_root: str, version: str, path: str, slots: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = read_delta(lake_root, "gold.segment_model")
    model = model[model["model_version"] == version].sort_values("segment_id")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    hours = np.arange(slots) * 24 / slots
    for _, r in model.iterrows():
        c = np.asarray(r["centroid"])
        for ax, part in zip(axes, (c[:slots], c[slots:])):
            ax.plot(hours, part, label=f"{r['segment_id']} {r['segment_label']} ({r['size']})")
    for ax, title in zip(axes, ("weekday", "weekend")):
        ax.set_title(f"segment centroids, {title}")
        ax.set_xlabel("local hour")
        ax.set_xticks(range(0, 25, 3))
    axes[0].set_ylabel("share of daily kWh per slot")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="Parquet file: meter_id, ts (UTC), kwh")
    p.add_argument("--work", default=None, help="work folder (default: a new temporary folder)")
    p.add_argument("--interval-minutes", type=int, default=30)
    p.add_argument("--time-zone", default="Europe/London")
    p.add_argument("--calendar", default="none",
                   help="calendar.country for the data's holidays (default none: the built-in calendar is China's, "
                        "the sample is from Scotland)")
    p.add_argument("--as-of", type=dt.date.fromisoformat, default=None, help="default: the data's last local day")
    p.add_argument("--window-days", type=int, default=None, help="default: every day of the data")
    p.add_argument("--retrain-seed", type=int, default=7)
    p.add_argument("--env", default="local")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--figures-only", action="store_true",
                   help="reuse the lake already in --work: skip ingest and run all, measure, retrain, report")
    args = p.parse_args(argv)

    work = args.work or tempfile.mkdtemp(prefix="gp-realdata-")
    os.makedirs(work, exist_ok=True)
    lake_root = os.path.join(work, "lake")
    if os.path.exists(lake_root) and not args.figures_only:
        raise SystemExit(f"{lake_root} exists: give a fresh --work folder")
    data = pq.read_table(args.data, columns=["meter_id", "ts", "kwh"])
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(args.time_zone)
    ts = data.column("ts")
    # Complete local days only: the first day starting at or after the first reading, the last day ending
    # at or before the end of the last interval (UTC data ends 00:30 BST on the next local day).
    first_start = pc.min(ts).as_py().astimezone(tz)
    first_local = first_start.date() + dt.timedelta(days=0 if first_start.time() == dt.time(0) else 1)
    last_end = (pc.max(ts).as_py() + dt.timedelta(minutes=args.interval_minutes)).astimezone(tz)
    last_local = last_end.date() - dt.timedelta(days=1)
    as_of = args.as_of or last_local
    window = args.window_days or (as_of - first_local).days + 1
    archive_csv = os.path.join(work, "archive_minimal.csv")
    n_meters = minimal_archive(data, archive_csv)
    log(f"{args.data}: {data.num_rows:,} readings of {n_meters} meters, local days {first_local} .. {last_local}; "
        f"as-of {as_of}, window {window} days; work folder {work}")

    settings = [f"ami.interval_minutes={args.interval_minutes}", f"ami.time_zone={args.time_zone}",
                f"calendar.country={args.calendar}", *args.overrides]
    gp = Runner(lake_root, settings, args.env)
    figures: dict = dict(data=os.path.abspath(args.data), readings=data.num_rows, meters=n_meters,
                         as_of=str(as_of), window_days=window)
    log_path = os.path.join(work, "run_all.log")
    if not args.figures_only:
        gp("ingest", "bronze.ami_interval", args.data, "--format", "parquet")
        gp("ingest", "bronze.customer_archive", archive_csv, "--format", "csv")
        run = gp("run", "all", "--as-of", str(as_of), "--window-days", str(window))
        with open(log_path, "w") as fh:
            fh.write(f"exit {run.returncode}\n" + run.stdout + run.stderr)
        if run.returncode != 0:  # carry on stage by stage to see how far a user gets
            for stage in ("segment-train", "segment-assign", "tags", "profile"):
                gp("run", stage, "--as-of", str(as_of), "--window-days", str(window))
    with open(log_path) as fh:
        run_log = fh.read()
    figures["run_all_ok"] = run_log.startswith("exit 0\n")
    optional_notes = [ln.strip() for ln in run_log.splitlines() if "absent" in ln]
    figures["optional_input_notes"] = optional_notes[:3]

    first = segment_figures(lake_root, as_of)
    figures["outliers"] = outlier_figures(lake_root)
    figures["tags"] = tag_figures(lake_root, as_of)
    figures["campaigns"] = campaign_figures(lake_root, as_of)
    picture = None
    if first:
        picture = os.path.join(work, "centroids.png")
        plot_centroids(lake_root, first["model_version"], picture, 1440 // args.interval_minutes)
        gp("run", "segment-train", "--as-of", str(as_of), "--window-days", str(window),
           extra_set=(f"segment.seed={args.retrain_seed}",))
        gp("run", "segment-assign", "--as-of", str(as_of), "--window-days", str(window),
           extra_set=(f"segment.seed={args.retrain_seed}",))
        second = segment_figures(lake_root, as_of)
        a, b = first.pop("assignments"), second.pop("assignments")
        both = a.merge(b, on="meter_id", suffixes=("_1", "_2"))
        figures["segments"] = first
        figures["retrain"] = dict(
            seed=args.retrain_seed, label_kept=float((both["segment_label_1"] == both["segment_label_2"]).mean()),
            id_kept=float((both["segment_id_1"] == both["segment_id_2"]).mean()),
            ari=round(adjusted_rand_index(both["segment_id_1"].to_numpy(), both["segment_id_2"].to_numpy()), 4), k=second.get("k"),
            labels=sorted(s["label"] for s in second["segments"]))
    rep = gp("report", "--as-of", str(as_of), check=False)
    figures["report"] = rep.stdout.strip().splitlines()[0] if rep.returncode == 0 and rep.stdout.strip() else None
    figures["timings"] = gp.timings

    bars = evaluate_bars(figures)
    figures["bars"] = bars
    with open(os.path.join(work, "figures.json"), "w") as fh:
        json.dump(figures, fh, indent=2, default=str)
    print_summary(figures, picture)
    return 0 if all(b["ok"] for b in bars) else 1


def evaluate_bars(f: dict) -> list[dict]:
    bars = [dict(bar="run all finishes with meter readings and a minimal archive", value=f["run_all_ok"],
                 ok=bool(f["run_all_ok"]))]
    seg = f.get("segments") or {}
    if seg:
        bars.append(dict(bar="every segment label distinct", value=seg["labels_distinct"], ok=seg["labels_distinct"]))
        bars.append(dict(bar="meters in segments without a specific pattern name <= 10 %",
                         value=round(seg["generic_share"], 4), ok=seg["generic_share"] <= 0.10))
    re = f.get("retrain") or {}
    if re:
        bars.append(dict(bar=f"retrain with seed {re['seed']} keeps >= 90 % of meters' labels",
                         value=round(re["label_kept"], 4), ok=re["label_kept"] >= 0.90))
    out = f.get("outliers") or {}
    if out:
        bars.append(dict(bar="outlier replacement <= 1 in 100,000 readings",
                         value=round(out["replaced_per_100k"], 2), ok=out["replaced_per_100k"] <= 1.0))
        bars.append(dict(bar="outlier replacement <= 0.01 % of the energy",
                         value=f"{100 * out['replaced_energy_share']:.4f} %", ok=out["replaced_energy_share"] <= 1e-4))
    tags = (f.get("tags") or {}).get("tags") or []
    if tags:
        # Without per-tag needs in the catalog every categorical tag is suspect (all non-load sources are absent).
        bad = [t["tag"] for t in tags if t["top_share"] > 0.95 and t["source_absent"] is not False]
        bars.append(dict(bar="no categorical tag gives one confident value to > 95 % of customers without its source",
                         value=", ".join(bad) or "none", ok=not bad))
    camp = f.get("campaigns") or {}
    if camp:
        bars.append(dict(bar="zero treatment targets with unknown opt-out", value=camp["treatment_unknown_opt_out"],
                         ok=camp["treatment_unknown_opt_out"] == 0))
    return bars


def print_summary(f: dict, picture: str | None) -> None:
    print()
    print(f"real sample: {f['readings']:,} readings, {f['meters']} meters, as-of {f['as_of']}, {f['window_days']} days")
    for t in f["timings"]:
        print(f"  {t['step']:<60} exit {t['status']}  {t['wall_s']:>7.1f} s wall  {t['cpu_s']:>7.1f} s CPU")
    for note in f.get("optional_input_notes") or []:
        print(f"  note: {note}")
    seg = f.get("segments") or {}
    if seg:
        print(f"\nsegments (model {seg['model_version']}, k={seg['k']}, silhouette {seg['silhouette']}"
              + "".join(f", {k} {seg[k]}" for k in ("stability", "weak_structure") if k in seg) + ")")
        print(f"  silhouette by k: {seg['silhouette_by_k']}")
        for s in seg["segments"]:
            print(f"  {s['segment_id']:>3} {s['label']:<24} {s['name_en']:<34} {s['name_zh']:<10} "
                  f"{s['meters']:>5} meters  {s['mean_daily_kwh']} kWh/day")
    re = f.get("retrain") or {}
    if re:
        print(f"  retrain seed {re['seed']}: labels kept {re['label_kept']:.1%}, ids kept {re['id_kept']:.1%}, "
              f"ARI {re['ari']}, k={re['k']}")
    out = f.get("outliers") or {}
    if out:
        print(f"\noutliers: {out['replaced']:,} of {out['readings']:,} readings replaced "
              f"({out['replaced_per_100k']:.2f} per 100,000) on {out['replaced_meters']} meters, "
              f"{out['replaced_energy_kwh']} kWh ({100 * out['replaced_energy_share']:.4f} % of the energy), "
              f"median replaced reading {out['replaced_median_kwh']}")
    tags = f.get("tags") or {}
    if tags:
        print(f"\ntags ({tags['customers']} customers): known share, top value and its share of all customers")
        for t in tags["tags"]:
            print(f"  {t['tag']:<28} known {t['known_share']:>6.1%}  top {str(t['top_value']):<14} "
                  f"{t['top_share']:>6.1%}  {t['distribution']}")
    camp = f.get("campaigns") or {}
    if camp:
        print(f"\ncampaigns: {camp['targets']} targets, {camp['treatment']} in treatment, "
              f"{camp['treatment_unknown_opt_out']} of them with unknown opt-out; per campaign {camp['per_campaign']}")
    if f.get("report"):
        print(f"\n{f['report']}")
    if picture:
        print(f"centroid curves: {picture}")
    print("\nbars")
    for b in f["bars"]:
        print(f"  {'ok   ' if b['ok'] else 'MISS '} {b['bar']}: {b['value']}")


if __name__ == "__main__":
    sys.exit(main())
