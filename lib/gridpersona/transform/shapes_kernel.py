"""Daily load shapes from clean's meter-day arrays in numpy, batch by batch (Arrow in, Arrow out).

:func:`daily_shapes` is the computation of :func:`gridpersona.transform.shapes.shapes_from_slot_columns`
(the column expressions of the reference path, which aggregates reading rows) on a batch of
silver.meter_day_readings rows, giving the same bits: every sum is taken in slot order starting from 0.0,
as Spark's column expressions there add, and each division and comparison is the same IEEE operation. A
day of ``slots`` positions maps position i to slot i; a DST change day maps each position to its
wall-clock slot (two readings of the repeated hour add up). No Spark here: a unit test calls it on a
hand-made batch, and the shapes stage runs it in its tasks (the embedded lake's tasks also write the rows,
``lake/arrow_rows.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SHAPES_SCHEMA = pa.schema([
    pa.field("meter_id", pa.string(), nullable=False), pa.field("date", pa.date32(), nullable=False),
    pa.field("slot_kwh", pa.list_(pa.field("element", pa.float64(), nullable=False)), nullable=False),
    pa.field("daily_kwh", pa.float64(), nullable=False), pa.field("shape", pa.list_(pa.float64())),
    pa.field("peak_share", pa.float64()), pa.field("flat_share", pa.float64()), pa.field("valley_share", pa.float64()),
    pa.field("max_kwh", pa.float64(), nullable=False), pa.field("min_kwh", pa.float64(), nullable=False),
    pa.field("load_factor", pa.float64()), pa.field("completeness", pa.float64(), nullable=False),
    pa.field("imputed_slots", pa.int32()), pa.field("day_of_week", pa.int32()), pa.field("is_weekend", pa.bool_())])


@dataclass(frozen=True)
class ShapeParams:
    """``slots`` per day; ``normalization`` (``total`` or ``minmax``); ``masks``: the slots of each tariff
    period (peak, flat, valley); ``expected``: (unix day, expected intervals) of the calendar's days (a
    day not listed expects ``slots``); ``day_slots``: (unix day, wall-clock slot of each position) of the
    DST change days."""

    slots: int
    normalization: str
    masks: tuple[tuple[bool, ...], tuple[bool, ...], tuple[bool, ...]]
    expected: tuple[tuple[int, int], ...] = ()
    day_slots: tuple[tuple[int, tuple[int, ...]], ...] = ()


def _ordered_sum(columns: np.ndarray) -> np.ndarray:
    """0.0 + c0 + c1 + ... column by column (the order of shapes._ordered_sum), for every row at once."""
    total = np.zeros(columns.shape[0])
    for i in range(columns.shape[1]):
        total = total + columns[:, i]
    return total


def slot_matrix(days: pa.RecordBatch | pa.Table, date: np.ndarray, p: ShapeParams) -> np.ndarray:
    """rows x ``slots``: each slot's energy (a reading plus 0.0, or the readings of the slot added from
    0.0 on a DST change day; 0.0 for a slot without a reading). ``date``: the rows' unix days."""
    n = days.num_rows
    kwh = days.column("kwh_by_position")
    if isinstance(kwh, pa.ChunkedArray):
        kwh = kwh.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(kwh), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(kwh)
    values = pc.fill_null(flat, 0.0).to_numpy(zero_copy_only=False) + 0.0
    valid = pc.is_valid(flat).to_numpy(zero_copy_only=False)
    out = np.zeros((n, p.slots))
    changed = dict(p.day_slots)
    is_changed = np.isin(date, np.fromiter(changed, dtype=np.int64, count=len(changed))) if changed else np.zeros(n, bool)
    plain = ~is_changed & (lengths == p.slots)
    starts = np.cumsum(lengths) - lengths
    if plain.any():
        idx = starts[plain][:, None] + np.arange(p.slots)
        out[plain] = np.where(valid[idx], values[idx], 0.0)
    for r in np.nonzero(~plain)[0]:
        a, k = starts[r], lengths[r]
        slot_of = np.asarray(changed.get(int(date[r]), range(min(k, p.slots))), dtype=np.int64)
        for j in range(min(k, len(slot_of))):  # position order (a DST day: a few hundred rows a night)
            if valid[a + j]:
                out[r, slot_of[j]] = out[r, slot_of[j]] + values[a + j]
    return out


def daily_shapes(days: pa.RecordBatch | pa.Table, p: ShapeParams) -> pa.Table:
    """silver.meter_day_readings rows (``meter_id``, ``date``, ``kwh_by_position``, ``readings``,
    ``imputed``) -> silver.daily_load_shape rows (:data:`SHAPES_SCHEMA`), in the same order."""
    n, rows = p.slots, days.num_rows
    date = days.column("date").cast(pa.int32()).to_numpy(zero_copy_only=False)
    m = slot_matrix(days, date, p)
    daily = _ordered_sum(m)
    hi, lo = m.max(axis=1, initial=-np.inf), m.min(axis=1, initial=np.inf)
    uniform = np.full(n, 1.0 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        if p.normalization == "total":
            ok = daily > 0
            shape = np.where(ok[:, None], m / np.where(ok, daily, 1.0)[:, None], uniform)
        elif p.normalization == "minmax":
            ok = (hi - lo) > 0
            shape = np.where(ok[:, None], (m - lo[:, None]) / np.where(ok, hi - lo, 1.0)[:, None], uniform)
        else:
            raise ValueError(f"shapes.normalization {p.normalization!r}: expected 'total' or 'minmax'")
        has_energy = daily > 0
        shares = [pa.array(_ordered_sum(m[:, np.asarray(mask, dtype=bool)]) / np.where(has_energy, daily, 1.0),
                           mask=~has_energy) for mask in p.masks]
        load_factor = pa.array(daily / n / np.where(hi > 0, hi, 1.0), mask=~(hi > 0))
    expected_of = dict(p.expected)
    day, at = np.unique(date, return_inverse=True)  # a batch holds a few dates: look each up once
    expected = np.array([expected_of.get(int(d), n) for d in day], dtype=np.int64)[at.reshape(-1)]
    present = days.column("readings").cast(pa.int64()).to_numpy(zero_copy_only=False)
    completeness = np.minimum(1.0, present / expected)
    dow = ((date.astype(np.int64) + 3) % 7) + 1  # 1970-01-01 was a Thursday; 1 = Monday ... 7 = Sunday
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * n)
    return pa.Table.from_arrays([
        days.column("meter_id"), days.column("date"),
        pa.ListArray.from_arrays(offsets, pa.array(m.ravel())), pa.array(daily),
        pa.ListArray.from_arrays(offsets, pa.array(shape.ravel())), *shares,
        pa.array(hi), pa.array(lo), load_factor, pa.array(completeness),
        days.column("imputed").cast(pa.int32()), pa.array(dow.astype(np.int32)), pa.array(dow >= 6),
    ], schema=SHAPES_SCHEMA)
