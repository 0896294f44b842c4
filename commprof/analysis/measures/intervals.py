"""Interval arithmetic on numpy arrays: unions, and covered length inside windows.

All functions take and return int64/float64 nanosecond arrays; none loops in Python per interval
(or per group).
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def union(starts, ends) -> tuple[np.ndarray, np.ndarray]:
    """Merge intervals [start, end) into sorted, disjoint ones.  Empty/negative ones are dropped."""
    s = np.asarray(starts, dtype="float64")
    e = np.asarray(ends, dtype="float64")
    keep = np.isfinite(s) & np.isfinite(e) & (e > s)
    s, e = s[keep], e[keep]
    if not len(s):
        return s, e
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    reach = np.maximum.accumulate(e)
    # a new block starts where the start lies beyond everything reached so far
    new = np.empty(len(s), dtype=bool)
    new[0] = True
    new[1:] = s[1:] > reach[:-1]
    idx = np.flatnonzero(new)
    block_end = np.append(idx[1:] - 1, len(s) - 1)
    return s[idx], reach[block_end]


def covered(ms: np.ndarray, me: np.ndarray, a, b) -> np.ndarray:
    """Length of the union (``ms``, ``me`` from :func:`union`) inside each window [a, b)."""
    a = np.asarray(a, dtype="float64")
    b = np.asarray(b, dtype="float64")
    return np.maximum(_cumulative(ms, me, b) - _cumulative(ms, me, a), 0.0)


def _cumulative(ms, me, x):
    """Covered length of the union in (-inf, x]."""
    if not len(ms):
        return np.zeros_like(x, dtype="float64")
    lengths = me - ms
    before = np.concatenate(([0.0], np.cumsum(lengths)))
    i = np.searchsorted(ms, x, side="right") - 1  # last interval starting at or before x
    inside = np.where(i >= 0, np.clip(x - ms[np.maximum(i, 0)], 0.0, lengths[np.maximum(i, 0)]), 0.0)
    return np.where(i >= 0, before[np.maximum(i, 0)] + inside, 0.0)


def clip(ms, me, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """The parts of a disjoint union that lie inside [a, b)."""
    s = np.maximum(ms, a)
    e = np.minimum(me, b)
    keep = e > s
    return s[keep], e[keep]


def union_length_by_group(groups, starts, ends, n_groups: int) -> np.ndarray:
    """|∪ [start, end)| of the intervals of each group 0 … n_groups-1, exact in int64.

    For integer ns times of any magnitude (Unix-epoch ns lose precision in :func:`union`'s
    float64).  Rows with a negative group or ``end <= start`` count for nothing.
    """
    g = np.asarray(groups, dtype="int64")
    s = np.asarray(starts, dtype="int64")
    e = np.asarray(ends, dtype="int64")
    keep = (e > s) & (g >= 0) & (g < n_groups)
    g, s, e = g[keep], s[keep], e[keep]
    out = np.zeros(n_groups, dtype="int64")
    if not len(s):
        return out
    order = np.lexsort((s, g))
    g, s, e = g[order], s[order], e[order]
    first = np.empty(len(g), dtype=bool)
    first[0] = True
    first[1:] = g[1:] != g[:-1]
    reach = pd.Series(e).groupby(g).cummax().to_numpy()  # running max of the ends, per group
    new = first.copy()
    new[1:] |= s[1:] > reach[:-1]
    idx = np.flatnonzero(new)
    block_end = np.append(idx[1:] - 1, len(s) - 1)
    np.add.at(out, g[idx], reach[block_end] - s[idx])
    return out
