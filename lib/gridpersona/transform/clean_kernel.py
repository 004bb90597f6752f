"""Clean's per-meter decisions in numpy, over all the accepted readings of each meter in the run.

:func:`gridpersona.transform.clean.clean_interval_readings` sends every row to its meter's task (a hash
shuffle by meter, then ``mapInArrow``); :func:`clean_partition` groups the task's rows by meter and hands
them, a few hundred meters at a time, to :func:`clean_meters`, which lays them out as a meters x days x
positions cube and makes every decision of the module docstring of :mod:`gridpersona.transform.clean`
with whole-array operations: duplicates, the look-back scales, candidates, isolated spikes,
interpolation. No Spark here: the functions take and return Arrow data, so a unit test calls them on a
hand-made table.

Input rows (every row of each meter given), columns ``meter_id``, ``d`` (the local day, days since 1970-01-01),
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
import pyarrow.compute as pc

from gridpersona.contracts.silver import QUALITY_CODES, QUARANTINE_REASONS

STAT_MAX, STAT_MEAN, CAPACITY, QUARANTINED = -1, -2, -3, -4

# Codes are indices into the contract's names (silver.ami_clean.quality, silver.ami_quarantine.reason).
MEASURED, OUTLIER_REPLACED, INTERPOLATED = (QUALITY_CODES.index(q)
                                            for q in ("measured", "outlier_replaced", "interpolated"))
DUPLICATE = QUARANTINE_REASONS.index("duplicate")

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
    """What :func:`clean_meters` needs besides the rows.

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


def _median_windows(values: np.ndarray, lookback: int) -> np.ndarray:
    """``values`` (meters x days) -> per meter and day x: the median of the non-NaN values of days
    x - lookback .. x - 1 (NaN when none)."""
    nm, ndays = values.shape
    padded = np.concatenate([np.full((nm, lookback), np.nan), values], axis=1)
    win = np.lib.stride_tricks.sliding_window_view(padded, lookback, axis=1)[:, :ndays]  # days x-lookback .. x-1
    s = np.sort(win, axis=2)  # NaN last
    k = np.sum(~np.isnan(win), axis=2)
    lo = np.take_along_axis(s, np.maximum((k - 1) // 2, 0)[:, :, None], axis=2)[:, :, 0]
    hi = np.take_along_axis(s, np.minimum(k // 2, lookback - 1)[:, :, None], axis=2)[:, :, 0]
    return np.where(k > 0, (lo + hi) / 2, np.nan)


def _candidate(x: np.ndarray, high_at: np.ndarray, cap_at: np.ndarray) -> np.ndarray:
    """A reading above its day's high level or above its meter's capacity bound (NaN: neither, so a missing
    reading or an unknown capacity is never a candidate)."""
    with np.errstate(invalid="ignore"):
        return (x > high_at) | (x > cap_at)


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


def _assemble(meters: pa.Array, n: int, cols: dict) -> pa.Table:
    """A table of the output schema with ``n`` rows: ``meters`` (the meter of each row), ``cols`` (numpy
    arrays or Arrow arrays) and nulls in the other columns. NaN in a double column is null."""
    out = []
    for field in _ARROW_SCHEMA:
        if field.name == "meter_id":
            out.append(meters)
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


def _shift(a: np.ndarray, by: int, fill) -> np.ndarray:
    """``a`` (meters x days) moved ``by`` days later (+1: each day sees the day before), ``fill`` at the edge."""
    out = np.full_like(a, fill)
    if by > 0:
        out[:, by:] = a[:, :-by]
    else:
        out[:, :by] = a[:, -by:]
    return out


def clean_meters(table: pa.Table, p: KernelParams) -> pa.Table:
    """The rows of a set of meters (whole: every row of each) -> their written days and their quarantined
    rows (see the module docstring). The meters are cleaned together, as a meters x days x positions cube:
    the per-meter cost is a share of whole-array operations, not a Python call of its own."""
    pos_all = table.column("pos").to_numpy(zero_copy_only=False).astype(np.int64)
    # Rows the row checks quarantined pass through, as they are.
    held = pa.array(np.nonzero(pos_all == QUARANTINED)[0])
    quarantined = _assemble(table.column("meter_id").take(held), len(held), {
        "date": table.column("bd").take(held).cast(pa.int32()).cast(pa.date32()),
        "reason": table.column("r").take(held),
        "ts_us": table.column("us").take(held),
        "reading_kwh": table.column("kwh").take(held),
        "local_date": table.column("d").take(held).cast(pa.int32()).cast(pa.date32()),
        "out": np.zeros(len(held), dtype=bool)})
    use = np.nonzero(pos_all >= CAPACITY)[0]  # readings, statistics and capacities
    if not (pos_all >= 0).any():
        return quarantined
    encoded = table.column("meter_id").take(pa.array(use)).combine_chunks().dictionary_encode()
    names = encoded.dictionary
    mi_all = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    nm = len(names)
    pos_u = pos_all[use]
    d_u = table.column("d").take(pa.array(use)).to_numpy(zero_copy_only=False)
    kwh_u = table.column("kwh").take(pa.array(use)).to_numpy(zero_copy_only=False).astype(np.float64)
    bd_u = table.column("bd").take(pa.array(use)).to_numpy(zero_copy_only=False)

    cap = np.full(nm, np.nan)
    caps = pos_u == CAPACITY
    if caps.any():
        np.fmax.at(cap, mi_all[caps], kwh_u[caps])
    cap_at = cap * p.capacity_factor  # NaN: no capacity bound
    L = p.lookback_days
    ncal = len(p.day_start)
    # Day axis: the look-back before the calendar's first day, then the calendar.
    base = p.first_day - L - 1
    ndays = ncal + L + 1
    P = max(p.expected)
    n_day = np.concatenate([np.zeros(L + 1, dtype=np.int64), np.asarray(p.expected, dtype=np.int64)])
    out_day = np.concatenate([np.zeros(L + 1, dtype=bool), np.asarray(p.out, dtype=bool)])
    start_day = np.concatenate([np.zeros(L + 1, dtype=np.int64), np.asarray(p.day_start, dtype=np.int64)])

    read = pos_u >= 0
    mi = mi_all[read]
    di = d_u[read].astype(np.int64) - base
    pi = pos_u[read]
    kv = kwh_u[read]
    bd = bd_u[read]
    flat = (mi * ndays + di) * P + pi
    cnt = np.bincount(flat, minlength=nm * ndays * P).reshape(nm, ndays, P)
    readings = cnt.sum(axis=2)
    has = readings > 0
    present = (cnt > 0).sum(axis=2)
    # The largest reading of each position (the only one where an instant is read once).
    M = np.full(nm * ndays * P, np.nan)
    M[flat] = kv
    multi = cnt.reshape(-1)[flat] > 1
    if multi.any():
        np.fmax.at(M, flat[multi], kv[multi])
    M = M.reshape(nm, ndays, P)

    day_max = np.where(has, np.max(np.where(np.isnan(M), -np.inf, M), axis=2), np.nan)
    # 0.0 + x0 + x1 + ... in position order (an accumulate is sequential; a sum would pair the terms).
    zeros = np.zeros((nm, ndays, 1))
    total = np.cumsum(np.concatenate([zeros, _nan_to_zero(M)], axis=2), axis=2)[:, :, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        day_mean = np.where(has, total / np.maximum(present, 1), np.nan)

    # Look-back statistics: the days read, then the stored days the run does not read.
    stat_max, stat_mean = day_max.copy(), day_mean.copy()
    for code, target in ((STAT_MAX, stat_max), (STAT_MEAN, stat_mean)):
        rows = pos_u == code
        if rows.any():
            sm, sd, sv = mi_all[rows], d_u[rows].astype(np.int64) - base, kwh_u[rows]
            keep = (sd >= 0) & (sd < ndays)
            sm, sd, sv = sm[keep], sd[keep], sv[keep]
            target[sm, sd] = np.where(has[sm, sd], target[sm, sd], sv)
    # Only days with a stored or computed largest reading count (a stored null is no value).
    stat_mean = np.where(np.isnan(stat_max), np.nan, stat_mean)
    scale = _median_windows(stat_max, L)
    fill = _median_windows(stat_mean, L)
    high_at = p.scale_multiple * np.maximum(np.where(np.isnan(scale), 0.0, scale), p.floor_kwh)

    # Duplicates: per instant read more than once, the first non-candidate by kWh descending is kept.
    V = M.copy()
    dup_m = dup_day = np.zeros(0, dtype=np.int64)
    dup_pos, dup_kwh, dup_bd = np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int32)
    if (readings > present).any():  # only then: a set of meters without a second reading skips the ranking
        idx = np.nonzero(multi)[0]
        rm, rd, rp, rk, rb = mi[idx], di[idx], pi[idx], kv[idx], bd[idx]
        c = _candidate(rk, high_at[rm, rd], cap_at[rm])
        # Per instant: non-candidate first, then kWh descending.
        o = np.lexsort((-rk, c, rp, rd, rm))
        rm, rd, rp, rk, rb = rm[o], rd[o], rp[o], rk[o], rb[o]
        first = np.r_[True, (rm[1:] != rm[:-1]) | (rd[1:] != rd[:-1]) | (rp[1:] != rp[:-1])]
        V[rm[first], rd[first], rp[first]] = rk[first]
        dup_m, dup_day, dup_pos, dup_kwh = rm[~first], rd[~first], rp[~first], rk[~first]
        dup_bd = rb[~first].astype(np.int32)

    V = np.where(np.arange(P)[None, None, :] < n_day[None, :, None], V, np.nan)
    C = _candidate(V, high_at[:, :, None], cap_at[:, None, None])
    has_cand = has & _candidate(day_max, high_at, cap_at[:, None])
    n = np.broadcast_to(n_day, (nm, ndays))
    plain = has & (present == n) & ~has_cand & (readings == present)

    # Day edges (what a neighbour day reads): first/last reading, first/last non-candidate reading.
    last = np.maximum(n_day - 1, 0)
    days_ix = np.arange(ndays)
    first_v, first_c = V[:, :, 0], C[:, :, 0]
    last_v, last_c = V[:, days_ix, last], C[:, days_ix, last]
    goodc = ~np.isnan(V) & ~C
    any_good = goodc.any(axis=2)
    first_good_i = np.where(any_good, np.argmax(goodc, axis=2), -1)
    last_good_i = np.where(any_good, P - 1 - np.argmax(goodc[:, :, ::-1], axis=2), -1)
    mm, dd = np.meshgrid(np.arange(nm), days_ix, indexing="ij")
    first_good_v = np.where(any_good, V[mm, dd, np.maximum(first_good_i, 0)], np.nan)
    last_good_v = np.where(any_good, V[mm, dd, np.maximum(last_good_i, 0)], np.nan)
    # Neighbour days' edges (a day without readings has none).
    prev_has, next_has = _shift(has, 1, False), _shift(has, -1, False)
    p_last_v = np.where(prev_has, _shift(last_v, 1, np.nan), np.nan)
    p_last_c = prev_has & _shift(last_c, 1, False)
    n_first_v = np.where(next_has, _shift(first_v, -1, np.nan), np.nan)
    n_first_c = next_has & _shift(first_c, -1, False)
    p_good_ok = prev_has & _shift(any_good, 1, False)
    p_good_pos = np.where(p_good_ok, _shift(last_good_i, 1, -1) - _shift(n.copy(), 1, 0), np.nan).astype(np.float64)
    p_good_v = np.where(p_good_ok, _shift(last_good_v, 1, np.nan), np.nan)
    n_good_ok = next_has & _shift(any_good, -1, False)
    n_good_pos = np.where(n_good_ok, n + _shift(first_good_i, -1, -1), np.nan).astype(np.float64)
    n_good_v = np.where(n_good_ok, _shift(first_good_v, -1, np.nan), np.nan)

    # From here on, one row per meter-day: r = meter x ndays + day.
    R = nm * ndays
    V2, C2 = V.reshape(R, P), C.reshape(R, P)
    n1, has1, present1 = n.reshape(R), has.reshape(R), present.reshape(R)
    out1 = np.broadcast_to(out_day, (nm, ndays)).reshape(R)
    high1 = high_at.reshape(R)
    cap1 = np.repeat(cap_at, ndays)
    fill1, mean1 = fill.reshape(R), day_mean.reshape(R)

    # Outliers on the written days with a candidate.
    todo = np.nonzero(has1 & out1)[0]
    decide = todo[has_cand.reshape(R)[todo]]
    outlier = np.zeros((R, P), dtype=bool)
    if len(decide):
        v, c, nd = V2[decide], C2[decide], n1[decide]
        lv = np.concatenate([p_last_v.reshape(R)[decide][:, None], v[:, :-1]], axis=1)
        lc = np.concatenate([p_last_c.reshape(R)[decide][:, None], c[:, :-1]], axis=1)
        rv = np.concatenate([v[:, 1:], np.full((len(decide), 1), np.nan)], axis=1)
        rc = np.concatenate([c[:, 1:], np.zeros((len(decide), 1), dtype=bool)], axis=1)
        ri = np.arange(len(decide))
        rv[ri, nd - 1] = n_first_v.reshape(R)[decide]
        rc[ri, nd - 1] = n_first_c.reshape(R)[decide]
        with np.errstate(invalid="ignore"):
            isolated = ~lc & ~rc & (v > p.neighbour_multiple * np.maximum(_nan_to_zero(lv), _nan_to_zero(rv)))
            over = v > cap1[decide][:, None]
            high = v > high1[decide][:, None]
        outlier[decide] = (over | (high & isolated)) & (np.arange(P)[None, :] < nd[:, None])
    n_out = outlier.sum(axis=1)
    needs_repair = has1 & (present1 - n_out < n1)

    K = V2.copy()
    interpolated = np.zeros(R, dtype=np.int64)
    fix = todo[needs_repair[todo]]
    if len(fix):
        v, o, nd = V2[fix], outlier[fix], n1[fix]
        good = np.where(o, np.nan, v)
        ok = ~np.isnan(good)
        cols = np.arange(P)[None, :]
        before_incl = np.maximum.accumulate(np.where(ok, cols, -1), axis=1)
        before = np.concatenate([np.full((len(fix), 1), -1), before_incl[:, :-1]], axis=1)
        after_incl = np.minimum.accumulate(np.where(ok, cols, P)[:, ::-1], axis=1)[:, ::-1]
        after = np.concatenate([after_incl[:, 1:], np.full((len(fix), 1), P)], axis=1)
        rows = np.arange(len(fix))[:, None]
        i = cols.astype(np.float64)
        prev_pos = np.where(before >= 0, before, p_good_pos.reshape(R)[fix][:, None]).astype(np.float64)
        prev_val = np.where(before >= 0, good[rows, np.maximum(before, 0)], p_good_v.reshape(R)[fix][:, None])
        in_next = after < P
        next_pos = np.where(in_next, after, n_good_pos.reshape(R)[fix][:, None]).astype(np.float64)
        next_val = np.where(in_next, good[rows, np.minimum(after, P - 1)], n_good_v.reshape(R)[fix][:, None])
        with np.errstate(invalid="ignore", divide="ignore"):
            line = prev_val + (next_val - prev_val) * (i - prev_pos) / (next_pos - prev_pos)
            short = (next_pos - prev_pos - 1) <= p.max_gap
        fallback = line
        for alt in (prev_val, next_val, fill1[fix][:, None], mean1[fix][:, None]):
            fallback = np.where(np.isnan(fallback), alt, fallback)
        k = np.where(ok, good, np.where(o, fallback, np.where(short, line, np.nan)))
        K[fix] = np.where(cols < nd[:, None], k, np.nan)
        interpolated[fix] = np.sum(~np.isnan(K[fix]), axis=1) - present1[fix]

    emit = todo
    ne = n1[emit]
    busy = ~plain.reshape(R)[emit]
    q = np.where(np.isnan(V2[emit]), INTERPOLATED, np.where(outlier[emit], OUTLIER_REPLACED, MEASURED))
    yes = np.ones(len(emit), dtype=bool)
    em, ed = emit // ndays, emit % ndays
    days = _assemble(names.take(pa.array(em)), len(emit), {
        "date": base + ed, "out": yes, "day_start_epoch": start_day[ed],
        "kwh": _ragged(K[emit], ne, yes, pa.float64()),
        "raw": _ragged(V2[emit], ne, busy, pa.float64()),
        "q": _ragged(q, ne, busy, pa.int8()),
        "measured_intervals": present1[emit] - n_out[emit], "outlier_intervals": n_out[emit],
        "interpolated_intervals": np.where(needs_repair[emit], interpolated[emit], 0),
        "day_max_kwh": day_max.reshape(R)[emit], "day_mean_kwh": mean1[emit],
        "outlier_scale_kwh": scale.reshape(R)[emit], "fill_level_kwh": fill1[emit]})
    duplicates = _assemble(names.take(pa.array(dup_m)), len(dup_day), {
        "date": dup_bd, "out": np.zeros(len(dup_day), dtype=bool),
        "reason": np.full(len(dup_day), DUPLICATE),
        "ts_us": (start_day[dup_day] + dup_pos.astype(np.int64) * p.step_seconds) * 1_000_000,
        "reading_kwh": dup_kwh, "local_date": base + dup_day})
    return pa.concat_tables([days, quarantined, duplicates])


def clean_partition(batches: Iterator[pa.RecordBatch], p: KernelParams, meters_per_call: int = 256
                    ) -> Iterator[pa.RecordBatch]:
    """One task's rows, hash-partitioned by meter so that each meter is whole in one task (``mapInArrow``)
    -> :func:`clean_meters` of each group of ``meters_per_call`` meters (bounding the cube's memory). The
    task's rows are grouped here (a stable numpy sort of the meters' dictionary codes) instead of by a
    Spark sort before the call: the task holds its partition in memory, so the caller sizes partitions by
    rows."""
    batches = [b for b in batches if b.num_rows]
    if not batches:
        return
    table = pa.Table.from_batches(batches)
    del batches
    codes = table.column("meter_id").combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    table = table.take(pa.array(order))
    starts = np.r_[0, np.nonzero(np.diff(codes[order]))[0] + 1]
    bounds = np.r_[starts[::meters_per_call], len(order)]
    parts = [clean_meters(table.slice(int(a), int(b - a)), p) for a, b in zip(bounds[:-1], bounds[1:])]
    del table
    out = pa.concat_tables(parts)
    del parts
    # Date-major (a stable sort: meters stay in order within a date): the date-partitioned writers then
    # receive each date's rows together instead of switching file at every meter-day.
    order = pc.sort_indices(out, sort_keys=[("date", "ascending")])
    for start in range(0, len(order), 16_384):  # taken a chunk at a time: no second copy of the whole output
        yield from out.take(order[start:start + 16_384]).to_batches()


# ------------------------------------------------------------------ clean rows
CLEAN_ROWS_SCHEMA = pa.schema([
    pa.field("meter_id", pa.string(), nullable=False), pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("date", pa.date32(), nullable=False), pa.field("slot", pa.int32(), nullable=False),
    pa.field("kwh", pa.float64()), pa.field("kwh_raw", pa.float64()), pa.field("quality", pa.string(), nullable=False)])


@dataclass(frozen=True)
class DayRowsParams:
    """What :func:`clean_rows` needs besides the written days: the interval and, for the local days whose
    wall-clock slots differ from the positions (the two DST change days of a year), the slot of each
    position (keyed by the day's ``day_start_epoch``)."""

    step_seconds: int
    slots: tuple[tuple[int, tuple[int, ...]], ...] = ()


def clean_rows(days: pa.RecordBatch | pa.Table, p: DayRowsParams) -> pa.Table:
    """Written meter-days (``meter_id``, ``date``, ``day_start_epoch``, ``kwh``, ``raw``, ``q`` of
    :data:`OUTPUT_SCHEMA`) -> silver.ami_clean rows (:data:`CLEAN_ROWS_SCHEMA`), one per position with a
    value, in the days' order and position order. A day without ``raw`` (plain: complete, read once per
    instant, no candidate) reads its ``kwh`` as raw and is all ``measured``."""
    n = days.num_rows
    kwh = days.column("kwh")
    lengths = pc.fill_null(pc.list_value_length(kwh), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(kwh)
    day = np.repeat(np.arange(n), lengths)
    starts = np.cumsum(lengths) - lengths
    pos = np.arange(len(day), dtype=np.int64) - np.repeat(starts, lengths)
    # An absent raw list / quality list means "as kwh" / all measured; element nulls stay (an interpolated
    # position has no raw reading).
    has_kwh = pc.is_valid(kwh).to_numpy(zero_copy_only=False)
    for name in ("raw", "q"):  # a day's raw and quality lists, when present, line up with its readings
        given = days.column(name)
        present = pc.is_valid(given).to_numpy(zero_copy_only=False)
        given_lengths = pc.fill_null(pc.list_value_length(given), 0).to_numpy(zero_copy_only=False)
        if (present & ((given_lengths != lengths) | ~has_kwh)).any():
            raise ValueError(f"clean_rows: a day's {name!r} list does not match its 'kwh' list")
    raw_list = pc.if_else(pc.is_null(days.column("raw")), kwh, days.column("raw"))
    raw = pc.list_flatten(raw_list)
    q_list = days.column("q")
    has_q = pc.is_valid(q_list).to_numpy(zero_copy_only=False)
    q = np.full(len(day), MEASURED, dtype=np.int8)
    q[np.repeat(has_q, lengths)] = pc.list_flatten(q_list).to_numpy(zero_copy_only=False)
    keep = pc.is_valid(flat).to_numpy(zero_copy_only=False)
    day, pos, q = day[keep], pos[keep], q[keep]
    take = pa.array(np.nonzero(keep)[0])
    start = days.column("day_start_epoch").to_numpy(zero_copy_only=False)[day]
    slot = pos.astype(np.int32)
    for day_start, slots in p.slots:  # DST change days: wall-clock slot of each position
        on = start == day_start
        if on.any():
            slot[on] = np.asarray(slots, dtype=np.int32)[pos[on]]
    codes = pa.array(QUALITY_CODES, pa.string())
    return pa.Table.from_arrays([
        days.column("meter_id").take(pa.array(day)),
        pa.array((start + pos * p.step_seconds) * 1_000_000, pa.timestamp("us", tz="UTC")),
        days.column("date").take(pa.array(day)),
        pa.array(slot), flat.take(take), raw.take(take), codes.take(pa.array(q)),
    ], schema=CLEAN_ROWS_SCHEMA)
