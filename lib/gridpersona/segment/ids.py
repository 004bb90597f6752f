"""Stable segment ids: new centroids matched one-to-one to the previous model's (numpy, driver side).

New centroids are matched one-to-one to the previous model's centroids by
minimum total Euclidean distance (Hungarian algorithm, :func:`match_ids`);
matched clusters keep the old id, unmatched ones get fresh ids above every
id the previous model used, in a canonical order (label rule order, then the
weekday peak slot, then the centroid itself) so a first training gives the
same ids whatever order KMeans returned its clusters in.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np


def hungarian(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one assignment of rows to columns of ``cost`` (rectangular allowed).

    Returns (row, column) pairs, min(rows, cols) of them, sorted by row. The
    classic O(n^2 m) shortest-augmenting-path algorithm with potentials; k is
    small (tens), so plain Python is fast enough and needs no scipy.
    """
    cost = np.asarray(cost, dtype=float)
    transposed = cost.shape[0] > cost.shape[1]
    a = cost.T if transposed else cost
    n, m = a.shape
    if n == 0:
        return []
    inf = float("inf")
    u = [0.0] * (n + 1)
    v = [0.0] * (m + 1)
    p = [0] * (m + 1)  # p[j]: row (1-based) matched to column j
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = a[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    pairs = [(p[j] - 1, j - 1) for j in range(1, m + 1) if p[j]]
    if transposed:
        pairs = [(c, r) for r, c in pairs]
    return sorted(pairs)


def canonical_order(centroids: Sequence[Sequence[float]], label_ranks: Sequence[int], slots: int) -> list[int]:
    """Indexes of ``centroids`` in a canonical order: label rule position, weekday peak slot, then the values."""
    keys = []
    for i, c in enumerate(centroids):
        arr = np.asarray(c, dtype=float)
        keys.append((label_ranks[i], int(np.argmax(arr[:slots])), tuple(np.round(arr, 9)), i))
    return [k[-1] for k in sorted(keys)]


def match_ids(new_centroids: Sequence[Sequence[float]], label_ranks: Sequence[int],
              previous: Mapping[int, Sequence[float]], *, slots: int, reserved: Iterable[int] = ()) -> list[int]:
    """Segment id for each new centroid, stable with respect to ``previous`` ({segment id: centroid}).

    Matched (Hungarian, Euclidean) new centroids take the previous ids; the rest
    get fresh ids above every previous and reserved id, in canonical order.
    """
    k = len(new_centroids)
    ids: list[int | None] = [None] * k
    prev_ids = sorted(previous)
    if prev_ids and k:
        new = np.asarray(new_centroids, dtype=float)
        old = np.asarray([previous[i] for i in prev_ids], dtype=float)
        if new.shape[1] == old.shape[1]:
            cost = np.sqrt(((new[:, None, :] - old[None, :, :]) ** 2).sum(axis=2))
            for r, c in hungarian(cost):
                ids[r] = prev_ids[c]
    next_id = max([*prev_ids, *reserved, 0]) + 1 if (prev_ids or list(reserved)) else 1
    for i in canonical_order(new_centroids, label_ranks, slots):
        if ids[i] is None:
            ids[i] = next_id
            next_id += 1
    return [int(i) for i in ids]  # type: ignore[arg-type]
