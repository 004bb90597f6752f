"""Deep-learning segmentation: a CNN + GRU over each meter's sequence of daily shapes (needs torch, the `dl` extra).

What it adds over KMeans
    KMeans sees one averaged weekday + weekend shape per meter: a meter with few
    days (a new connection, a partial week, gaps) gets a noisy average that may
    fall nearer another centroid. The DL model reads the days themselves and is
    trained on random runs of 7..all days, so it learns which evidence of a few
    days is telling. Measured on the synthetic lake: ``bench/dl_segments.py``.

Data (one row per meter, :func:`day_sequences`)
    The last ``days`` days ending on the as-of, in date order, as one
    ``array<float>`` ``x`` of ``days x (slots + 3)`` values: per day the slot
    kWh over the day's kWh times ``slots`` (the day normalized as the KMeans
    mean shape is, scaled to mean 1; uniform for a day without energy), then
    ``is_weekend``, ``log1p(daily_kwh)`` (the level: the vacancy segment is a
    level, not a shape) and ``present`` (1). A day absent from silver or less
    complete than ``min_completeness`` is all zeros (``present`` 0: masked).

Model (:class:`DayShapeNet`)
    Per present day: two Conv1d (kernel 5, circular: the day wraps at midnight)
    + batch norm + ReLU + max pooling over the slots (local features of the
    curve), dropout, a linear layer with the day's weekend flag and level; the
    present days, moved to the front in date order, go through a GRU; the mean
    of its outputs and its last state -> dropout -> linear -> one logit per
    segment. Masked days never reach the convolutions, the batch norm or the
    GRU, so a meter with 7 days is read as 7 days.

Training (:func:`train_fn`, run by ``TorchDistributor``)
    Reads its data from a parquet folder (``meter_id``, ``label``, ``x``)
    written by Spark, so the function runs wherever the distributor starts it
    (a local torchrun or a cluster's executors). Cross-entropy, Adam, each
    meter shown as a random crop of ``min_crop_days``..all of its days each
    epoch. Deterministic given ``seed`` (weights, batch order, crops); with
    ``num_processes`` > 1 the ranks share every batch through DDP (gloo, CPU).
    Rank 0 writes ``model.pt`` and ``meta.json`` into the model folder.

Inference (:func:`predict_udf`)
    ``pyspark.ml.functions.predict_batch_udf`` over the ``x`` column: each
    Python worker loads the model folder once and returns the most probable
    segment id and its softmax probability.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# Values per day after the slots: is_weekend, log1p(daily_kwh), present.
DAY_EXTRA = 3
MODEL_FILE = "model.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class DLParams:
    """What training needs, as plain values (the stage builds them from ``segment.dl``)."""

    days: int  # days per meter sequence
    slots: int  # slots per day
    segment_ids: tuple[int, ...]  # class index -> segment id
    epochs: int
    batch_size: int
    learning_rate: float
    dropout: float
    conv_channels: tuple[int, int]
    hidden: int
    min_crop_days: int
    seed: int
    labels: str = "kmeans"  # recorded in meta.json

    @property
    def width(self) -> int:
        return self.slots + DAY_EXTRA


# ------------------------------------------------------------------ Spark side: the per-meter sequences


def day_sequences(daily, *, last_day, days: int, slots: int, min_completeness: float):
    """silver.daily_load_shape rows -> one row per meter with at least one complete day among the ``days`` days
    ending on ``last_day``: ``meter_id``, ``dl_days`` (complete days seen) and ``x`` (array<float>, see the
    module docstring). ``daily`` needs ``meter_id``, ``date``, ``slot_kwh``, ``daily_kwh``, ``completeness``,
    ``is_weekend``. A pure transformation (no I/O)."""
    import datetime as dt

    from pyspark.sql import functions as F

    first = last_day - dt.timedelta(days=days - 1)
    kwh = F.col("daily_kwh")
    weekend = F.coalesce(F.col("is_weekend"), F.dayofweek("date").isin(1, 7))
    shape = (F.when(kwh > 0, F.transform("slot_kwh", lambda v: v / kwh * float(slots)))
             .otherwise(F.array_repeat(F.lit(1.0), slots)))
    day = F.concat(shape, F.array(weekend.cast("double"), F.log1p(F.greatest(kwh, F.lit(0.0))), F.lit(1.0)))
    per_meter = (daily.filter(F.col("date").between(F.lit(first), F.lit(last_day))
                              & (F.col("completeness") >= F.lit(float(min_completeness))))
                 .groupBy("meter_id")
                 .agg(F.map_from_entries(F.collect_list(F.struct(F.datediff("date", F.lit(first)).alias("i"),
                                                                 day.alias("v")))).alias("_m"),
                      F.count(F.lit(1)).cast("int").alias("dl_days")))
    empty = F.array_repeat(F.lit(0.0), slots + DAY_EXTRA)
    x = F.flatten(F.transform(F.sequence(F.lit(0), F.lit(days - 1)),
                              lambda i: F.coalesce(F.try_element_at("_m", i), empty)))
    return per_meter.select("meter_id", "dl_days", x.cast("array<float>").alias("x"))


def predict_udf(model_dir: str, *, batch_size: int = 256):
    """A ``predict_batch_udf`` taking the ``x`` column and returning struct<dl_segment_id int, dl_probability
    double> with the model saved in ``model_dir`` (loaded once per Python worker)."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import types as T

    meta = read_meta(model_dir)
    size = int(meta["days"]) * (int(meta["slots"]) + DAY_EXTRA)
    return predict_batch_udf(
        make_predict_fn(model_dir),
        return_type=T.StructType([T.StructField("dl_segment_id", T.IntegerType()),
                                  T.StructField("dl_probability", T.DoubleType())]),
        batch_size=batch_size, input_tensor_shapes=[[size]])


def make_predict_fn(model_dir: str) -> Callable[[], Callable[[np.ndarray], dict]]:
    """predict_batch_udf's ``make_predict_fn``: loads the model in ``model_dir`` and returns a function of a
    (rows, days x width) batch -> {dl_segment_id, dl_probability} arrays."""

    def make() -> Callable[[np.ndarray], dict]:
        torch.set_num_threads(1)  # a Spark task is one core
        model, meta = load_model(model_dir)
        ids = np.asarray(meta["segment_ids"], dtype=np.int32)
        days, width = int(meta["days"]), int(meta["slots"]) + DAY_EXTRA

        def predict(x: np.ndarray) -> dict:
            probs = predict_proba(model, np.asarray(x, dtype=np.float32).reshape(-1, days, width))
            k = probs.argmax(axis=1)
            return {"dl_segment_id": ids[k], "dl_probability": probs[np.arange(len(k)), k].astype(np.float64)}

        return predict

    return make


# ------------------------------------------------------------------ the model


class DayShapeNet(nn.Module):
    """CNN over each day's slots + GRU over the days; input (batch, days, slots + 3), output (batch, classes)."""

    def __init__(self, slots: int, classes: int, *, conv_channels: Sequence[int] = (8, 16), hidden: int = 32,
                 dropout: float = 0.2, day_dim: int = 32):
        super().__init__()
        c1, c2 = int(conv_channels[0]), int(conv_channels[1])
        self.slots = int(slots)
        self.conv = nn.Sequential(
            nn.Conv1d(1, c1, 5, padding=2, padding_mode="circular"), nn.BatchNorm1d(c1), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(c1, c2, 5, padding=2, padding_mode="circular"), nn.BatchNorm1d(c2), nn.ReLU(), nn.MaxPool1d(2),
        )
        flat = c2 * (self.slots // 4)
        self.day = nn.Sequential(nn.Dropout(dropout), nn.Linear(flat + 2, day_dim), nn.ReLU())
        self.gru = nn.GRU(day_dim, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, days, _ = x.shape
        s = self.slots
        present = x[..., s + 2] > 0.5
        lengths = present.sum(dim=1)
        # Present days to the front, in date order (gaps closed; the weekend flag keeps the day type).
        order = torch.argsort((~present).to(torch.int64) * days + torch.arange(days), dim=1, stable=True)
        x = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        valid = torch.arange(days).unsqueeze(0) < lengths.unsqueeze(1)
        picked = x[valid]  # (present days, slots + 3): masked days never reach the conv / batch norm
        local = self.conv(picked[:, None, :s]).flatten(1)
        feats = self.day(torch.cat([local, picked[:, s:s + 2]], dim=1))
        seq = feats.new_zeros(batch, days, feats.shape[1])
        seq[valid] = feats
        # A meter without a present day (never passed by the stages) reads one zero day instead of failing.
        packed = pack_padded_sequence(seq, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, last = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=days)
        mean = (out * valid.unsqueeze(-1)).sum(dim=1) / lengths.clamp(min=1).unsqueeze(-1)
        return self.head(torch.cat([mean, last[-1]], dim=1))


def build_model(params: Mapping[str, Any]) -> DayShapeNet:
    """A fresh :class:`DayShapeNet` for ``params`` (DLParams as a dict, e.g. meta.json's)."""
    return DayShapeNet(int(params["slots"]), len(params["segment_ids"]), conv_channels=params["conv_channels"],
                       hidden=int(params["hidden"]), dropout=float(params["dropout"]))


def predict_proba(model: nn.Module, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Softmax probabilities (rows, classes) of ``x`` (rows, days, slots + 3) with ``model`` in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(torch.softmax(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def crop_days(x: np.ndarray, rng: np.random.Generator, min_days: int) -> np.ndarray:
    """A copy of ``x`` (rows, days, width) where each row keeps only a random run of ``min_days``..all days
    (the rest zeroed: masked). A row whose run holds no present day keeps all its days."""
    rows, days, _ = x.shape
    out = x.copy()
    lo = min(max(1, int(min_days)), days)
    length = rng.integers(lo, days + 1, size=rows)
    start = (rng.random(rows) * (days - length + 1)).astype(np.int64)
    idx = np.arange(days)[None, :]
    keep = (idx >= start[:, None]) & (idx < (start + length)[:, None])
    keep |= ~((x[..., -1] > 0.5) & keep).any(axis=1, keepdims=True)
    out[~keep] = 0.0
    return out


def fit(x: np.ndarray, y: np.ndarray, params: Mapping[str, Any], *, rank: int = 0, world: int = 1,
        log: Callable[[str], None] | None = None) -> tuple[nn.Module, list[dict]]:
    """Train a model on ``x`` (meters, days, width) float32 and ``y`` (meters,) class indexes.

    Every rank draws the same batch order and crops from ``seed`` and trains on
    its share (``rank::world``) of each batch; with ``world`` > 1 the model is
    wrapped in DDP (the process group must be initialized). Returns the
    (unwrapped) model and per-epoch ``{epoch, loss, accuracy}`` (on the crops).
    """
    seed = int(params["seed"])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(params)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(net.parameters(), lr=float(params["learning_rate"]))
    epochs, bs = int(params["epochs"]), int(params["batch_size"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    loss_fn = nn.CrossEntropyLoss()
    yt = torch.from_numpy(y.astype(np.int64))
    history = []
    n = len(x)
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(n)
        crops = crop_days(x, rng, int(params["min_crop_days"]))
        total, correct, seen = 0.0, 0, 0
        for b in range(0, n, bs):
            idx = order[b:b + bs][rank::world]
            if len(idx) < 2:  # batch norm needs two days; a lone last meter waits for the next epoch
                continue
            xb = torch.from_numpy(crops[idx])
            logits = net(xb)
            loss = loss_fn(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yt[idx]).sum())
            seen += len(idx)
        sched.step()
        history.append({"epoch": epoch + 1, "loss": total / max(seen, 1), "accuracy": correct / max(seen, 1)})
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.4f}, accuracy {history[-1]['accuracy']:.3f}")
    return model, history


def read_training_data(path: str, days: int, width: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(meter ids, x (meters, days, width) float32, labels) of the parquet folder ``path`` (``meter_id``,
    ``label``, ``x``), sorted by meter id (the order Spark wrote the files in does not matter)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["meter_id", "label", "x"])
    table = table.take(pc.sort_indices(table, sort_keys=[("meter_id", "ascending")]))
    flat = table.column("x").combine_chunks()
    values = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    x = values.reshape(len(table), days, width)
    return table.column("meter_id").to_pylist(), x, table.column("label").to_numpy().astype(np.int64)


def train_fn(data_path: str, model_dir: str, params: dict) -> dict:
    """The function ``TorchDistributor.run`` starts (in each torchrun process): reads the training data at
    ``data_path``, trains (:func:`fit`), and rank 0 writes ``model.pt`` + ``meta.json`` into ``model_dir``.
    Returns {model_dir, meters, seconds} from every rank (each rank writes the distributor's output file)."""
    t0 = time.perf_counter()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    # One thread per process: more processes, not threads, use more cores (idle OpenMP threads spin on a
    # busy machine and slowed an epoch tenfold).
    torch.set_num_threads(1)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    days, width = int(params["days"]), int(params["slots"]) + DAY_EXTRA
    meters, x, y = read_training_data(data_path, days, width)
    model, history = fit(x, y, params, rank=rank, world=world,
                         log=(lambda m: print(f"[segment dl] {m}", flush=True)) if rank == 0 else None)
    if rank == 0:
        # Accuracy against the labels on all days and on each meter's last 7 days (no crop draw: comparable).
        full = predict_proba(model, x).argmax(1)
        last7 = predict_proba(model, last_days(x, 7)).argmax(1)
        meta = {**params, "segment_ids": list(params["segment_ids"]), "conv_channels": list(params["conv_channels"]),
                "train_meters": len(meters), "history": history,
                "train_accuracy": float((full == y).mean()) if len(y) else math.nan,
                "train_accuracy_last7": float((last7 == y).mean()) if len(y) else math.nan,
                "torch_version": torch.__version__, "world_size": world,
                "train_seconds": round(time.perf_counter() - t0, 1)}
        save_model(model, meta, model_dir)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return {"model_dir": model_dir, "meters": len(meters), "seconds": round(time.perf_counter() - t0, 1)}


def last_days(x: np.ndarray, n: int) -> np.ndarray:
    """A copy of ``x`` (rows, days, width) keeping only each row's last ``n`` days (the others masked)."""
    out = x.copy()
    out[:, : max(0, x.shape[1] - n)] = 0.0
    return out


def train(num_processes: int, data_path: str, model_dir: str, params: DLParams, *,
          local_mode: bool = True) -> dict:
    """Train through ``TorchDistributor(num_processes, local_mode, use_gpu=False).run(train_fn, ...)``; returns
    the saved model's meta.json. Needs an active SparkSession."""
    from pyspark.ml.torch.distributor import TorchDistributor

    os.makedirs(model_dir, exist_ok=True)
    for name in (MODEL_FILE, META_FILE):  # a rerun must not leave the previous model looking fresh
        if os.path.exists(os.path.join(model_dir, name)):
            os.remove(os.path.join(model_dir, name))
    config = {**asdict(params), "segment_ids": list(params.segment_ids), "conv_channels": list(params.conv_channels)}
    TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=False).run(
        train_fn, data_path, model_dir, config)
    if not os.path.exists(os.path.join(model_dir, META_FILE)):
        raise RuntimeError(f"segment dl: training ended without writing {os.path.join(model_dir, META_FILE)}")
    return read_meta(model_dir)


def save_model(model: nn.Module, meta: Mapping[str, Any], model_dir: str) -> None:
    """Write ``model.pt`` (state dict) and ``meta.json`` (params, segment ids, training figures)."""
    os.makedirs(model_dir, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(model_dir, MODEL_FILE))
    with open(os.path.join(model_dir, META_FILE), "w") as fh:
        json.dump(meta, fh, indent=1, sort_keys=True)


def read_meta(model_dir: str) -> dict:
    """meta.json of the model saved in ``model_dir``."""
    with open(os.path.join(model_dir, META_FILE)) as fh:
        return json.load(fh)


def load_model(model_dir: str) -> tuple[DayShapeNet, dict]:
    """(the model in eval mode, its meta.json) saved in ``model_dir``."""
    meta = read_meta(model_dir)
    model = build_model(meta)
    model.load_state_dict(torch.load(os.path.join(model_dir, MODEL_FILE), map_location="cpu", weights_only=True))
    model.eval()
    return model, meta
