"""The DL segment model in segment-train and segment-assign (``segment.method: dl`` or
``segment.dl.second_opinion``); the model itself is :mod:`gridpersona.segment.dl` (imported only when on,
so the default pipeline runs without torch).

Storage
    Beside the KMeans model of the same version: ``<lake root>/models/segment/v<version>/dl/`` holds
    ``model.pt`` (state dict) and ``meta.json`` (segment ids of the classes, days, slots, training
    parameters and figures). The training data (one parquet row per meter: ``meter_id``, ``label``, ``x``)
    is written by Spark to ``dl/train_data/`` for the TorchDistributor's processes to read, and removed
    once the model is saved. A rerun of segment-train for the as-of replaces both; a rerun with the DL
    model off removes the folder, so no DL model outlives the KMeans ids it was trained on.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import shutil
import time

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from gridpersona.config import ConfigError, Settings
from gridpersona.contracts.silver import DAILY_LOAD_SHAPE
from gridpersona.stages.runner import StageContext
from gridpersona.stages.segment_common import slots_per_day

TRUTH_METERS = "truth.meters"


def dl_enabled(settings: Settings) -> bool:
    """True when the DL model trains and assigns: ``segment.method: dl`` or ``segment.dl.second_opinion``."""
    return settings.segment.method == "dl" or settings.segment.dl.second_opinion


def require_torch(settings: Settings) -> None:
    """ConfigError (the CLI's one-line exit 2) when the DL model is on and torch is not installed."""
    if dl_enabled(settings) and importlib.util.find_spec("torch") is None:
        what = "segment.method dl" if settings.segment.method == "dl" else "segment.dl.second_opinion true"
        raise ConfigError(f"{what} needs PyTorch, which is not installed: pip install -e '.[dl]' "
                          f"(or set segment.method kmeans and segment.dl.second_opinion false)")


def dl_dir(model_path: str) -> str:
    """The DL model's folder under a version's model folder (relative or absolute as given)."""
    return os.path.join(model_path, "dl")


def sequence_days(settings: Settings, window_days: int) -> int:
    """Days per meter sequence: ``segment.dl.weeks`` x 7, at most the window."""
    return min(7 * settings.segment.dl.weeks, window_days)


def run_sequences(ctx: StageContext, days: int) -> DataFrame:
    """The as-of's per-meter day sequences (:func:`gridpersona.segment.dl.day_sequences`) over ``days`` days."""
    from gridpersona.segment.dl import day_sequences

    first = ctx.as_of - dt.timedelta(days=days - 1)
    daily = (ctx.lake.read(DAILY_LOAD_SHAPE.name).filter(F.col("date").between(first, ctx.as_of))
             .select("meter_id", "date", "slot_kwh", "daily_kwh", "completeness", "is_weekend"))
    return day_sequences(daily, last_day=ctx.as_of, days=days, slots=slots_per_day(ctx.settings),
                         min_completeness=ctx.settings.segment.min_completeness)


def training_labels(ctx: StageContext, kmeans_segments: DataFrame) -> DataFrame:
    """``meter_id``, ``segment_id`` the DL model learns: the KMeans segments of the window
    (``segment.dl.labels: kmeans``) or truth.meters' archetypes, each mapped to the KMeans segment holding
    most of its meters (``truth``; the smallest id on a tie)."""
    if ctx.settings.segment.dl.labels == "kmeans":
        return kmeans_segments.select("meter_id", "segment_id")
    if not ctx.lake.exists(TRUTH_METERS):
        raise ConfigError(f"segment.dl.labels truth needs {TRUTH_METERS} (a synthetic lake); {ctx.lake.root} has "
                          f"none: set segment.dl.labels kmeans")
    truth = ctx.lake.read(TRUTH_METERS).select("meter_id", "archetype")
    both = kmeans_segments.select("meter_id", "segment_id").join(truth, "meter_id")
    counts = both.groupBy("archetype", "segment_id").count().collect()  # archetypes x segments: bounded
    best: dict[str, tuple[int, int]] = {}
    for r in counts:
        key = (-int(r["count"]), int(r["segment_id"]))
        if r["archetype"] not in best or key < best[r["archetype"]]:
            best[r["archetype"]] = key
    mapping = ctx.spark.createDataFrame([(a, k[1]) for a, k in sorted(best.items())],
                                        "archetype string, segment_id int")
    return truth.join(F.broadcast(mapping), "archetype").select("meter_id", "segment_id")


def train_dl_model(ctx: StageContext, model_root: str, segment_ids: list[int], kmeans_segments: DataFrame) -> list[str]:
    """Train the DL model of this version into ``<model_root>/dl`` through TorchDistributor; returns notes.

    ``segment_ids``: every segment of the KMeans model (the classes, sorted);
    ``kmeans_segments``: the window's meters with their KMeans ``segment_id``.
    """
    from gridpersona.segment.dl import DLParams, train

    s, cfg = ctx.settings, ctx.settings.segment.dl
    t = time.perf_counter()
    days = sequence_days(s, ctx.window_days)
    ids = sorted(int(i) for i in segment_ids)
    classes = ctx.spark.createDataFrame([(sid, k) for k, sid in enumerate(ids)], "segment_id int, label int")
    labelled = (run_sequences(ctx, days).join(training_labels(ctx, kmeans_segments), "meter_id")
                .join(F.broadcast(classes), "segment_id").select("meter_id", "label", "x"))
    folder = dl_dir(model_root)
    data_path = os.path.join(folder, "train_data")
    labelled.orderBy("meter_id").write.mode("overwrite").parquet(data_path)
    prepared = time.perf_counter() - t
    params = DLParams(days=days, slots=slots_per_day(s), segment_ids=tuple(ids), epochs=cfg.epochs,
                      batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, dropout=cfg.dropout,
                      conv_channels=tuple(cfg.conv_channels), hidden=cfg.hidden, min_crop_days=cfg.min_crop_days,
                      seed=int(cfg.seed), labels=cfg.labels)
    try:
        meta = train(cfg.num_processes, data_path, folder, params, local_mode=cfg.local_mode)
    finally:
        shutil.rmtree(data_path, ignore_errors=True)
    return [f"dl model ({cfg.labels} labels): {meta['train_meters']:,} meters x {days} days, {cfg.epochs} epochs "
            f"through TorchDistributor ({cfg.num_processes} process(es)); agreement with its labels "
            f"{meta['train_accuracy']:.1%} on all days, {meta['train_accuracy_last7']:.1%} on the last 7 days; "
            f"data {prepared:.1f}s, training {meta['train_seconds']:.1f}s"]


def assign_dl(ctx: StageContext, model_root: str, version: str) -> tuple[DataFrame, dict]:
    """(``meter_id``, ``dl_segment_id``, ``dl_probability`` of every meter with a complete day in the model's
    days, predicted inside Spark by predict_batch_udf; the model's meta.json). FileNotFoundError saying how
    to retrain when the version has no DL model."""
    from gridpersona.segment.dl import META_FILE, predict_udf, read_meta

    folder = dl_dir(model_root)
    if not os.path.exists(os.path.join(folder, META_FILE)):
        raise FileNotFoundError(f"model {version} has no DL segment model at {folder}; retrain it with "
                                f"segment.dl.second_opinion true (or segment.method dl): `gridpersona --set "
                                f"segment.dl.second_opinion=true run segment-train --as-of <the model's as-of>`")
    meta = read_meta(folder)
    if int(meta["slots"]) != slots_per_day(ctx.settings):
        raise ValueError(f"DL model {version} was trained on {meta['slots']} slots per day; ami.interval_minutes "
                         f"gives {slots_per_day(ctx.settings)}: retrain the model")
    predict = predict_udf(folder, batch_size=ctx.settings.segment.dl.predict_batch_size)
    seqs = run_sequences(ctx, int(meta["days"]))
    out = seqs.select("meter_id", predict("x").alias("_p")).select(
        "meter_id", F.col("_p.dl_segment_id").alias("dl_segment_id"),
        F.col("_p.dl_probability").alias("dl_probability"))
    return out, meta
