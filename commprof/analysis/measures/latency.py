"""Latency quantiles of call durations in bounded memory: a mergeable DDSketch per key.

Each rank keeps, per (op, group size), a :class:`Latency`: a DDSketch (DataDog's ``ddsketch``
package, logarithmic mapping, relative accuracy :data:`RELATIVE_ACCURACY`) plus the exact count,
minimum and maximum.  Its size depends on the range of the durations (one bin per factor
γ = (1 + α) / (1 − α) ≈ 1.02 between the shortest and the longest call), not on their number.
Sketches of ranks merge exactly: the merge is the sketch of all the values.

:func:`quantile` is numpy's default (linear) quantile: rank r = q·(n − 1) between the order
statistics x⌊r⌋ and x⌈r⌉.  The sketch returns each of those within a relative error α, so the
interpolated value is within α of the exact quantile (durations are ≥ 0), and it is clamped to the
exact [min, max].  ``max`` itself is exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ddsketch import DDSketch

RELATIVE_ACCURACY = 0.01  # α: |sketch quantile − exact quantile| ≤ α × exact quantile


@dataclass
class Latency:
    """Durations (ns) of one key on one rank, or merged over ranks."""

    sketch: DDSketch
    count: int
    min: float
    max: float


def latency_of(values: np.ndarray) -> Latency:
    """The :class:`Latency` of an array of durations (vectorised: one sketch update per bin)."""
    v = np.asarray(values, dtype="float64")
    v = v[np.isfinite(v)]  # defensive: a call without an end has no duration
    sk = DDSketch(RELATIVE_ACCURACY)
    if not len(v):
        return Latency(sk, 0, math.inf, -math.inf)
    m = sk._mapping  # the bin keys of the sketch's own mapping (LogarithmicMapping), in numpy
    pos = v > m.min_possible
    keys = np.ceil(np.log2(v[pos]) * m._multiplier) + m._offset
    uk, counts = np.unique(keys, return_counts=True)
    for k, c in zip(uk.tolist(), counts.tolist()):
        sk.add(m.value(int(k)), float(c))  # the bin's representative lands in bin k
    if not pos.all():  # zeros (and, defensively, negatives): few, added as they are
        uv, counts = np.unique(v[~pos], return_counts=True)
        for x, c in zip(uv.tolist(), counts.tolist()):
            sk.add(x, float(c))
    return Latency(sk, int(len(v)), float(v.min()), float(v.max()))


def merge(parts: list[Latency]) -> Latency:
    """One :class:`Latency` of several (ranks'); the inputs are left unchanged."""
    sk = DDSketch(RELATIVE_ACCURACY)
    for p in parts:
        if p.count:
            sk.merge(p.sketch)
    return Latency(sk, sum(p.count for p in parts), min((p.min for p in parts), default=math.inf),
                   max((p.max for p in parts), default=-math.inf))


def _order_statistic(lat: Latency, i: int) -> float:
    """x_i (0-based) within α: the rank i + ½ falls inside x_i's unit of the cumulative count."""
    q = min((i + 0.5) / (lat.count - 1), 1.0)
    return float(lat.sketch.get_quantile_value(q))


def quantile(lat: Latency, q: float) -> float:
    """numpy's linear ``q``-quantile of the durations, within :data:`RELATIVE_ACCURACY`."""
    if lat.count == 0:
        return math.nan
    if lat.count == 1 or q >= 1:
        return lat.max
    r = q * (lat.count - 1)
    lo = math.floor(r)
    a = _order_statistic(lat, lo)
    frac = r - lo
    b = _order_statistic(lat, lo + 1) if frac > 0 else a
    return float(min(max(a + frac * (b - a), lat.min), lat.max))
