"""Benchmark: synthetic lake -> pipeline stages in one Spark session, against a DuckDB + scikit-learn reference.

    .venv/bin/python bench/run.py --meters 20000 --days 30 [--scale 1,3] [--lake /tmp/benchlake]
        [--stages clean,shapes,...] [--skip-generate] [--out bench/results/NAME.json]

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
import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
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
BAR_FACTOR = 2.0
MEMORY_BAR_MB = 4096
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


def ensure_lake(args, root: str, meters: int) -> dict:
    """Generate the lake at ``root`` unless an identical one is there; returns its marker plus how it was obtained."""
    settings = settings_for(args, root)
    want = lake_identity(settings, meters, args.days)
    have = read_marker(root)
    same = have is not None and all(have.get(k) == v for k, v in want.items())
    if args.skip_generate:
        if not same:
            raise SystemExit(f"--skip-generate: no benchmark lake of {meters} meters x {args.days} days at {root} "
                             f"({MARKER} missing or different); run without --skip-generate")
        return {**have, "generated": False}
    if same:
        log.info("lake %s: present (%d meters x %d days), not regenerated", root, meters, args.days)
        return {**have, "generated": False}
    log.info("lake %s: generating %d meters x %d days ...", root, meters, args.days)
    cmd = [sys.executable, os.path.join(HERE, "genlake.py"), "--lake-root", root, "--meters", str(meters),
           "--days", str(args.days), "--env", args.env, *[a for o in args.overrides for a in ("--set", o)]]
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


# ------------------------------------------------------------------ report

def render(report: dict) -> str:
    from gridpersona.console import render_table

    lines = []
    for rec in report["scales"]:
        lines.append(f"\n== {rec['meters']:,} meters x {rec['days']} days (scale {rec['scale']}x), lake {rec['lake']}")
        rows = []
        for s in rec["stages"]:
            if "error" in s:
                rows.append([s["stage"], fmt_s(s["seconds"]), "", "", "FAILED", ""])
                continue
            rate = f"{s['rows_in'] / s['seconds']:,.0f}" if s["rows_in"] and s["seconds"] else "-"
            rows.append([s["stage"], fmt_s(s["seconds"]), fmt_int(s["rows_in"]), rate, fmt_int(s["rows_out"]),
                         fmt_s(s.get("cpu_seconds"))])
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
            if not m["samples"]:
                continue
            mem_verdict = "PASS" if m["peak_root_jvm_mb"] < MEMORY_BAR_MB else "FAIL"
            lines.append(f"peak memory during {label}: driver+JVM {m['peak_root_jvm_mb']:,.0f} MB "
                         f"(bar < {MEMORY_BAR_MB:,} MB: {mem_verdict}); driver {m['peak_root_mb']:,.0f} MB, "
                         f"JVM {m['peak_jvm_mb']:,.0f} MB; with the Python workers (USS) {m['peak_total_mb']:,.0f} MB "
                         f"[{m['samples']} samples every {m['interval_s']} s]")
        acc = rec.get("spark_segments_accuracy")
        if acc:
            lines.append("Spark segments: " + ", ".join(f"{k} {v}" for k, v in acc.items()))
        diag = rec.get("diagnostics")
        if diag:
            lines.append("diagnostics (outside the bar span): " + json.dumps(diag))
        lines.append(f"load average before {rec['loadavg_before']}, after the stages "
                     f"{rec['stages'][-1].get('loadavg_after') if rec['stages'] else '-'}")
    if len(report["scales"]) > 1:
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
    lines.append(f"\nSpark session start {report['spark_session_s']:.1f} s + first-job warm-up "
                 f"{report['spark_warmup_s']:.1f} s (reported apart, not in any stage)")
    for note in report["notes"]:
        lines.append("note: " + note)
    lines.append(f"results: {report['out']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--meters", type=int, default=20000, help="meters at scale 1 (default 20000)")
    p.add_argument("--days", type=int, default=30, help="days of 15-minute data (default 30)")
    p.add_argument("--scale", default="1", help="comma-separated scale factors of the meter count, e.g. 1,3")
    p.add_argument("--lake", default="/tmp/benchlake", help="parent folder of the benchmark lakes")
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
              "meters": args.meters, "days": args.days, "scale_basis": "meters (days fixed)",
              "notes": [], "out": out, "lakes": {}}
    settings_for(args, args.lake)  # a bad --set fails here, before any work

    roots = {s: os.path.join(args.lake, f"m{args.meters * s}_d{args.days}") for s in args.scales}
    for s, root in roots.items():
        report["lakes"][root] = ensure_lake(args, root, args.meters * s)

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
                       "shuffle_partitions": spark.conf.get("spark.sql.shuffle.partitions")}

    report["scales"] = []
    try:
        for s in args.scales:
            report["scales"].append(run_scale(args, spark, s, roots[s], runnable, run_stage_fn, result_dir))
            with open(out, "w") as fh:  # after every scale: a crash later keeps what was measured
                json.dump(report, fh, indent=2, default=str)
    finally:
        jvm = next((p for p in __import__("psutil").Process().children(recursive=True)
                    if p.name().lower().startswith("java")), None)
        report["jvm_vmhwm_mb"] = round(high_water_mb(jvm.pid), 1) if jvm and high_water_mb(jvm.pid) else None
        report["driver_vmhwm_mb"] = round(high_water_mb(os.getpid()) or 0, 1)
        report["host"]["loadavg_end"] = loadavg()
        with open(out, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
        spark.stop()
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
