"""Global nearest-neighbour assignment of detections to tracks.

The tracker gives a (tracks x detections) matrix of Mahalanobis distances,
infinite outside the gate, and the cost of leaving a track without a
detection (`miss_cost`, the gate itself). The assignment minimises

    sum over assigned pairs of distance + miss_cost x unassigned tracks,

which is what Stone Soup's GNNWith2DAssignment minimises with a distance
hypothesiser whose missed distance is the gate; so both trackers make the
same associations on the same detections.

The gated pairs split into independent clusters (connected components of the
bipartite graph). Almost every cluster is one track and one detection, so
only the rare crowded cluster reaches the Hungarian method below, which runs
in pure Python on a few rows: scipy is a test dependency, not a flight one.
"""
from __future__ import annotations

import math

import numpy as np


def hungarian(cost: list[list[float]]) -> list[int]:
    """Minimum-cost assignment of every row of an n x m matrix (n <= m, finite costs).

    Returns the column of each row. Shortest augmenting paths with row and
    column potentials (Kuhn-Munkres, O(n^2 m)).
    """
    n = len(cost)
    m = len(cost[0]) if n else 0
    if n > m:
        raise ValueError(f"hungarian needs rows <= columns, got {n} x {m}")
    inf = math.inf
    u = [0.0] * (n + 1)           # row potentials (1-based; 0 is the virtual start)
    v = [0.0] * (m + 1)           # column potentials
    row_of = [0] * (m + 1)        # row assigned to each column, 0 = none
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        row_of[0] = i
        j0 = 0
        minv = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0 = row_of[j0]
            delta = inf
            j1 = 0
            row = cost[i0 - 1]
            ui0 = u[i0]
            for j in range(1, m + 1):
                if not used[j]:
                    reduced = row[j - 1] - ui0 - v[j]
                    if reduced < minv[j]:
                        minv[j] = reduced
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[row_of[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if row_of[j0] == 0:
                break
        while j0:                      # flip the augmenting path
            j1 = way[j0]
            row_of[j0] = row_of[j1]
            j0 = j1
    column = [0] * n
    for j in range(1, m + 1):
        if row_of[j]:
            column[row_of[j] - 1] = j - 1
    return column


def _clusters(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> list[tuple[list[int], list[int]]]:
    """Connected components of the gated pairs: ([track rows], [detection columns]) each."""
    parent = list(range(n_rows + int(cols.max()) + 1)) if len(cols) else []

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for r, c in zip(rows.tolist(), cols.tolist()):
        a, b = find(r), find(n_rows + c)
        if a != b:
            parent[a] = b
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for r in sorted(set(rows.tolist())):
        groups.setdefault(find(r), ([], []))[0].append(r)
    for c in sorted(set(cols.tolist())):
        groups.setdefault(find(n_rows + c), ([], []))[1].append(c)
    return list(groups.values())


def assign(distance: np.ndarray, miss_cost: float) -> tuple[np.ndarray, np.ndarray]:
    """(track rows, detection columns) of the assignment; pairs must lie inside the gate (< miss_cost)."""
    distance = np.asarray(distance, dtype=np.float64)
    if distance.ndim != 2:
        raise ValueError(f"distance must be a 2-D tracks x detections matrix, got shape {distance.shape}")
    if not math.isfinite(miss_cost) or miss_cost <= 0:
        raise ValueError(f"miss_cost must be finite and positive, got {miss_cost!r}")
    rows, cols = np.divmod(np.flatnonzero(distance < miss_cost), distance.shape[1])   # row order, contiguous
    if not len(rows):
        return np.empty(0, np.intp), np.empty(0, np.intp)
    out_rows: list[int] = []
    out_cols: list[int] = []
    # Fast path: a track and a detection that gate with nothing else.
    row_count = np.bincount(rows, minlength=distance.shape[0])
    col_count = np.bincount(cols, minlength=distance.shape[1])
    alone = (row_count[rows] == 1) & (col_count[cols] == 1)
    if alone.all():     # the common frame: the pairs are in row order already
        return rows, cols
    out_rows.extend(rows[alone].tolist())
    out_cols.extend(cols[alone].tolist())
    crowded = ~alone
    if crowded.any():
        for track_rows, det_cols in _clusters(rows[crowded], cols[crowded], distance.shape[0]):
            # Gain of pairing below the miss cost (negative = better than a miss); 0 = not paired.
            block = distance[np.ix_(track_rows, det_cols)] - miss_cost
            block = np.where(block < 0, block, 0.0)
            transpose = len(track_rows) > len(det_cols)
            matrix = (block.T if transpose else block).tolist()
            for a, b in enumerate(hungarian(matrix)):
                r, c = (b, a) if transpose else (a, b)
                if block[r, c] < 0:
                    out_rows.append(track_rows[r])
                    out_cols.append(det_cols[c])
    order = np.argsort(out_rows, kind="stable")
    return np.asarray(out_rows, np.intp)[order], np.asarray(out_cols, np.intp)[order]
