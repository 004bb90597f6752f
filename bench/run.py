"""Benchmark: synthetic lake -> pipeline stages in one Spark session, against a DuckDB + scikit-learn reference.

    .venv/bin/python bench/run.py --meters 20000 --days 30 [--scale 1,3] [--lake /tmp/benchlake]
        [--stages clean,shapes,...] [--skip-generate] [--rows main,daily,scale] [--main-lake DIR]
        [--out bench/results/NAME.json]

Rows (``--rows``, all three by default): ``main``, the main job (``run all``) on the default lake
(as ``gridpersona demo`` makes it), in a child process with its own Spark session, as a user runs
it; ``scale``, the per-scale stage runs described below; ``daily``, one new day landed after a
history of ``--days`` days on the scale-1 meters. A summary table of every bar ends the printout.

For each scale factor s (s x the meters, same days) the lake lives in
``<lake>/m<meters*s>_d<days>`` and is generated unless it is already there with
the same size and generator config. Then, in ONE Spark session (start timed and
reported apart), the stages run one at a time through
``gridpersona.stages.pipeline.run_pipeline``; the bar span is shapes + segment-train +
segment-assign (silver.ami_clean read -> gold.customer_segments written). The
reference (bench/reference.py) runs in a child process on the same
silver.ami_clean snapshot, once per typical-shape rule. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from genlake import MARKER, lake_identity, read_marker  # noqa: E402
from memwatch import PeakRss, high_water_mb, tree_cpu_seconds, wait_with_peak  # noqa: E402

from gridpersona.contracts import segments as SG  # noqa: E402
from gridpersona.contracts import silver as SI  # noqa: E402

log = logging.getLogger("gridpersona")

ALL_STAGES = ("clean", "shapes", "segment-train", "segment-assign", "profile")
BAR_STAGES = ("shapes", "segment-train", "segment-assign")
SEGMENT_STAGES = ("segment-train", "segment-assign")
ROWS = ("main", "daily", "scale")
# Bars of issue 14 (the 2x reference bar of the core-pipeline issue is retired, bench/README.md).
BAR_FACTOR = 6.0            # shapes + segment span / DuckDB reference
DRIVER_HEAP_MB = 4096       # the local driver heap (spark.driver.memory 4g): the hard ceiling
MEMORY_BAR_MB = 3584        # peak driver + JVM RSS during the bar span at scale 1
MAIN_JOB_BAR_S = 120.0      # `run all` on the default lake
CLEAN_TO_SHAPES_BAR = 2.0   # clean seconds / shapes seconds in the main job
DAILY_BAR = 0.1             # daily clean + shapes / window clean + shapes
AMI_CLEAN = SI.AMI_CLEAN.name
SEGMENTS = SG.CUSTOMER_SEGMENTS.name


# ------------------------------------------------------------------ helpers

def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def fmt_int(n) -> str:
    return "-" if n is None else f"{int(n):,}"


def fmt_s(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def settings_for(args, root: str):
    from gridpersona.config import load_settings

    return load_settings(args.env, [*args.overrides, f"lake.root={root}"])


def ensure_lake(args, root: str, meters: int, days: int | None = None) -> dict:
    """Generate the lake at ``root`` unless an identical one is there; returns its marker plus how it was obtained."""
    days = days or args.days
    settings = settings_for(args, root)
    want = lake_identity(settings, meters, days)
    have = read_marker(root)
    same = have is not None and all(have.get(k) == v for k, v in want.items())
    if args.skip_generate:
        if not same:
            raise SystemExit(f"--skip-generate: no benchmark lake of {meters} meters x {days} days at {root} "
                             f"({MARKER} missing or different); run without --skip-generate")
        return {**have, "generated": False}
    if same:
        log.info("lake %s: present (%d meters x %d days), not regenerated", root, meters, days)
        return {**have, "generated": False}
    log.info("lake %s: generating %d meters x %d days ...", root, meters, days)
    cmd = [sys.executable, os.path.join(HERE, "genlake.py"), "--lake-root", root, "--meters", str(meters),
           "--days", str(days), "--env", args.env, *[a for o in args.overrides for a in ("--set", o)]]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"generating the lake at {root} failed (exit {done.returncode}); command: {' '.join(cmd)}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    log.info("lake %s: generated in %.1f s", root, time.perf_counter() - t0)
    return {**info, "generated": True}


def stage_runner(wanted: list[str]):
    """(stages to run, how they run, notes): run_pipeline when every stage module imports, else run_stage directly."""
    notes = []
    try:
        for module in ("segment_train", "segment_assign", "profile"):
            importlib.import_module(f"gridpersona.stages.{module}")
        segment_ok = True
    except ImportError as exc:
        segment_ok = False
        notes.append(f"the segment stage modules do not import ({exc}): segment-train, segment-assign and "
                     f"profile are not run; the bar span holds shapes only and is NOT comparable to the reference")
    runnable = [s for s in wanted if segment_ok or s in ("clean", "shapes")]
    skipped = [s for s in wanted if s not in runnable]

    # Stages run one by one, as separate runs: one cache shared by them lets segment-assign reuse the
    # typical shapes segment-train computed, as in `run all` (entries are keyed on the lake and window).
    from gridpersona.stages.runner import RunCache

    cache = RunCache()

    def run(settings, spark, lake, stage, as_of, window_days):
        if segment_ok:
            from gridpersona.stages.pipeline import run_pipeline

            return run_pipeline(settings, spark, lake, stage, as_of, window_days, cache=cache)[0][1]
        # Without the segment modules run_pipeline cannot load those stages; run the same
        # stage function through the same runner (timing, ops.job_runs) that run_pipeline uses.
        from gridpersona.stages import clean, shapes
        from gridpersona.stages.runner import StageContext, run_stage

        fn = {"clean": clean.run_clean, "shapes": shapes.run_shapes}[stage]
        return run_stage(stage, fn, StageContext(settings, spark, lake, as_of, window_days))

    return runnable, skipped, run, notes


# What each stage writes (tables, and folders under the lake root), dropped before a run.
STAGE_OUTPUTS = {
    "clean": (["silver.ami_clean", "silver.ami_quarantine", "silver.meter_day_quality"], []),
    "shapes": (["silver.daily_load_shape"], []),
    "segment-train": (["gold.segment_model"], ["models/segment"]),
    "segment-assign": (["gold.customer_segments"], []),
    "profile": (["gold.segment_profile"], []),
}


def drop_stage_outputs(lake, stages: list[str]) -> list[str]:
    """Remove what ``stages`` write from a benchmark lake (never another lake: the marker file is checked).

    Every run then writes into new tables: no table left by older code with another
    schema, and the same work (create, not replace) at every run.
    """
    import shutil

    if read_marker(lake.root) is None:
        raise SystemExit(f"{lake.root} has no {MARKER}: not a benchmark lake, its tables are not dropped")
    dropped = []
    for stage in stages:
        tables, folders = STAGE_OUTPUTS[stage]
        for path in [lake.path(t) for t in tables] + [os.path.join(lake.root, f) for f in folders]:
            if os.path.isdir(path):
                shutil.rmtree(path)
                dropped.append(os.path.relpath(path, lake.root))
    return dropped


def error_summary(exc: BaseException) -> str:
    """First line of an error and its root cause (a Py4J error's Java 'Caused by:'), without stack frames."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("at ")]
    causes = [ln for ln in lines if ln.startswith("Caused by:")]
    head = lines[0] if lines else type(exc).__name__
    for ln in lines[1:3]:
        if "failure" in ln or "Exception" in ln or "Error" in ln:
            head += " " + ln
            break
    return head[:400] + (f" ... {causes[-1]}" if causes else "")


def peak_of(memories: list[dict]) -> dict:
    """The per-stage PeakRss figures combined: each peak the maximum over the stages."""
    if not memories:
        return {"peak_root_mb": 0.0, "peak_jvm_mb": 0.0, "peak_other_mb": 0.0, "peak_root_jvm_mb": 0.0,
                "peak_total_mb": 0.0, "samples": 0, "interval_s": 0.2}
    out = {k: max(m[k] for m in memories) for k in memories[0] if k.startswith("peak_")}
    out["samples"] = sum(m["samples"] for m in memories)
    out["interval_s"] = memories[0]["interval_s"]
    return out


def input_rows_from_log(lake, table: str) -> int | None:
    """Row count of a table's latest snapshot from the Delta log (no Spark job)."""
    try:
        return lake.info(table).rows
    except Exception:  # an absent table or a log without counts: just unknown
        return None


def _segment_column(columns: list[str]) -> str | None:
    for name in ("segment_id", "segment", "cluster_id", "cluster", "prediction", "segment_name"):
        if name in columns:
            return name
    return None


def spark_segment_accuracy(lake, reference_files: dict[str, str]) -> dict | None:
    """ARI of gold.customer_segments against truth.meters archetypes and against each reference's assignments."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401 (pa.compute)
    import pyarrow.parquet as pq
    from sklearn.metrics import adjusted_rand_score

    if not lake.exists(SEGMENTS) or not lake.exists("truth.meters"):
        return None
    seg = lake.read_arrow(SEGMENTS)
    col = _segment_column(seg.column_names)
    if col is None or "meter_id" not in seg.column_names:
        return {"note": f"{SEGMENTS} has no recognisable segment column: {seg.column_names}"}
    truth = lake.read_arrow("truth.meters", columns=["meter_id", "archetype"])
    planted = dict(zip(truth.column("meter_id").to_pylist(), truth.column("archetype").to_pylist()))
    ids = seg.column("meter_id").to_pylist()
    labels = np.array([str(v) for v in seg.column(col).to_pylist()], dtype=object)
    if "as_of" in seg.column_names:  # the latest run's rows only
        latest = max(seg.column("as_of").to_pylist())
        seg = seg.filter(pa.compute.equal(seg.column("as_of"), pa.scalar(latest, seg.schema.field("as_of").type)))
        ids = seg.column("meter_id").to_pylist()
        labels = np.array([str(v) for v in seg.column(col).to_pylist()], dtype=object)
    vac_col = next((c for c in ("is_vacant", "vacant", "segment_label") if c in seg.column_names), None)
    vac_values = seg.column(vac_col).to_pylist() if vac_col else [str(v) for v in labels]
    vacant = np.array([v is True or (isinstance(v, str) and v.lower() == "vacant") for v in vac_values])
    arche = np.array([planted.get(m) or "" for m in ids], dtype=object)
    mask = (arche != "") & (arche != "vacant") & ~vacant
    out = {"segment_column": col, "meters": len(ids), "vacant_meters": int(vacant.sum()),
           "ari_vs_archetype": round(float(adjusted_rand_score(arche[mask], labels[mask])), 4)}
    tv = arche == "vacant"
    out["vacant_precision"] = round(float((vacant & tv).sum() / vacant.sum()), 4) if vacant.sum() else None
    out["vacant_recall"] = round(float((vacant & tv).sum() / tv.sum()), 4) if tv.sum() else None
    for rule, path in reference_files.items():
        if not path or not os.path.exists(path):
            continue
        ref = pq.read_table(path)
        ref_seg = dict(zip(ref.column("meter_id").to_pylist(), ref.column("segment_id").to_pylist()))
        both = [(lab, ref_seg[m]) for m, lab, ok in zip(ids, labels, mask) if ok and ref_seg.get(m, -1) >= 0]
        if both:
            a, b = zip(*both)
            out[f"ari_vs_reference_{rule}"] = round(float(adjusted_rand_score(a, b)), 4)
    return out


# ------------------------------------------------------------------ diagnostics (outside the bar span)

def shapes_diagnostics(spark, lake, settings, first, last, plan_path: str | None) -> dict:
    """Where the shapes stage's time goes: input count pass, aggregation alone (noop sink), and the plan."""
    from pyspark.sql import functions as F

    from gridpersona.stages.clean import calendar_frame
    from gridpersona.stages.runner import StageContext
    from gridpersona.transform import shapes as S

    ctx = StageContext(settings, spark, lake, last, (last - first).days + 1)
    out = {}
    clean = lake.read(AMI_CLEAN).filter(F.col("date").between(first, last))
    t0 = time.perf_counter()
    clean.count()
    out["input_count_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    clean.select("meter_id", "slot", "kwh", "quality").write.format("noop").mode("overwrite").save()
    out["scan_4_columns_noop_s"] = round(time.perf_counter() - t0, 2)
    shapes = S.daily_load_shapes(clean, calendar_frame(ctx), interval_minutes=settings.ami.interval_minutes,
                                 tariff=settings.tariff, normalization=settings.shapes.normalization)
    t0 = time.perf_counter()
    shapes.write.format("noop").mode("overwrite").save()
    out["shapes_noop_s"] = round(time.perf_counter() - t0, 2)
    if plan_path:
        from contextlib import redirect_stdout

        with open(plan_path, "w") as fh, redirect_stdout(fh):
            shapes.explain("formatted")
        out["plan_file"] = plan_path
    return out


def typical_shape_diagnostics(spark, lake, settings, first, last) -> dict:
    """Spark cost of the two typical-shape rules over silver.daily_load_shape (noop sink; not the pipeline's code)."""
    from pyspark.sql import functions as F

    if not lake.exists("silver.daily_load_shape"):
        return {}
    n = 1440 // settings.ami.interval_minutes
    days = (lake.read("silver.daily_load_shape").filter(F.col("date").between(first, last))
            .filter(F.col("completeness") >= 0.9))
    mean = days.groupBy("meter_id", "is_weekend").agg(*[F.avg(F.col("shape")[i]).alias(f"t{i}") for i in range(n)])
    energy = (days.groupBy("meter_id", "is_weekend")
              .agg(F.sum("daily_kwh").alias("e"), *[F.sum(F.col("slot_kwh")[i]).alias(f"s{i}") for i in range(n)])
              .select("meter_id", "is_weekend", *[(F.col(f"s{i}") / F.col("e")).alias(f"t{i}") for i in range(n)]))
    out = {}
    for name, df in (("mean", mean), ("energy", energy)):
        t0 = time.perf_counter()
        df.write.format("noop").mode("overwrite").save()
        out[f"spark_{name}_s"] = round(time.perf_counter() - t0, 2)
    return out


# ------------------------------------------------------------------ one scale

def run_reference(args, root: str, first: dt.date, last: dt.date, typical: str, result_dir: str) -> dict:
    out_json = os.path.join(result_dir, f"reference_{os.path.basename(root)}_{typical}.json")
    cmd = [sys.executable, os.path.join(HERE, "reference.py"), "--lake-root", root, "--first", str(first),
           "--last", str(last), "--typical", typical, "--env", args.env, "--out", out_json,
           *[a for o in args.overrides for a in ("--set", o)]]
    log.info("[reference %s] %s", typical, " ".join(cmd[1:]))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    code, mem = wait_with_peak(proc)
    wall = time.perf_counter() - t0
    if code:
        return {"typical": typical, "error": f"exit {code}", "process_wall_s": round(wall, 2)}
    with open(out_json) as fh:
        res = json.load(fh)
    res["process_wall_s"] = round(wall, 2)
    res["sampled_memory"] = mem
    log.info("[reference %s] %.1f s (imports %.1f s), k=%s, peak RSS %.0f MB", typical, res["seconds"],
             res["import_seconds"], res["k"], res["peak_rss_mb"])
    return res


def run_scale(args, spark, scale: int, root: str, runnable: list[str], run_stage_fn, result_dir: str) -> dict:
    from gridpersona.lake import Lake
    sys.path.insert(0, HERE)
    from reference import segment_params

    settings = settings_for(args, root)
    lake = Lake(settings, spark)
    start = settings.generate.start
    first, last = start, start + dt.timedelta(days=args.days - 1)
    rec: dict = {"scale": scale, "meters": args.meters * scale, "days": args.days, "lake": root,
                 "as_of": str(last), "window_days": args.days, "stages": [], "loadavg_before": loadavg()}
    failed = None
    if not args.keep_outputs:
        rec["dropped_before_run"] = drop_stage_outputs(lake, runnable)
    t_all = time.perf_counter()
    for stage in runnable:
        t0, cpu0 = time.perf_counter(), tree_cpu_seconds()
        mem = PeakRss(interval_s=0.2)  # per stage, so the bar span's peak is told apart from clean's
        try:
            with mem:
                if stage == "clean" and 0 < args.clean_window_days < args.days:
                    res = clean_in_windows(run_stage_fn, settings, spark, lake, first, last, args.clean_window_days)
                else:
                    res = run_stage_fn(settings, spark, lake, stage, last, args.days)
        except Exception as exc:  # record, then stop this scale's Spark stages: later stages need the output
            failed = f"{stage}: {type(exc).__name__}: {error_summary(exc)}"
            log.error("stage %s failed: %s", stage, traceback.format_exc(limit=8))
            rec["stages"].append({"stage": stage, "seconds": round(time.perf_counter() - t0, 2), "error": failed,
                                  "memory": mem.as_dict()})
            break
        rows_in, rows_in_source = res.rows_in, "stage"
        if stage == "shapes" and not rows_in:
            rows_in, rows_in_source = input_rows_from_log(lake, AMI_CLEAN), "delta log"
        rec["stages"].append({"stage": stage, "seconds": round(res.seconds, 3), "wall_s": round(time.perf_counter() - t0, 3),
                              "cpu_seconds": round(tree_cpu_seconds() - cpu0, 2),
                              "rows_in": rows_in, "rows_in_source": rows_in_source, "rows_out": res.rows_out,
                              "outputs": res.outputs, "notes": res.notes, "loadavg_after": loadavg(),
                              "memory": mem.as_dict()})
    rec["spark_wall_s"] = round(time.perf_counter() - t_all, 2)
    rec["cores"] = cores_used(spark)
    rec["per_core"] = per_core(rec)
    rec["memory"] = peak_of([s["memory"] for s in rec["stages"]])
    rec["failed"] = failed
    done = {s["stage"]: s for s in rec["stages"] if "error" not in s}
    bar_done = [s for s in BAR_STAGES if s in done]
    rec["bar_span"] = {"stages": bar_done, "complete": len(bar_done) == len(BAR_STAGES),
                       "seconds": round(sum(done[s]["seconds"] for s in bar_done), 3),
                       "cpu_seconds": round(sum(done[s]["cpu_seconds"] for s in bar_done), 2),
                       "rows_in": done["shapes"]["rows_in"] if "shapes" in done else input_rows_from_log(lake, AMI_CLEAN),
                       "memory": peak_of([done[s]["memory"] for s in bar_done])}

    params, source = segment_params(settings)
    rec["segment_params"], rec["segment_param_source"] = params, source
    rules = [params["typical"]] + [r for r in ("mean", "energy") if r != params["typical"]]
    if not args.no_reference and lake.exists(AMI_CLEAN):
        rec["loadavg_before_reference"] = loadavg()
        rec["reference"] = {r: run_reference(args, root, first, last, r, result_dir) for r in rules[: 1 if args.one_rule else 2]}
        rec["reference_rule"] = params["typical"]
        ref = rec["reference"][params["typical"]]
        if "seconds" in ref and rec["bar_span"]["seconds"]:
            rec["ratio"] = round(rec["bar_span"]["seconds"] / ref["seconds"], 3)
            rec["cpu_ratio"] = round(rec["bar_span"]["cpu_seconds"] / max(ref["cpu_seconds"], 1e-9), 3)
    if not args.no_diagnostics and lake.exists(AMI_CLEAN) and (scale == args.scales[0] or args.diagnostics_every_scale):
        plan = os.path.join(result_dir, f"shapes_plan_{os.path.basename(root)}.txt")
        try:
            rec["diagnostics"] = {"shapes": shapes_diagnostics(spark, lake, settings, first, last, plan),
                                  "typical_shape": typical_shape_diagnostics(spark, lake, settings, first, last)}
        except Exception as exc:
            rec["diagnostics"] = {"error": f"{type(exc).__name__}: {exc}"}
    if "reference" in rec:
        try:
            rec["spark_segments_accuracy"] = spark_segment_accuracy(
                lake, {r: v.get("assignments") for r, v in rec["reference"].items()})
        except Exception as exc:
            rec["spark_segments_accuracy"] = {"error": f"{type(exc).__name__}: {exc}"}
    return rec


# ------------------------------------------------------------------ operator rows: main job, daily run

def cores_used(spark) -> int:
    """Cores the stages run on: a local master's threads (local[N]: N, local[*]: every core), else the cluster's
    default parallelism (its executors' cores, or spark.default.parallelism when set)."""
    import re

    master = spark.sparkContext.master
    match = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master)
    if match:
        n = match.group(1)
        return os.cpu_count() or 1 if n == "*" else int(n or 1)
    return int(spark.sparkContext.defaultParallelism)


def per_core(rec: dict) -> dict:
    """Throughput per core of one scale's stages: readings/s for clean and shapes, meters/s for segment."""
    done = {s["stage"]: s for s in rec["stages"] if "error" not in s}
    out = {}
    for stage in ("clean", "shapes"):
        s = done.get(stage)
        if s and s["rows_in"] and s["seconds"]:
            out[stage] = {"rows_per_s": round(s["rows_in"] / s["seconds"]), "unit": "readings",
                          "rows_per_s_per_core": round(s["rows_in"] / s["seconds"] / rec["cores"])}
    if all(st in done for st in SEGMENT_STAGES):
        seconds = sum(done[st]["seconds"] for st in SEGMENT_STAGES)
        meters = done["segment-assign"]["rows_in"] or rec["meters"]
        out["segment"] = {"rows_per_s": round(meters / seconds, 1), "unit": "meters",
                          "rows_per_s_per_core": round(meters / seconds / rec["cores"], 1)}
    return out


@contextmanager
def metered_stages(records: list[dict]):
    """Wrap the runner run_pipeline calls so every stage of one call (``run all``) gets its own wall, CPU and
    memory figures; the stage functions, locks and ops.job_runs rows are the pipeline's own."""
    from gridpersona.stages import pipeline

    original = pipeline.run_stage

    def metered(name, fn, ctx, **kwargs):
        t0, cpu0 = time.perf_counter(), tree_cpu_seconds()
        mem = PeakRss(interval_s=0.2)
        try:
            with mem:
                res = original(name, fn, ctx, **kwargs)
        except Exception as exc:
            records.append({"stage": name, "seconds": round(time.perf_counter() - t0, 2),
                            "error": f"{type(exc).__name__}: {error_summary(exc)}", "memory": mem.as_dict()})
            raise
        records.append({"stage": name, "seconds": round(res.seconds, 3), "wall_s": round(time.perf_counter() - t0, 3),
                        "cpu_seconds": round(tree_cpu_seconds() - cpu0, 2), "rows_in": res.rows_in,
                        "rows_out": res.rows_out, "outputs": res.outputs, "memory": mem.as_dict()})
        return res

    pipeline.run_stage = metered
    try:
        yield
    finally:
        pipeline.run_stage = original


def main_job_root(args) -> str:
    if args.main_lake:
        return os.path.abspath(args.main_lake)
    g = settings_for(args, args.lake).generate
    return os.path.join(args.lake, f"default_m{g.meters}_d{g.days}")


def run_main_job(args) -> dict:
    """`run all` on the default lake (generate.meters x generate.days of the config, as `gridpersona demo`
    makes it; or the lake at --main-lake), in this process's own new Spark session: per stage seconds, CPU s,
    rows/s and peak memory, the whole job's seconds and clean / shapes."""
    from gridpersona.app.cli import latest_ami_date
    from gridpersona.lake import Lake
    from gridpersona.stages.pipeline import run_pipeline

    root = main_job_root(args)
    settings = settings_for(args, root)
    rec: dict = {"lake": root, "loadavg_before": loadavg()}
    if args.main_lake:
        if not os.path.isdir(os.path.join(root, "bronze", "ami_interval")):
            raise SystemExit(f"--main-lake {root}: no bronze.ami_interval there (make one with `gridpersona demo`)")
        rec["lake_source"] = "existing (--main-lake)"
    else:
        marker = ensure_lake(args, root, settings.generate.meters, settings.generate.days)
        rec["lake_source"] = "generated" if marker["generated"] else "present"
    rec["meters"], rec["days"] = settings.generate.meters, settings.generate.days
    t0 = time.perf_counter()
    lake = Lake(settings)
    spark = lake.spark
    rec["spark_session_s"] = round(time.perf_counter() - t0, 2)
    as_of = latest_ami_date(lake)
    rec["as_of"], rec["window_days"] = str(as_of), settings.pipeline.window_days
    rec["stages"] = []
    t0, cpu0 = time.perf_counter(), tree_cpu_seconds()
    try:
        with metered_stages(rec["stages"]):
            run_pipeline(settings, spark, lake, "all", as_of, settings.pipeline.window_days)
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {error_summary(exc)}"
        log.error("run all failed: %s", traceback.format_exc(limit=8))
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    rec["cpu_seconds"] = round(tree_cpu_seconds() - cpu0, 2)
    rec["cores"] = cores_used(spark)
    rec["memory"] = peak_of([s["memory"] for s in rec["stages"]])
    done = {s["stage"]: s for s in rec["stages"] if "error" not in s}
    if "clean" in done and "shapes" in done and done["shapes"]["seconds"]:
        rec["clean_to_shapes"] = round(done["clean"]["seconds"] / done["shapes"]["seconds"], 3)
    rec["loadavg_after"] = loadavg()
    spark.stop()
    return rec


def main_job_in_child(args, result_dir: str, stamp: str) -> dict:
    """The main-job row in a child process (this script with --rows main): its own JVM, started cold like a
    user's `gridpersona run all`, whose heap growth cannot leak into the other rows' memory figures."""
    out_json = os.path.join(result_dir, f"main_job_{stamp}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--rows", "main", "--lake", args.lake, "--env", args.env,
           "--out", out_json, *[a for o in args.overrides for a in ("--set", o)]]
    if args.main_lake:
        cmd += ["--main-lake", args.main_lake]
    if args.skip_generate:
        cmd.append("--skip-generate")
    log.info("[main job] %s", " ".join(cmd[1:]))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO)
    try:
        with open(out_json) as fh:
            rec = json.load(fh)["main_job"]
    except (OSError, ValueError, KeyError):
        return {"error": f"the main-job child exited {done.returncode} without results; command: {' '.join(cmd)}",
                "lake": main_job_root(args)}
    rec["process_wall_s"] = round(time.perf_counter() - t0, 2)
    return rec


def incremental_supported() -> bool:
    from gridpersona.stages.pipeline import run_pipeline

    return "incremental" in inspect.signature(run_pipeline).parameters


def run_daily(args, spark, result_dir: str) -> dict:
    """One new day after a history of ``--days`` days, on the scale-1 meters.

    The lake holds ``--days`` + 1 days. Clean and shapes run over the first ``--days`` days (the window
    run, as_of the last of them; clean in --clean-window-days windows if set), then clean and shapes run
    for the next day: incrementally (``run_pipeline(..., incremental=True)``) when the pipeline has that
    mode, else as a one-day window. Ratio: daily clean + shapes / window clean + shapes.
    """
    from gridpersona.lake import Lake
    from gridpersona.stages.pipeline import run_pipeline
    from gridpersona.stages.runner import RunCache

    days = args.days + 1
    root = os.path.join(args.lake, f"m{args.meters}_d{days}")
    ensure_lake(args, root, args.meters, days)
    settings = settings_for(args, root)
    lake = Lake(settings, spark)
    start = settings.generate.start
    history_last, new_day = start + dt.timedelta(days=args.days - 1), start + dt.timedelta(days=args.days)
    incremental = incremental_supported()
    rec: dict = {"lake": root, "meters": args.meters, "history_days": args.days, "window_as_of": str(history_last),
                 "daily_as_of": str(new_day), "incremental": incremental,
                 "mode": "incremental" if incremental else "one-day window (incremental not available)",
                 "loadavg_before": loadavg(), "window": [], "daily": []}
    if not args.keep_outputs:
        rec["dropped_before_run"] = drop_stage_outputs(lake, ["clean", "shapes"])

    def timed(phase: str, stage: str, call) -> bool:
        t0, cpu0 = time.perf_counter(), tree_cpu_seconds()
        mem = PeakRss(interval_s=0.2)
        try:
            with mem:
                res = call()
        except Exception as exc:
            rec[phase].append({"stage": stage, "seconds": round(time.perf_counter() - t0, 2), "memory": mem.as_dict(),
                               "error": f"{type(exc).__name__}: {error_summary(exc)}"})
            log.error("daily row, %s %s failed: %s", phase, stage, traceback.format_exc(limit=8))
            return False
        rec[phase].append({"stage": stage, "seconds": round(res.seconds, 3), "wall_s": round(time.perf_counter() - t0, 3),
                           "cpu_seconds": round(tree_cpu_seconds() - cpu0, 2), "rows_in": res.rows_in,
                           "rows_out": res.rows_out, "outputs": res.outputs, "memory": mem.as_dict()})
        return True

    cache = RunCache()
    try:
        def one(stage, as_of, window_days, **extra):
            return run_pipeline(settings, spark, lake, stage, as_of, window_days, cache=cache, **extra)[0][1]

        ok = True
        if 0 < args.clean_window_days < args.days:
            ok = timed("window", "clean", lambda: clean_in_windows(
                lambda st, sp, lk, stage, a, w: one(stage, a, w), settings, spark, lake, start, history_last,
                args.clean_window_days))
        else:
            ok = timed("window", "clean", lambda: one("clean", history_last, args.days))
        ok = ok and timed("window", "shapes", lambda: one("shapes", history_last, args.days))
        for stage in ("clean", "shapes"):
            if not ok:
                break
            if incremental:
                ok = timed("daily", stage, lambda: one(stage, new_day, args.days, incremental=True))
            else:
                ok = timed("daily", stage, lambda: one(stage, new_day, 1))
    finally:
        cache.release()
    window_s = sum(s["seconds"] for s in rec["window"] if "error" not in s)
    daily_s = sum(s["seconds"] for s in rec["daily"] if "error" not in s)
    complete = len(rec["window"]) == len(rec["daily"]) == 2 and not any("error" in s for s in rec["window"] + rec["daily"])
    rec["window_seconds"], rec["daily_seconds"] = round(window_s, 3), round(daily_s, 3)
    rec["complete"] = complete
    if complete and window_s:
        rec["daily_to_window"] = round(daily_s / window_s, 4)
    rec["memory"] = peak_of([s["memory"] for s in rec["window"] + rec["daily"]])
    rec["loadavg_after"] = loadavg()
    return rec


# ------------------------------------------------------------------ report

def memory_line(label: str, m: dict, bar: bool = False) -> str:
    verdict = "PASS" if m["peak_root_jvm_mb"] <= MEMORY_BAR_MB else "FAIL"
    return (f"peak memory during {label}: driver+JVM {m['peak_root_jvm_mb']:,.0f} MB, "
            f"{DRIVER_HEAP_MB - m['peak_root_jvm_mb']:,.0f} MB under the {DRIVER_HEAP_MB:,} MB driver heap"
            + (f" (bar <= {MEMORY_BAR_MB:,} MB: {verdict})" if bar else "") + f"; driver {m['peak_root_mb']:,.0f} MB, "
            f"JVM {m['peak_jvm_mb']:,.0f} MB; with the Python workers (USS) {m['peak_total_mb']:,.0f} MB "
            f"[{m['samples']} samples every {m['interval_s']} s]")


def stage_rows(stages: list[dict]) -> list[list]:
    rows = []
    for s in stages:
        if "error" in s:
            rows.append([s["stage"], fmt_s(s["seconds"]), "", "", "FAILED", ""])
            continue
        rate = f"{s['rows_in'] / s['seconds']:,.0f}" if s["rows_in"] and s["seconds"] else "-"
        rows.append([s["stage"], fmt_s(s["seconds"]), fmt_int(s["rows_in"]), rate, fmt_int(s["rows_out"]),
                     fmt_s(s.get("cpu_seconds"))])
    return rows


def render_main_job(rec: dict) -> list[str]:
    from gridpersona.console import render_table

    lines = [f"\n== main job: `run all` on the default lake ({fmt_int(rec.get('meters'))} meters x {rec.get('days')} days, "
             f"{rec.get('lake_source', '-')}), as of {rec.get('as_of', '-')}, window {rec.get('window_days', '-')} days, "
             f"own Spark session (start {fmt_s(rec.get('spark_session_s'))} s, apart), lake {rec['lake']}"]
    if rec.get("stages"):
        rows = stage_rows(rec["stages"])
        rows.append(["run all", fmt_s(rec.get("seconds")), "", "", "", fmt_s(rec.get("cpu_seconds"))])
        lines.append(render_table(["stage", "seconds", "rows in", "rows/s", "rows out", "CPU s"], rows,
                                  align_right=[1, 2, 3, 4, 5]))
    if "error" in rec:
        lines.append(f"  main job FAILED: {rec['error']}")
    if "clean_to_shapes" in rec:
        lines.append(f"clean / shapes = {rec['clean_to_shapes']:.2f} (bar <= {CLEAN_TO_SHAPES_BAR:g})")
    if rec.get("memory", {}).get("samples"):
        lines.append(memory_line("the main job", rec["memory"]))
    return lines


def render_daily(rec: dict) -> list[str]:
    from gridpersona.console import render_table

    lines = [f"\n== daily run: {rec['meters']:,} meters, {rec['history_days']}-day window as of {rec['window_as_of']}, "
             f"then one new day {rec['daily_as_of']}: {rec['mode']}; lake {rec['lake']}"]
    rows = ([["window " + r[0], *r[1:]] for r in stage_rows(rec["window"])]
            + [["daily " + r[0], *r[1:]] for r in stage_rows(rec["daily"])])
    rows.append(["window clean + shapes", fmt_s(rec["window_seconds"]), "", "", "", ""])
    rows.append(["daily clean + shapes", fmt_s(rec["daily_seconds"]), "", "", "", ""])
    lines.append(render_table(["step", "seconds", "rows in", "rows/s", "rows out", "CPU s"], rows,
                              align_right=[1, 2, 3, 4, 5]))
    if "daily_to_window" in rec:
        lines.append(f"daily / window = {rec['daily_to_window']:.3f} (bar <= {DAILY_BAR:g})")
    else:
        lines.append("daily / window: not measured (a step failed)")
    return lines


def growth(report: dict, name: str) -> tuple[float, float] | None:
    """(seconds at the last scale / seconds at the first, scale factor) for a stage, 'segment' or 'bar span'."""
    scales = report.get("scales") or []
    if len(scales) < 2:
        return None

    def seconds(rec):
        done = {s["stage"]: s["seconds"] for s in rec["stages"] if "error" not in s}
        parts = SEGMENT_STAGES if name == "segment" else (name,)
        return sum(done[p] for p in parts) if all(p in done for p in parts) else None

    a, b = seconds(scales[0]), seconds(scales[-1])
    if not a or b is None:
        return None
    return b / a, scales[-1]["scale"] / scales[0]["scale"]


def summary_rows(report: dict) -> list[list]:
    """[bar, measured, bar, met?] for every bar of issue 14 that this run measured (n/a otherwise)."""
    rows = []

    def add(name, value, shown, bar, ok):
        rows.append([name, shown if value is not None else "n/a (not run)", bar,
                     "-" if value is None else ("yes" if ok else "NO")])

    main = report.get("main_job") or {}
    secs = main.get("seconds") if main.get("stages") and "error" not in main else None
    add("`run all` on the default lake, seconds", secs, fmt_s(secs), f"<= {MAIN_JOB_BAR_S:g} s",
        secs is not None and secs <= MAIN_JOB_BAR_S)
    cts = main.get("clean_to_shapes")
    add("main job clean / shapes", cts, f"{cts:.2f}" if cts is not None else "", f"<= {CLEAN_TO_SHAPES_BAR:g}",
        cts is not None and cts <= CLEAN_TO_SHAPES_BAR)
    daily = report.get("daily") or {}
    ratio = daily.get("daily_to_window")
    add(f"daily / window clean + shapes ({daily.get('mode', '-')})", ratio,
        f"{ratio:.3f}" if ratio is not None else "", f"<= {DAILY_BAR:g}", ratio is not None and ratio <= DAILY_BAR)
    for name in ("clean", "shapes", "segment"):
        g = growth(report, name)
        add(f"{name} growth {report['scales'][-1]['scale']}x/{report['scales'][0]['scale']}x meters" if g else
            f"{name} growth with the meters", g and g[0], f"{g[0]:.2f}" if g else "",
            f"<= {g[1]:g} (linear)" if g else "<= linear", g is not None and g[0] <= g[1])
    first = (report.get("scales") or [{}])[0]
    r = first.get("ratio") if first.get("bar_span", {}).get("complete") else None
    add("shapes + segment / DuckDB reference (scale 1)", r, f"{r:.2f}x" if r is not None else "",
        f"<= {BAR_FACTOR:g}x", r is not None and r <= BAR_FACTOR)
    m = first.get("bar_span", {}).get("memory") if first else None
    peak = m["peak_root_jvm_mb"] if m and m.get("samples") else None
    add("peak driver + JVM MB, shapes + segment (scale 1)", peak,
        f"{peak:,.0f} ({DRIVER_HEAP_MB - peak:,.0f} under {DRIVER_HEAP_MB:,})" if peak is not None else "",
        f"<= {MEMORY_BAR_MB:,}", peak is not None and peak <= MEMORY_BAR_MB)
    for rec in report.get("scales") or []:
        for stage, v in rec.get("per_core", {}).items():
            rows.append([f"{stage} {v['unit']}/s per core, scale {rec['scale']}x ({rec['cores']} cores)",
                         f"{v['rows_per_s_per_core']:,}", "(for the cluster arithmetic)", ""])
    return rows


def render(report: dict) -> str:
    from gridpersona.console import render_table

    lines = []
    if report.get("main_job"):
        lines += render_main_job(report["main_job"])
    for rec in report.get("scales", []):
        lines.append(f"\n== {rec['meters']:,} meters x {rec['days']} days (scale {rec['scale']}x), lake {rec['lake']}")
        rows = stage_rows(rec["stages"])
        bar = rec["bar_span"]
        rows.append(["bar span (" + "+".join(bar["stages"]) + ")", fmt_s(bar["seconds"]), fmt_int(bar["rows_in"]),
                     f"{bar['rows_in'] / bar['seconds']:,.0f}" if bar["rows_in"] and bar["seconds"] else "-", "",
                     fmt_s(bar.get("cpu_seconds"))])
        rows.append(["all stages", fmt_s(sum(s["seconds"] for s in rec["stages"])), "", "", "",
                     fmt_s(sum(s.get("cpu_seconds", 0) for s in rec["stages"]))])
        rows.append(["whole run (session start + warm-up + all stages)",
                     fmt_s(report["spark_session_s"] + report["spark_warmup_s"] + sum(s["seconds"] for s in rec["stages"])),
                     "", "", "", ""])
        lines.append(render_table(["stage", "seconds", "rows in", "rows/s", "rows out", "CPU s"], rows,
                                  align_right=[1, 2, 3, 4, 5]))
        for s in rec["stages"]:
            for note in s.get("notes", []):
                if note.startswith("timings"):
                    lines.append(f"  {s['stage']} {note}")
            if "error" in s:
                lines.append(f"  {s['stage']} FAILED: {s['error']}")
        if not bar["complete"]:
            lines.append(f"  bar span incomplete: ran {bar['stages']} of {list(BAR_STAGES)}")
        refs = rec.get("reference", {})
        if refs:
            rrows = []
            for rule, r in refs.items():
                if "error" in r:
                    rrows.append([rule, "FAILED " + r["error"], "", "", "", "", "", "", "", ""])
                    continue
                acc = r.get("accuracy") or {}
                rrows.append([rule + (" (ratio)" if rule == rec["reference_rule"] else ""), fmt_s(r["seconds"]),
                              fmt_s(r.get("cpu_seconds")),
                              fmt_s(r["import_seconds"]), f"{r['peak_rss_mb']:,.0f}", r["k"], f"{r['silhouette']:.3f}",
                              acc.get("ari_vs_archetype", "-"), acc.get("ari_at_true_k", "-"),
                              f"{acc.get('vacant_precision', '-')}/{acc.get('vacant_recall', '-')}"])
            lines.append("\nreference (DuckDB + scikit-learn, child process):")
            lines.append(render_table(["typical shape", "seconds", "CPU s", "imports s", "peak RSS MB", "k", "silhouette",
                                       "ARI vs truth", "ARI at true k", "vacant P/R"], rrows,
                                      align_right=[1, 2, 3, 4, 5, 6, 7, 8]))
            steps = refs[rec["reference_rule"]].get("steps")
            if steps:
                lines.append("  reference steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()))
        if "ratio" in rec:
            verdict = "PASS" if rec["ratio"] <= BAR_FACTOR and bar["complete"] else "FAIL"
            if not bar["complete"]:
                verdict = "n/a (bar span incomplete)"
            lines.append(f"\nbar: Spark {bar['seconds']:.1f} s / reference ({rec['reference_rule']}) "
                         f"{refs[rec['reference_rule']]['seconds']:.1f} s = {rec['ratio']:.2f}x "
                         f"(bar <= {BAR_FACTOR:.0f}x): {verdict}; CPU seconds {bar['cpu_seconds']:.1f} / "
                         f"{refs[rec['reference_rule']]['cpu_seconds']:.1f} = {rec['cpu_ratio']:.2f}x")
        for label, m in (("the bar span", bar["memory"]), ("all Spark stages", rec["memory"])):
            if m["samples"]:
                lines.append(memory_line(label, m, bar=label == "the bar span" and rec is report["scales"][0]))
        if rec.get("per_core"):
            lines.append(f"per core ({rec['cores']} cores): " + "; ".join(
                f"{st} {v['rows_per_s_per_core']:,} {v['unit']}/s/core" for st, v in rec["per_core"].items()))
        acc = rec.get("spark_segments_accuracy")
        if acc:
            lines.append("Spark segments: " + ", ".join(f"{k} {v}" for k, v in acc.items()))
        diag = rec.get("diagnostics")
        if diag:
            lines.append("diagnostics (outside the bar span): " + json.dumps(diag))
        lines.append(f"load average before {rec['loadavg_before']}, after the stages "
                     f"{rec['stages'][-1].get('loadavg_after') if rec['stages'] else '-'}")
    if len(report.get("scales", [])) > 1:
        base = report["scales"][0]
        lines.append(f"\n== scaling ({', '.join(str(r['scale']) + 'x' for r in report['scales'])} the meters, same days)")
        rows = []

        def seconds_of(rec, name):
            if name == "bar span":
                return rec["bar_span"]["seconds"] if rec["bar_span"]["stages"] else None
            if name.startswith("reference"):
                r = rec.get("reference", {}).get(rec.get("reference_rule"), {})
                return r.get("seconds")
            s = next((s for s in rec["stages"] if s["stage"] == name and "error" not in s), None)
            return s["seconds"] if s else None

        names = [s["stage"] for s in base["stages"] if "error" not in s] + ["bar span", "reference"]
        for other in report["scales"][1:]:
            factor = other["scale"] / base["scale"]
            for name in names:
                t1, tn = seconds_of(base, name), seconds_of(other, name)
                if t1 is None or tn is None:
                    rows.append([name, fmt_s(t1), fmt_s(tn), "-", "-"])
                    continue
                growth = tn / t1
                rows.append([name, fmt_s(t1), fmt_s(tn), f"{growth:.2f}",
                             f"yes (<= {factor:g})" if growth <= factor else f"NO (> {factor:g})"])
        lines.append(render_table(["step", f"seconds {base['scale']}x", "seconds " + "/".join(
            f"{r['scale']}x" for r in report["scales"][1:]), "growth", "<= linear"], rows, align_right=[1, 2, 3]))
    if report.get("daily"):
        lines += render_daily(report["daily"])
    if "spark_session_s" in report:
        lines.append(f"\nSpark session start {report['spark_session_s']:.1f} s + first-job warm-up "
                     f"{report['spark_warmup_s']:.1f} s (reported apart, not in any stage)")
    for note in report["notes"]:
        lines.append("note: " + note)
    lines.append("\n== summary: every bar of issue 14")
    lines.append(render_table(["row", "measured", "bar", "met?"], summary_rows(report), align_right=[1]))
    lines.append(f"results: {report['out']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--meters", type=int, default=20000, help="meters at scale 1 (default 20000)")
    p.add_argument("--days", type=int, default=30, help="days of 15-minute data (default 30)")
    p.add_argument("--scale", default="1", help="comma-separated scale factors of the meter count, e.g. 1,3")
    p.add_argument("--lake", default="/tmp/benchlake", help="parent folder of the benchmark lakes")
    p.add_argument("--rows", default=",".join(ROWS),
                   help="rows to measure: main (`run all` on the default lake), daily (one new day after --days days), "
                        "scale (the stages at each --scale); default all three")
    p.add_argument("--main-lake", help="an existing default lake (as `gridpersona demo` makes it) for the main-job "
                                       "row; default: <lake>/default_m<meters>_d<days> of the config, generated if absent")
    p.add_argument("--stages", default=",".join(ALL_STAGES), help="stages to run, in pipeline order")
    p.add_argument("--clean-window-days", type=int, default=0,
                   help="run clean in windows of at most N days (0: one window); 10 fits 60,000 meters in a 4 GB driver")
    p.add_argument("--skip-generate", action="store_true", help="use the lakes already there (fail if absent)")
    p.add_argument("--out", help="result JSON (default bench/results/bench_<meters>x<days>_<time>.json)")
    p.add_argument("--env", default="local", help="config environment (default local)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, as for gridpersona --set (repeatable)")
    p.add_argument("--keep-outputs", action="store_true",
                   help="keep the tables the stages write (default: drop them first, so every run creates them anew)")
    p.add_argument("--no-reference", action="store_true", help="skip the DuckDB + scikit-learn reference")
    p.add_argument("--one-rule", action="store_true", help="run the reference with the configured typical-shape rule only")
    p.add_argument("--no-diagnostics", action="store_true", help="skip the shapes/typical-shape diagnostics")
    p.add_argument("--diagnostics-every-scale", action="store_true", help="diagnostics at every scale, not only the first")
    args = p.parse_args(argv)
    args.scales = [int(s) for s in args.scale.split(",") if s.strip()]
    unknown = [s for s in args.stages.split(",") if s and s not in ALL_STAGES]
    if unknown:
        p.error(f"unknown stage(s) {unknown}; stages: {', '.join(ALL_STAGES)}")
    args.stage_list = [s for s in ALL_STAGES if s in args.stages.split(",")]
    bad_rows = [r for r in args.rows.split(",") if r and r not in ROWS]
    if bad_rows:
        p.error(f"unknown row(s) {bad_rows}; rows: {', '.join(ROWS)}")
    args.row_list = [r for r in ROWS if r in args.rows.split(",")]
    return args


def clean_in_windows(run_stage_fn, settings, spark, lake, first, last, window_days: int) -> SimpleNamespace:
    """The clean stage over [first, last] in consecutive windows of at most ``window_days`` days.

    One window of 175M raw readings (60,000 meters x 30 days) runs out of the local 4 GB
    driver heap; windows of 10 days do not. Seconds, rows and outputs are summed.
    """
    total = SimpleNamespace(seconds=0.0, rows_in=0, rows_out=0, outputs={}, notes=[])
    start = first
    while start <= last:
        end = min(start + dt.timedelta(days=window_days - 1), last)
        res = run_stage_fn(settings, spark, lake, "clean", end, (end - start).days + 1)
        total.seconds += res.seconds
        total.rows_in += res.rows_in or 0
        total.rows_out += res.rows_out or 0
        for table, rows in res.outputs.items():
            total.outputs[table] = total.outputs.get(table, 0) + rows
        total.notes += [f"window {start}..{end}: {note}" for note in res.notes]
        start = end + dt.timedelta(days=1)
    return total


def main(argv=None) -> int:
    args = parse_args(argv)
    from gridpersona.console import setup_logging

    setup_logging(False)
    stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    out = args.out or os.path.join(HERE, "results", f"bench_{args.meters}x{args.days}_{stamp}.json")
    result_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(result_dir, exist_ok=True)
    report = {"started": stamp, "argv": sys.argv[1:], "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                                "loadavg_start": loadavg()},
              "meters": args.meters, "days": args.days, "scale_basis": "meters (days fixed)", "rows": args.row_list,
              "notes": [], "out": out, "lakes": {}}
    settings_for(args, args.lake)  # a bad --set fails here, before any work

    def save():
        with open(out, "w") as fh:
            json.dump(report, fh, indent=2, default=str)

    if args.row_list == ["main"]:  # alone, or the child process of a full run
        report["main_job"] = run_main_job(args)
        save()
        print(render(report))
        return 1 if "error" in report["main_job"] else 0
    if "main" in args.row_list:  # first, before this process's JVM exists: the machine is the child's
        report["main_job"] = main_job_in_child(args, result_dir, stamp)
        save()

    roots = {s: os.path.join(args.lake, f"m{args.meters * s}_d{args.days}") for s in args.scales}
    if "scale" in args.row_list:
        for s, root in roots.items():
            report["lakes"][root] = ensure_lake(args, root, args.meters * s)
    if "daily" in args.row_list:
        daily_root = os.path.join(args.lake, f"m{args.meters}_d{args.days + 1}")
        report["lakes"][daily_root] = ensure_lake(args, daily_root, args.meters, args.days + 1)

    runnable, skipped, run_stage_fn, notes = stage_runner(args.stage_list)
    report["notes"] += notes
    report["stages_run"], report["stages_skipped"] = runnable, skipped

    from gridpersona.lake import Lake

    report["host"]["loadavg_before_session"] = loadavg()
    t0 = time.perf_counter()
    spark = Lake(settings_for(args, roots[args.scales[0]])).spark
    report["spark_session_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    spark.range(1_000_000).selectExpr("sum(id)").collect()
    report["spark_warmup_s"] = round(time.perf_counter() - t0, 2)
    report["spark"] = {"version": spark.version, "master": spark.sparkContext.master,
                       "driver_memory": spark.conf.get("spark.driver.memory", None),
                       "shuffle_partitions": spark.conf.get("spark.sql.shuffle.partitions"),
                       "cores": cores_used(spark)}

    report["scales"] = []
    try:
        if "scale" in args.row_list:
            for s in args.scales:
                report["scales"].append(run_scale(args, spark, s, roots[s], runnable, run_stage_fn, result_dir))
                save()  # after every scale: a crash later keeps what was measured
        if "daily" in args.row_list:
            # Last: its window run re-cleans a lake of the scale-1 size; the scale rows keep their cold 1x figures.
            report["daily"] = run_daily(args, spark, result_dir)
    finally:
        jvm = next((p for p in __import__("psutil").Process().children(recursive=True)
                    if p.name().lower().startswith("java")), None)
        report["jvm_vmhwm_mb"] = round(high_water_mb(jvm.pid), 1) if jvm and high_water_mb(jvm.pid) else None
        report["driver_vmhwm_mb"] = round(high_water_mb(os.getpid()) or 0, 1)
        report["host"]["loadavg_end"] = loadavg()
        save()
        spark.stop()
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
