"""commprof.analysis.measures.intervals against a brute-force painter on an integer grid."""
from __future__ import annotations

import random

import numpy as np
import pytest

from commprof.analysis.measures.intervals import clip, covered, union

LO, HI = -20, 80  # the painted grid; intervals live in [0, 60), windows roam the whole grid


def paint(starts, ends) -> np.ndarray:
    """Boolean cells [LO, HI): cell x is True when some [s, e) holds x."""
    grid = np.zeros(HI - LO, dtype=bool)
    for s, e in zip(starts, ends):
        if e > s:
            grid[s - LO:e - LO] = True
    return grid


def runs(grid: np.ndarray) -> tuple[list[int], list[int]]:
    """Maximal runs of True cells, as [start, end) pairs."""
    s, e, inside = [], [], False
    for i, on in enumerate(grid):
        if on and not inside:
            s.append(i + LO)
            inside = True
        elif not on and inside:
            e.append(i + LO)
            inside = False
    if inside:
        e.append(len(grid) + LO)
    return s, e


def window_mask(a: int, b: int) -> np.ndarray:
    x = np.arange(LO, HI)
    return (x >= a) & (x < b)


def random_intervals(rng: random.Random) -> tuple[list[int], list[int]]:
    """0..12 intervals, with zero-length, negative, nested, touching and duplicated ones."""
    n = rng.choice([0, 1, 2, 3, 5, 8, 12])
    starts, ends = [], []
    for _ in range(n):
        style = rng.random()
        s = rng.randrange(0, 60)
        if style < 0.1:
            e = s  # zero length
        elif style < 0.15:
            e = s - rng.randrange(1, 5)  # negative length: dropped
        elif style < 0.35 and starts:
            k = rng.randrange(len(starts))  # touching an earlier one, on either side
            s, e = (ends[k], ends[k] + rng.randrange(1, 6)) if rng.random() < 0.5 else \
                   (starts[k] - rng.randrange(1, 6), starts[k])
        elif style < 0.5 and starts:
            k = rng.randrange(len(starts))  # nested in / duplicating an earlier one
            lo, hi = sorted((starts[k], ends[k]))
            s = rng.randint(lo, hi)
            e = rng.randint(s, hi)
        else:
            e = min(s + rng.randrange(1, 20), 60)
        starts.append(max(s, 0))
        ends.append(max(min(e, 60), 0) if e >= 0 else e)
    return starts, ends


CASES = list(range(400))


@pytest.mark.parametrize("kind", ["int64", "float64"])
def test_union_matches_painting(kind):
    rng = random.Random(1234)
    for case in CASES:
        starts, ends = random_intervals(rng)
        ms, me = union(np.array(starts, dtype=kind), np.array(ends, dtype=kind))
        exp_s, exp_e = runs(paint(starts, ends))
        assert ms.tolist() == exp_s, (case, starts, ends)
        assert me.tolist() == exp_e, (case, starts, ends)
        # disjoint, sorted, non-empty, and separated by real gaps
        assert np.all(me > ms)
        assert np.all(ms[1:] > me[:-1])


def test_covered_matches_painting():
    rng = random.Random(99)
    for case in CASES:
        starts, ends = random_intervals(rng)
        ms, me = union(starts, ends)
        grid = paint(starts, ends)
        wins = [(rng.randrange(LO, HI), rng.randrange(LO, HI)) for _ in range(rng.randrange(1, 8))]
        wins += [(LO, HI), (-15, -5), (65, 79), (0, 0), (30, 30), (40, 10)]  # outside / empty / reversed
        a = np.array([w[0] for w in wins])
        b = np.array([w[1] for w in wins])
        got = covered(ms, me, a, b)
        exp = [float(np.count_nonzero(grid & window_mask(x, y))) for x, y in zip(a, b)]
        assert got.tolist() == exp, (case, starts, ends, wins)


def test_covered_scalar_and_list_windows():
    ms, me = union([0, 10], [5, 20])
    assert covered(ms, me, [0], [100]).tolist() == [15.0]
    assert float(covered(ms, me, 3, 12)) == 4.0
    assert covered(ms, me, [-5, 5, 20, 25], [0, 10, 30, 26]).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_covered_of_empty_union_is_zero():
    ms, me = union([], [])
    assert len(ms) == 0 and len(me) == 0
    assert covered(ms, me, [0, -5, 10], [10, 5, 20]).tolist() == [0.0, 0.0, 0.0]
    ms, me = union([3, 7], [3, 2])  # only zero and negative lengths
    assert len(ms) == 0
    assert covered(ms, me, [0], [10]).tolist() == [0.0]


def test_clip_matches_painting():
    rng = random.Random(7)
    for case in CASES:
        starts, ends = random_intervals(rng)
        ms, me = union(starts, ends)
        grid = paint(starts, ends)
        for _ in range(4):
            a, b = sorted((rng.randrange(LO, HI), rng.randrange(LO, HI)))
            if rng.random() < 0.1:
                a, b = b, a  # reversed window: nothing inside
            cs, ce = clip(ms, me, a, b)
            exp_s, exp_e = runs(grid & window_mask(a, b))
            assert cs.tolist() == exp_s, (case, starts, ends, a, b)
            assert ce.tolist() == exp_e, (case, starts, ends, a, b)


def test_clip_window_outside_everything():
    ms, me = union([10, 30], [20, 40])
    for a, b in [(-10, 0), (20, 30), (45, 90), (40, 50), (0, 10)]:
        cs, ce = clip(ms, me, a, b)
        assert len(cs) == 0 and len(ce) == 0, (a, b)


def test_union_drops_non_finite_and_accepts_unsorted():
    ms, me = union([50, np.nan, 0, 10, 5, -np.inf], [60, 10, 5, 12, 10, 3])
    assert ms.tolist() == [0, 50]
    assert me.tolist() == [12, 60]


def test_union_of_nanosecond_scale_values_is_exact():
    base = 1_700_000_000_000_000_000 // 1000  # large monotonic-clock-like values (µs resolution)
    ms, me = union([base + 3, base], [base + 10, base + 3])
    assert ms.tolist() == [float(base)] and me.tolist() == [float(base + 10)]
