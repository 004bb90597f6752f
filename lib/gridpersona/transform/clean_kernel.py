"""Clean's per-meter decisions in numpy: one call per meter over all its accepted readings of the run.

:func:`gridpersona.transform.clean.clean_interval_readings` groups the accepted readings by meter
(``groupBy("meter_id").applyInArrow``) and hands each meter's rows to :func:`clean_meter`, which lays
them out as a days x positions matrix and makes every decision of the module docstring of
:mod:`gridpersona.transform.clean` with whole-array operations: duplicates, the look-back scales,
candidates, isolated spikes, interpolation. No Spark here: the function takes and returns Arrow tables,
so a unit test calls it on a hand-made table.

Input rows (one table per meter), columns ``meter_id``, ``d`` (the local day, days since 1970-01-01),
``pos`` (position in the day), ``kwh``, ``bd`` (the row's bronze ``date`` partition, days since 1970),
``r`` (reason code) and ``us`` (``ts`` in microseconds) of a quarantined row:

- ``pos >= 0``: an accepted reading;
- ``pos == QUARANTINED``: a row the row checks quarantined (reason ``r``), passed through as it is;
- ``pos == STAT_MAX`` / ``STAT_MEAN``: a stored look-back day's ``day_max_kwh`` / ``day_mean_kwh`` in
  ``kwh`` (days the run does not read);
- ``pos == CAPACITY``: the meter's contracted capacity (kVA) in ``kwh``.

Output rows (:data:`OUTPUT_SCHEMA`): one per written day with accepted readings (``out``: the repaired
readings, the raw ones and quality codes unless the day is plain, the counts and statistics), and one
per quarantined row (``reason`` set; ``date`` is its bronze date), the set-aside second readings included.

Every sum is taken in position order and every median as (lower middle + upper middle) / 2 over the
sorted values, so a day's figures are the same bits whatever the row order or the run that computed them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

STAT_MAX, STAT_MEAN, CAPACITY, QUARANTINED = -1, -2, -3, -4

MEASURED, OUTLIER_REPLACED, INTERPOLATED = 0, 1, 2
QUALITY_NAMES = ("measured", "outlier_replaced", "interpolated")

OUTPUT_SCHEMA = (
    "meter_id string, date date, out boolean, day_start_epoch long, kwh array<double>, raw array<double>, "
    "q array<tinyint>, measured_intervals int, outlier_intervals int, interpolated_intervals int, "
    "day_max_kwh double, day_mean_kwh double, outlier_scale_kwh double, fill_level_kwh double, "
    "reason tinyint, ts_us long, reading_kwh double, local_date date")
_ARROW_SCHEMA = pa.schema([
    ("meter_id", pa.string()), ("date", pa.date32()), ("out", pa.bool_()), ("day_start_epoch", pa.int64()),
    ("kwh", pa.list_(pa.float64())), ("raw", pa.list_(pa.float64())), ("q", pa.list_(pa.int8())),
    ("measured_intervals", pa.int32()), ("outlier_intervals", pa.int32()), ("interpolated_intervals", pa.int32()),
    ("day_max_kwh", pa.float64()), ("day_mean_kwh", pa.float64()), ("outlier_scale_kwh", pa.float64()),
    ("fill_level_kwh", pa.float64()), ("reason", pa.int8()), ("ts_us", pa.int64()), ("reading_kwh", pa.float64()),
    ("local_date", pa.date32())])


@dataclass(frozen=True)
class KernelParams:
    """What :func:`clean_meter` needs besides the rows.

    ``first_day``: the calendar's first day (days since 1970); ``day_start`` / ``expected``: per calendar
    day, the UTC epoch second of local midnight and the day's positions; ``out``: per calendar day,
    whether the run writes it; the rule's levels in kWh per interval.
    """

    first_day: int
    day_start: tuple[int, ...]
    expected: tuple[int, ...]
    out: tuple[bool, ...]
    lookback_days: int
    scale_multiple: float
    floor_kwh: float          # scale_floor_kw x interval hours
    neighbour_multiple: float
    capacity_factor: float    # interval hours x capacity_margin
    max_gap: int
    step_seconds: int
    duplicate_reason: int     # the reason code of a set-aside second reading


def _median_windows(values: np.ndarray, lookback: int) -> np.ndarray:
    """Per day x: the median of the non-NaN values of days x - lookback .. x - 1 (NaN when none)."""
    padded = np.concatenate([np.full(lookback, np.nan), values])
    win = np.lib.stride_tricks.sliding_window_view(padded, lookback)[: len(values)]  # days x-lookback .. x-1
    s = np.sort(win, axis=1)  # NaN last
    k = np.sum(~np.isnan(win), axis=1)
    lo = np.take_along_axis(s, np.maximum((k - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(s, np.minimum(k // 2, lookback - 1)[:, None], axis=1)[:, 0]
    return np.where(k > 0, (lo + hi) / 2, np.nan)


def _nan_to_zero(a: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(a), 0.0, a)


def _ragged(mat: np.ndarray, lengths: np.ndarray, valid: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A list array of the first ``lengths[r]`` values of each row ``r`` of ``mat`` (a null list where
    ``valid`` is false; NaN is a null element)."""
    lens = np.where(valid, lengths, 0).astype(np.int32)
    offsets = np.zeros(len(lens) + 1, dtype=np.int32)
    np.cumsum(lens, out=offsets[1:])
    flat = mat[np.arange(mat.shape[1])[None, :] < lens[:, None]]  # row by row
    if value_type == pa.float64():
        values = pa.array(flat, type=value_type, mask=np.isnan(flat))
    elif value_type == pa.date32():
        values = pa.array(flat.astype(np.int32), type=pa.int32()).cast(pa.date32())
    else:
        values = pa.array(flat.astype(value_type.to_pandas_dtype()), type=value_type)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~np.asarray(valid, dtype=bool)))


def _assemble(meter: str | None, n: int, cols: dict) -> pa.Table:
    """A table of the output schema with ``n`` rows: ``cols`` (numpy arrays or Arrow arrays) and nulls in the
    other columns. NaN in a double column is null."""
    out = []
    for field in _ARROW_SCHEMA:
        if field.name == "meter_id":
            out.append(pa.array([meter] * n, type=pa.string()))
        elif field.name not in cols:
            out.append(pa.nulls(n, type=field.type))
        elif isinstance(cols[field.name], (pa.Array, pa.ChunkedArray)):
            out.append(cols[field.name])
        elif field.type == pa.date32():
            out.append(pa.array(np.asarray(cols[field.name]).astype(np.int32), type=pa.int32()).cast(pa.date32()))
        elif field.type == pa.float64():
            a = np.asarray(cols[field.name], dtype=np.float64)
            out.append(pa.array(a, type=pa.float64(), mask=np.isnan(a)))
        else:
            out.append(pa.array(np.asarray(cols[field.name]).astype(field.type.to_pandas_dtype()), type=field.type))
    return pa.Table.from_arrays(out, schema=_ARROW_SCHEMA)


def clean_meter(table: pa.Table, p: KernelParams) -> pa.Table:
    """One meter's rows -> its written days and its quarantined rows (see the module docstring)."""
    meter = table.column("meter_id")[0].as_py()
    d_all = table.column("d").to_numpy(zero_copy_only=False)
    pos_all = table.column("pos").to_numpy(zero_copy_only=False).astype(np.int64)
    kwh_all = table.column("kwh").to_numpy(zero_copy_only=False).astype(np.float64)
    # Rows the row checks quarantined pass through, as they are.
    held = np.nonzero(pos_all == QUARANTINED)[0]
    quarantined = _assemble(meter, len(held), {
        "date": table.column("bd").take(pa.array(held)).cast(pa.int32()).cast(pa.date32()),
        "reason": table.column("r").take(pa.array(held)),
        "ts_us": table.column("us").take(pa.array(held)),
        "reading_kwh": table.column("kwh").take(pa.array(held)),
        "local_date": table.column("d").take(pa.array(held)).cast(pa.int32()).cast(pa.date32()),
        "out": np.zeros(len(held), dtype=bool)})
    read = pos_all >= 0
    if not read.any():
        return quarantined
    cap_rows = kwh_all[pos_all == CAPACITY]
    cap_at = float(cap_rows.max()) * p.capacity_factor if len(cap_rows) and not np.isnan(cap_rows).all() else np.nan
    L = p.lookback_days
    ncal = len(p.day_start)
    # Day axis: the look-back before the calendar's first day, then the calendar.
    base = p.first_day - L - 1
    ndays = ncal + L + 1
    P = max(p.expected)
    expected = np.concatenate([np.zeros(L + 1, dtype=np.int64), np.asarray(p.expected, dtype=np.int64)])
    out_day = np.concatenate([np.zeros(L + 1, dtype=bool), np.asarray(p.out, dtype=bool)])
    day_start = np.concatenate([np.zeros(L + 1, dtype=np.int64), np.asarray(p.day_start, dtype=np.int64)])

    di = d_all[read].astype(np.int64) - base
    pi = pos_all[read]
    kv = kwh_all[read]
    bd = table.column("bd").to_numpy(zero_copy_only=False)[read]
    flat = di * P + pi
    cnt = np.bincount(flat, minlength=ndays * P).reshape(ndays, P)
    readings = cnt.sum(axis=1)
    has = readings > 0
    present = (cnt > 0).sum(axis=1)
    # The largest reading of each position (the only one where an instant is read once).
    order = np.lexsort((kv, flat))
    fs, ks = flat[order], kv[order]
    last_of = np.r_[fs[1:] != fs[:-1], True]
    M = np.full(ndays * P, np.nan)
    M[fs[last_of]] = ks[last_of]
    M = M.reshape(ndays, P)

    with np.errstate(invalid="ignore"):
        day_max = np.where(has, np.nanmax(np.where(np.isnan(M), -np.inf, M), axis=1), np.nan)
    # 0.0 + x0 + x1 + ... in position order (an accumulate is sequential; a sum would pair the terms).
    total = np.cumsum(np.concatenate([np.zeros((ndays, 1)), _nan_to_zero(M)], axis=1), axis=1)[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        day_mean = np.where(has, total / np.maximum(present, 1), np.nan)

    # Look-back statistics: the days read, then the stored days the run does not read.
    stat_max, stat_mean = day_max.copy(), day_mean.copy()
    for code, target in ((STAT_MAX, stat_max), (STAT_MEAN, stat_mean)):
        rows = pos_all == code
        if rows.any():
            sd = d_all[rows].astype(np.int64) - base
            keep = (sd >= 0) & (sd < ndays)
            target[sd[keep]] = np.where(has[sd[keep]], target[sd[keep]], kwh_all[rows][keep])
    # Only days with a stored or computed largest reading count (a stored null is no value).
    stat_mean = np.where(np.isnan(stat_max), np.nan, stat_mean)
    scale = _median_windows(stat_max, L)
    fill = _median_windows(stat_mean, L)

    high_at = p.scale_multiple * np.maximum(np.where(np.isnan(scale), 0.0, scale), p.floor_kwh)

    def cand(x: np.ndarray, rows=slice(None)) -> np.ndarray:
        h = high_at[rows]
        h = h[:, None] if x.ndim == 2 else h
        with np.errstate(invalid="ignore"):
            return (x > h) | (x > cap_at)

    # Duplicates: per instant read more than once, the first non-candidate by kWh descending is kept.
    V = M.copy()
    # The set-aside readings, in day order.
    dup_day = np.zeros(0, dtype=np.int64)
    dup_pos, dup_kwh, dup_bd = np.zeros(0, dtype=np.int32), np.zeros(0), np.zeros(0, dtype=np.int32)
    if (readings > present).any():  # only then: a meter without a second reading skips the ranking
        multi = cnt.reshape(-1)[flat] > 1
        idx = np.nonzero(multi)[0]
        rd, rp, rk, rb = di[idx], pi[idx], kv[idx], bd[idx]
        c = cand(rk, rd)
        # Per instant: non-candidate first, then kWh descending.
        o = np.lexsort((-rk, c, rp, rd))
        rd, rp, rk, rb = rd[o], rp[o], rk[o], rb[o]
        first = np.r_[True, (rd[1:] != rd[:-1]) | (rp[1:] != rp[:-1])]
        V[rd[first], rp[first]] = rk[first]
        dup_day, dup_pos, dup_kwh, dup_bd = rd[~first], rp[~first].astype(np.int32), rk[~first], rb[~first].astype(np.int32)

    cols_ok = np.arange(P)[None, :] < expected[:, None]
    V = np.where(cols_ok, V, np.nan)
    rows_all = np.arange(ndays)
    n = expected
    last = np.maximum(n - 1, 0)
    C = cand(V) & ~np.isnan(V)
    has_cand = cand(day_max) & has
    plain = has & (present == n) & ~has_cand & (readings == present)

    # Day edges (what a neighbour day reads): first/last reading, first/last non-candidate reading.
    first_v = V[:, 0]
    first_c = C[:, 0]
    last_v = V[rows_all, last]
    last_c = C[rows_all, last]
    goodc = ~np.isnan(V) & ~C
    any_good = goodc.any(axis=1)
    first_good_i = np.where(any_good, np.argmax(goodc, axis=1), -1)
    last_good_i = np.where(any_good, P - 1 - np.argmax(goodc[:, ::-1], axis=1), -1)
    first_good_v = np.where(any_good, V[rows_all, np.maximum(first_good_i, 0)], np.nan)
    last_good_v = np.where(any_good, V[rows_all, np.maximum(last_good_i, 0)], np.nan)
    # Neighbour day edges (a day without readings has none).
    prev_has = np.r_[False, has[:-1]]
    next_has = np.r_[has[1:], False]

    def shift_prev(a, fill):
        return np.r_[np.full(1, fill, dtype=a.dtype), a[:-1]]

    def shift_next(a, fill):
        return np.r_[a[1:], np.full(1, fill, dtype=a.dtype)]

    p_last_v = np.where(prev_has, shift_prev(last_v, np.nan), np.nan)
    p_last_c = prev_has & shift_prev(last_c, False)
    n_first_v = np.where(next_has, shift_next(first_v, np.nan), np.nan)
    n_first_c = next_has & shift_next(first_c, False)
    p_n = shift_prev(n, 0)
    p_good_ok = prev_has & shift_prev(any_good, False)
    p_good_pos = np.where(p_good_ok, shift_prev(last_good_i, -1) - p_n, np.nan).astype(np.float64)
    p_good_v = np.where(p_good_ok, shift_prev(last_good_v, np.nan), np.nan)
    n_good_ok = next_has & shift_next(any_good, False)
    n_good_pos = np.where(n_good_ok, n + shift_next(first_good_i, -1), np.nan).astype(np.float64)
    n_good_v = np.where(n_good_ok, shift_next(first_good_v, np.nan), np.nan)

    # Outliers on the written days with a candidate.
    todo = np.nonzero(has & out_day)[0]
    decide = todo[has_cand[todo]]
    outlier = np.zeros((ndays, P), dtype=bool)
    if len(decide):
        v = V[decide]
        c = C[decide]
        nd = n[decide]
        lv = np.concatenate([p_last_v[decide][:, None], v[:, :-1]], axis=1)
        lc = np.concatenate([p_last_c[decide][:, None], c[:, :-1]], axis=1)
        rv = np.concatenate([v[:, 1:], np.full((len(decide), 1), np.nan)], axis=1)
        rc = np.concatenate([c[:, 1:], np.zeros((len(decide), 1), dtype=bool)], axis=1)
        ri = np.arange(len(decide))
        rv[ri, nd - 1] = n_first_v[decide]
        rc[ri, nd - 1] = n_first_c[decide]
        with np.errstate(invalid="ignore"):
            isolated = ~lc & ~rc & (v > p.neighbour_multiple * np.maximum(_nan_to_zero(lv), _nan_to_zero(rv)))
            over = v > cap_at
            high = v > high_at[decide][:, None]
        outlier[decide] = (over | (high & isolated)) & (np.arange(P)[None, :] < nd[:, None])
    n_out = outlier.sum(axis=1)
    needs_repair = has & (present - n_out < n)

    K = V.copy()
    interpolated = np.zeros(ndays, dtype=np.int64)
    fix_days = todo[needs_repair[todo]]
    if len(fix_days):
        v = V[fix_days]
        o = outlier[fix_days]
        nd = n[fix_days]
        good = np.where(o, np.nan, v)
        ok = ~np.isnan(good)
        idx = np.where(ok, np.arange(P)[None, :], -1)
        before_incl = np.maximum.accumulate(idx, axis=1)
        before = np.concatenate([np.full((len(fix_days), 1), -1), before_incl[:, :-1]], axis=1)
        idx2 = np.where(ok, np.arange(P)[None, :], P)
        after_incl = np.minimum.accumulate(idx2[:, ::-1], axis=1)[:, ::-1]
        after = np.concatenate([after_incl[:, 1:], np.full((len(fix_days), 1), P)], axis=1)
        rows = np.arange(len(fix_days))[:, None]
        i = np.arange(P)[None, :].astype(np.float64)
        prev_pos = np.where(before >= 0, before, p_good_pos[fix_days][:, None]).astype(np.float64)
        prev_val = np.where(before >= 0, good[rows, np.maximum(before, 0)], p_good_v[fix_days][:, None])
        in_next = after < P
        next_pos = np.where(in_next, after, n_good_pos[fix_days][:, None]).astype(np.float64)
        next_val = np.where(in_next, good[rows, np.minimum(after, P - 1)], n_good_v[fix_days][:, None])
        with np.errstate(invalid="ignore", divide="ignore"):
            line = prev_val + (next_val - prev_val) * (i - prev_pos) / (next_pos - prev_pos)
            short = (next_pos - prev_pos - 1) <= p.max_gap
        fallback = line
        for alt in (prev_val, next_val, fill[fix_days][:, None], day_mean[fix_days][:, None]):
            fallback = np.where(np.isnan(fallback), alt, fallback)
        k = np.where(ok, good, np.where(o, fallback, np.where(short, line, np.nan)))
        k = np.where(np.arange(P)[None, :] < nd[:, None], k, np.nan)
        K[fix_days] = k
        interpolated[fix_days] = np.sum(~np.isnan(k), axis=1) - present[fix_days]

    emit = np.nonzero(has & out_day)[0]
    ne = n[emit]
    busy = ~plain[emit]
    q = np.where(np.isnan(V[emit]), INTERPOLATED, np.where(outlier[emit], OUTLIER_REPLACED, MEASURED))
    yes = np.ones(len(emit), dtype=bool)
    days = _assemble(meter, len(emit), {
        "date": base + emit, "out": yes, "day_start_epoch": day_start[emit],
        "kwh": _ragged(K[emit], ne, yes, pa.float64()),
        "raw": _ragged(V[emit], ne, busy, pa.float64()),
        "q": _ragged(q, ne, busy, pa.int8()),
        "measured_intervals": present[emit] - n_out[emit], "outlier_intervals": n_out[emit],
        "interpolated_intervals": np.where(needs_repair[emit], interpolated[emit], 0),
        "day_max_kwh": day_max[emit], "day_mean_kwh": day_mean[emit],
        "outlier_scale_kwh": scale[emit], "fill_level_kwh": fill[emit]})
    duplicates = _assemble(meter, len(dup_day), {
        "date": dup_bd, "out": np.zeros(len(dup_day), dtype=bool),
        "reason": np.full(len(dup_day), p.duplicate_reason),
        "ts_us": (day_start[dup_day] + dup_pos.astype(np.int64) * p.step_seconds) * 1_000_000,
        "reading_kwh": dup_kwh, "local_date": base + dup_day})
    return pa.concat_tables([days, quarantined, duplicates])


def clean_partition(batches: Iterator[pa.RecordBatch], p: KernelParams, meters_per_batch: int = 256
                    ) -> Iterator[pa.RecordBatch]:
    """One task's rows, hash-partitioned by meter so that each meter is whole in one task (``mapInArrow``)
    -> :func:`clean_meter` of each meter. The task's rows are grouped here (a stable numpy sort of the
    meters' dictionary codes) instead of by a Spark sort before the call: the task holds its partition in
    memory, so the caller sizes partitions by rows."""
    batches = [b for b in batches if b.num_rows]
    if not batches:
        return
    table = pa.Table.from_batches(batches)
    codes = table.column("meter_id").combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    table = table.take(pa.array(order))
    bounds = np.r_[0, np.nonzero(np.diff(codes[order]))[0] + 1, len(order)]
    done: list[pa.Table] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        done.append(clean_meter(table.slice(int(a), int(b - a)), p))
        if len(done) == meters_per_batch:
            yield from pa.concat_tables(done).to_batches()
            done = []
    if done:
        yield from pa.concat_tables(done).to_batches()
