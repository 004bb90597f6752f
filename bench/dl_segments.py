"""DL (CNN + GRU) vs KMeans segments against the planted archetypes: full data, 7-day meters, noise.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/python bench/dl_segments.py                 # generate the default lake
    PYSPARK_PYTHON=.venv/bin/python .venv/bin/python bench/dl_segments.py --lake /tmp/s13/dl/lake --skip-train

Without ``--lake`` it generates the configured default lake (``generate.meters`` x ``generate.days``:
3,300 x 90) under ``--lake-root`` (``gridpersona generate`` + ``run clean/shapes``). Unless
``--skip-train``, it then runs segment-train and segment-assign with ``segment.dl.second_opinion=true``
(``--set segment.dl.KEY=VALUE`` changes the DL training). Then, with the version's saved models (no
retraining), it measures the adjusted Rand index against ``truth.meters.archetype`` of

- KMeans (``segment_id``) and DL (``dl_segment_id``) on the full window, as segment-assign wrote them;
- each meter reduced to its last 7 days: KMeans assigns the 7-day typical shape to the trained centroids,
  DL predicts from the 7 days (predict_batch_udf);
- both again with multiplicative noise on every slot kWh (factor max(0, 1 + sigma z), z standard normal
  from a hash of meter, date and slot: deterministic), ``--noise`` sigmas.

Meters scored: those both models assign in the variant (a meter needs a complete day in it) that have a
planted archetype. Prints a markdown table and writes it with the figures to
``bench/results/dl_segments.md`` / ``.json`` (``--out`` prefix).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def noisy(daily, sigma: float, seed: int):
    """``daily`` with every slot kWh times max(0, 1 + sigma z) (z ~ N(0, 1) from hashes: the same draw
    whatever the partitioning), ``daily_kwh`` and ``shape`` recomputed."""
    from pyspark.sql import functions as F

    if sigma <= 0:
        return daily
    scale = float(2 ** 31)

    def uniform(i, salt):
        h = F.pmod(F.xxhash64(F.col("meter_id"), F.col("date"), i, F.lit(seed + salt)), F.lit(2 ** 31))
        return (h.cast("double") + 0.5) / F.lit(scale)

    def factor(v, i):
        z = F.sqrt(F.lit(-2.0) * F.log(uniform(i, 0))) * F.cos(F.lit(2 * math.pi) * uniform(i, 1))
        return v * F.greatest(F.lit(0.0), F.lit(1.0) + F.lit(float(sigma)) * z)

    out = daily.withColumn("slot_kwh", F.transform("slot_kwh", factor))
    out = out.withColumn("daily_kwh", F.aggregate("slot_kwh", F.lit(0.0), lambda a, x: a + x))
    n = F.size("slot_kwh").cast("double")
    return out.withColumn("shape", F.when(F.col("daily_kwh") > 0,
                                          F.transform("slot_kwh", lambda x: x / F.col("daily_kwh")))
                          .otherwise(F.array_repeat(F.lit(1.0) / n, F.size("slot_kwh"))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lake", help="an existing lake (clean and shapes done); default: generate one")
    p.add_argument("--lake-root", default="/tmp/gridpersona_dl_bench/lake", help="where to generate the lake")
    p.add_argument("--env", default="local")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--as-of", type=dt.date.fromisoformat, help="default: the lake's last day")
    p.add_argument("--skip-train", action="store_true", help="use the version's models already trained")
    p.add_argument("--short-days", type=int, default=7)
    p.add_argument("--noise", default="0.3", help="comma-separated multiplicative noise sigmas")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "dl_segments"))
    args = p.parse_args(argv)

    from pyspark.sql import functions as F

    from gridpersona.config import load_settings
    from gridpersona.lake import Lake
    from gridpersona.segment.dl import day_sequences, predict_udf
    from gridpersona.segment.features import flag_vacant, typical_shapes
    from gridpersona.session import build_spark
    from gridpersona.stages.pipeline import run_pipeline
    from gridpersona.stages.segment_assign import load_model
    from gridpersona.stages.segment_common import latest_model_version, model_segments, slots_per_day
    from gridpersona.stages.segment_dl import dl_dir
    from gridpersona.synthetic.truth_checks import adjusted_rand_index

    root = args.lake or args.lake_root
    settings = load_settings(args.env, [*args.overrides, f"lake.root={root}", "segment.dl.second_opinion=true"])
    spark = build_spark(settings, app_name="bench-dl-segments")
    lake = Lake(settings, spark)
    started = time.perf_counter()
    timings = {}
    if not args.lake:
        from gridpersona.synthetic.generate import generate_lake

        t = time.perf_counter()
        generate_lake(settings, lake)
        timings["generate"] = time.perf_counter() - t
    days_total = settings.pipeline.window_days
    as_of = args.as_of or (settings.generate.start + dt.timedelta(days=settings.generate.days - 1))
    stages = [] if args.lake else ["clean", "shapes"]
    stages += [] if args.skip_train else ["segment-train", "segment-assign"]
    notes = {}
    for stage in stages:
        t = time.perf_counter()
        for name, result in run_pipeline(settings, spark, lake, stage, as_of):
            notes[name] = result.notes
        timings[stage] = time.perf_counter() - t
        print(f"{stage}: {timings[stage]:.1f}s", file=sys.stderr, flush=True)

    version = latest_model_version(lake, as_of)
    segments = model_segments(lake, version)
    head = segments[0]
    model_root = os.path.join(lake.root, head["model_path"])
    kmeans = load_model(lake, segments)
    folder = dl_dir(model_root)
    predict = predict_udf(folder)
    with open(os.path.join(folder, "meta.json")) as fh:
        meta = json.load(fh)
    seg = settings.segment
    slots = slots_per_day(settings)
    truth = lake.read("truth.meters").select("meter_id", "archetype")
    first = as_of - dt.timedelta(days=days_total - 1)
    daily = (lake.read("silver.daily_load_shape").filter(F.col("date").between(first, as_of))
             .select("meter_id", "date", "slot_kwh", "daily_kwh", "shape", "completeness", "is_weekend"))

    def score(frame, kcol: str, dcol: str) -> dict:
        rows = (frame.join(truth, "meter_id").filter(F.col(kcol).isNotNull() & F.col(dcol).isNotNull())
                .select("archetype", kcol, dcol).collect())  # one row per meter: bounded
        import numpy as np

        arch = np.array([r["archetype"] for r in rows])
        return {"meters": len(rows),
                "kmeans": adjusted_rand_index(np.array([r[kcol] for r in rows]), arch),
                "dl": adjusted_rand_index(np.array([r[dcol] for r in rows]), arch)}

    def reassign(days_frame) -> dict:
        feats = typical_shapes(days_frame, slots=slots, method=head["typical_shape"],
                               min_completeness=seg.min_completeness)
        km = kmeans.transform(flag_vacant(feats, seg.vacant_max_daily_kwh)).select("meter_id", "segment_id")
        seqs = day_sequences(days_frame, last_day=as_of, days=int(meta["days"]), slots=slots,
                             min_completeness=seg.min_completeness)
        dl = seqs.select("meter_id", predict("x").alias("p")).select(
            "meter_id", F.col("p.dl_segment_id").alias("dl_segment_id"))
        return score(km.join(dl, "meter_id"), "segment_id", "dl_segment_id")

    rows = []
    t = time.perf_counter()
    written = lake.read("gold.customer_segments").filter(F.col("as_of") == F.lit(as_of))
    rows.append({"variant": f"full window ({days_total} days), as segment-assign wrote it",
                 **score(written, "segment_id", "dl_segment_id")})
    short = daily.filter(F.col("date") > F.lit(as_of - dt.timedelta(days=args.short_days)))
    rows.append({"variant": f"last {args.short_days} days only", **reassign(short)})
    for sigma in [float(s) for s in args.noise.split(",") if s.strip()]:
        rows.append({"variant": f"full window, noise sigma {sigma:g} per slot", **reassign(noisy(daily, sigma, 17))})
        rows.append({"variant": f"last {args.short_days} days, noise sigma {sigma:g} per slot",
                     **reassign(noisy(short, sigma, 17))})
    timings["measure"] = time.perf_counter() - t

    lines = [f"DL vs KMeans, ARI against truth.meters.archetype; lake {root}, as-of {as_of}, model {version} "
             f"(DL: {meta['days']} days, {meta['epochs']} epochs, {meta['labels']} labels, lr {meta['learning_rate']}, "
             f"min crop {meta['min_crop_days']} days, seed {meta['seed']})", "",
             "| data | meters | KMeans ARI | DL ARI | DL - KMeans |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['meters']:,} | {r['kmeans']:.4f} | {r['dl']:.4f} | "
                     f"{r['dl'] - r['kmeans']:+.4f} |")
    full, short_row = rows[0], rows[1]
    bar_full = full["dl"] >= full["kmeans"] - 0.05
    bar_short = short_row["dl"] > short_row["kmeans"]
    lines += ["", f"bar: DL within 0.05 of KMeans on full data: {'PASS' if bar_full else 'FAIL'}; "
                  f"DL better than KMeans on {args.short_days}-day meters: {'PASS' if bar_short else 'FAIL'}",
              f"DL training: {meta['train_meters']:,} meters, {meta['train_seconds']}s, agreement with its labels "
              f"{meta['train_accuracy']:.3f} (all days) / {meta['train_accuracy_last7']:.3f} (last 7 days)",
              "timings " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".md", "w") as fh:
        fh.write(text + "\n")
    with open(args.out + ".json", "w") as fh:
        json.dump({"lake": root, "as_of": str(as_of), "model_version": version, "rows": rows, "dl_meta": meta,
                   "bar_full": bar_full, "bar_short": bar_short, "timings": timings, "stage_notes": notes,
                   "seconds": time.perf_counter() - started}, fh, indent=1, default=str)
    return 0 if bar_full and bar_short else 1


if __name__ == "__main__":
    sys.exit(main())
