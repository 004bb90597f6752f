"""The DL segment model (issue 16 item 1): CNN + GRU over daily shapes, trained through TorchDistributor,
assigned inside Spark with predict_batch_udf, saved beside the KMeans model of its version."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from gridpersona.config import ConfigError, load_settings
from gridpersona.segment import dl
from gridpersona.stages.runner import StageContext
from gridpersona.stages.segment_assign import run_segment_assign
from gridpersona.stages.segment_dl import dl_dir, require_torch
from gridpersona.stages.segment_train import run_segment_train

SLOTS = 8
PARAMS = dict(days=10, slots=SLOTS, segment_ids=[0, 2, 5], epochs=2, batch_size=4, learning_rate=0.01, dropout=0.1,
              conv_channels=[2, 4], hidden=4, min_crop_days=3, seed=7)


def _batch(rows: int, days: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((rows, days, SLOTS + dl.DAY_EXTRA), np.float32)
    x[..., :SLOTS] = rng.random((rows, days, SLOTS))
    x[..., SLOTS] = rng.integers(0, 2, (rows, days))
    x[..., SLOTS + 1] = rng.random((rows, days))
    x[..., SLOTS + 2] = 1.0
    return x


def test_model_gives_one_distribution_per_meter_and_ignores_masked_days():
    model = dl.build_model(PARAMS)
    model.eval()
    x = _batch(5, 10)
    x[1, :7] = 0.0  # meter 1: only its last 3 days
    x[2, 3:] = 0.0  # meter 2: only its first 3 days
    probs = dl.predict_proba(model, x)
    assert probs.shape == (5, 3)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Whatever a masked day holds, the prediction is the same: masked days never reach the network.
    garbage = x.copy()
    garbage[1, :7, : SLOTS + 2] = 99.0
    garbage[2, 3:, : SLOTS + 2] = -5.0
    assert np.allclose(dl.predict_proba(model, garbage), probs, atol=1e-6)
    # Unmasking a day changes it (the mask is what decides, not the zeros).
    shown = garbage.copy()
    shown[1, 0, SLOTS + 2] = 1.0
    assert not np.allclose(dl.predict_proba(model, shown)[1], probs[1], atol=1e-4)


def test_crops_keep_a_run_of_present_days_and_mask_the_rest():
    x = _batch(50, 10)
    x[0, :9] = 0.0  # one present day: any crop missing it keeps the whole sequence
    out = dl.crop_days(x, np.random.default_rng(3), 4)
    present = out[..., -1] > 0.5
    counts = present.sum(axis=1)
    assert counts.min() >= 1 and (counts[1:] >= 4).all() and (counts[1:] < 10).any()
    for row in present[1:]:
        kept = np.flatnonzero(row)
        assert (np.diff(kept) == 1).all()  # one contiguous run
    assert (out[~present] == 0).all()


def test_training_is_deterministic_given_the_seed():
    x = _batch(12, 10, seed=1)
    y = np.arange(12) % 3
    a, hist_a = dl.fit(x, y, PARAMS)
    b, hist_b = dl.fit(x, y, PARAMS)
    assert hist_a == hist_b
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_torch_missing_is_a_config_error(make_settings, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    require_torch(make_settings())  # DL off: torch is not needed
    with pytest.raises(ConfigError, match=r"segment.method dl needs PyTorch.*\.\[dl\]") as err:
        require_torch(make_settings("segment.method=dl"))
    assert "\n" not in str(err.value)


def test_day_sequences_place_days_by_date_and_mask_missing_and_incomplete_ones(spark):
    last = dt.date(2026, 6, 14)
    rows = [("m1", last - dt.timedelta(days=d), [1.0] * 4 + [3.0] * 4, 16.0, 1.0, False) for d in range(7)]
    rows.append(("m1", last - dt.timedelta(days=8), [2.0] * 8, 16.0, 0.5, False))  # incomplete: masked
    rows.append(("m2", last - dt.timedelta(days=20), [2.0] * 8, 16.0, 1.0, False))  # before the days: absent
    daily = spark.createDataFrame(rows, "meter_id string, date date, slot_kwh array<double>, daily_kwh double, "
                                        "completeness double, is_weekend boolean")
    out = dl.day_sequences(daily, last_day=last, days=10, slots=SLOTS, min_completeness=0.9).collect()
    assert [r["meter_id"] for r in out] == ["m1"]
    x = np.array(out[0]["x"], dtype=np.float32).reshape(10, SLOTS + dl.DAY_EXTRA)
    assert out[0]["dl_days"] == 7
    assert (x[:, -1] == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]).all()  # the last 7 days present, in date order
    assert np.allclose(x[-1, :SLOTS], [0.5] * 4 + [1.5] * 4)  # slot kWh / daily kWh x slots
    assert np.isclose(x[-1, SLOTS + 1], np.log1p(16.0))
    assert (x[:3] == 0).all()


@pytest.mark.e2e
def test_dl_model_trains_through_torch_distributor_and_assigns_in_spark(synthetic_lake, tmp_path):
    tables = ["silver.daily_load_shape", "bronze.customer_archive"]
    settings, lake = synthetic_lake.copy(tmp_path / "lake", tables, "segment.dl.second_opinion=true",
                                         "segment.dl.epochs=2", "segment.dl.batch_size=32")
    spark = synthetic_lake.spark
    ctx = StageContext(settings, spark, lake, synthetic_lake.as_of, synthetic_lake.days)
    try:
        train = run_segment_train(ctx)
        assign = run_segment_assign(ctx)
    finally:
        ctx.cache.release()
    assert any(n.startswith("dl model") and "TorchDistributor" in n for n in train.notes), train.notes
    model_rows = lake.read_arrow("gold.segment_model").to_pylist()
    folder = dl_dir(os.path.join(settings.lake.root, model_rows[0]["model_path"]))
    # Stored with the version, reloadable, its classes the version's segments; the training data removed.
    model, meta = dl.load_model(folder)
    assert sorted(meta["segment_ids"]) == sorted(r["segment_id"] for r in model_rows)
    assert meta["days"] == synthetic_lake.days and meta["epochs"] == 2 and len(meta["history"]) == 2
    assert not os.path.exists(os.path.join(folder, "train_data"))

    segs = lake.read("gold.customer_segments").filter(F.col("as_of") == F.lit(synthetic_lake.as_of))
    got = segs.select("meter_id", "segment_id", "dl_segment_id", "dl_probability").collect()
    assert got and all(r["dl_segment_id"] in meta["segment_ids"] and 0 < r["dl_probability"] <= 1 for r in got)
    assert any("dl model" in n and f"for {len(got):,} of {len(got):,} meters" in n for n in assign.notes), assign.notes

    # The reloaded model, run outside Spark, gives the same segments as predict_batch_udf wrote.
    from gridpersona.stages.segment_dl import run_sequences

    ctx = StageContext(settings, spark, lake, synthetic_lake.as_of, synthetic_lake.days)
    seqs = sorted(run_sequences(ctx, meta["days"]).collect(), key=lambda r: r["meter_id"])[:20]
    x = np.array([r["x"] for r in seqs], dtype=np.float32).reshape(len(seqs), meta["days"], -1)
    ids = np.array(meta["segment_ids"])[dl.predict_proba(model, x).argmax(axis=1)]
    written = {r["meter_id"]: r["dl_segment_id"] for r in got}
    assert [written[r["meter_id"]] for r in seqs] == ids.tolist()

    # A meter with only its last 7 days gets a prediction (masked days, not a failure).
    last7 = (lake.read("silver.daily_load_shape")
             .filter(F.col("date") > F.lit(synthetic_lake.as_of - dt.timedelta(days=7))))
    short = dl.day_sequences(last7, last_day=synthetic_lake.as_of, days=meta["days"], slots=meta["slots"],
                             min_completeness=settings.segment.min_completeness)
    pred = short.select("dl_days", dl.predict_udf(folder)("x").alias("p")).select("dl_days", "p.*").collect()
    assert pred and max(r["dl_days"] for r in pred) == 7
    assert all(r["dl_segment_id"] in meta["segment_ids"] and r["dl_probability"] > 0 for r in pred)

    # segment.method dl: the DL segment is the segment (the same model, no retraining).
    settings_dl = load_settings("test", [*synthetic_lake.overrides, f"lake.root={settings.lake.root}",
                                         "segment.method=dl"])
    ctx = StageContext(settings_dl, spark, lake, synthetic_lake.as_of, synthetic_lake.days)
    try:
        run_segment_assign(ctx)
    finally:
        ctx.cache.release()
    rows = lake.read("gold.customer_segments").filter(F.col("as_of") == F.lit(synthetic_lake.as_of)).collect()
    assert rows and all(r["segment_id"] == r["dl_segment_id"] for r in rows)
    assert {r["meter_id"]: r["dl_segment_id"] for r in rows} == written
