"""Statistics that survive noisy CI machines: medians over steps, IQR, bootstrap CIs.

Steps are treated as independent draws (autocorrelation between consecutive steps is ignored);
the bootstrap is seeded, so the same inputs always give the same interval.
"""
from __future__ import annotations

import numpy as np

RESAMPLES = 2000
SEED = 20261127


def iqr(x: np.ndarray) -> tuple[float, float] | None:
    """(25th, 75th percentile), or None for an empty series."""
    if not len(x):
        return None
    q1, q3 = np.percentile(x, [25, 75])
    return float(q1), float(q3)


def _boot(arrays, statistic, rng: np.random.Generator) -> np.ndarray:
    """The statistic of RESAMPLES resamples of the steps (one index set for all arrays)."""
    n = len(arrays[0])
    idx = rng.integers(0, n, size=(RESAMPLES, n))
    return statistic(*(np.asarray(a, float)[idx] for a in arrays))


def stat_ci(draws, confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of ``statistic(*arrays)`` for ``draws = (arrays, statistic)``."""
    if draws is None or len(draws[0][0]) < 2:
        return None
    m = _boot(draws[0], draws[1], np.random.default_rng(SEED))
    m = m[np.isfinite(m)]
    if not len(m):
        return None
    a = (1 - confidence) / 2
    lo, hi = np.quantile(m, [a, 1 - a])
    return float(lo), float(hi)


def stat_diff_ci(base, cur, relative: bool, confidence: float = 0.95) -> tuple[float, float] | None:
    """Bootstrap interval of stat(cur) − stat(base) (or the ratio − 1); ``base``/``cur`` are
    ``(arrays, statistic)``."""
    if base is None or cur is None or len(base[0][0]) < 2 or len(cur[0][0]) < 2:
        return None
    rng = np.random.default_rng(SEED)
    mb, mc = _boot(base[0], base[1], rng), _boot(cur[0], cur[1], rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = mc / mb - 1 if relative else mc - mb
    d = d[np.isfinite(d)]
    if not len(d):
        return None
    a = (1 - confidence) / 2
    lo, hi = np.quantile(d, [a, 1 - a])
    return float(lo), float(hi)


def diff_ci(base: np.ndarray, cur: np.ndarray, relative: bool, confidence: float = 0.95
            ) -> tuple[float, float] | None:
    """Bootstrap interval of median(cur) − median(base) (or median(cur)/median(base) − 1)."""
    return stat_diff_ci(((np.asarray(base, float),), median), ((np.asarray(cur, float),), median),
                        relative, confidence)


def ratio_of_sums(num, den):
    """Σ num ÷ Σ den along the last axis (time-weighted fractions)."""
    return np.sum(num, axis=-1) / np.sum(den, axis=-1)


def mean(x):
    return np.mean(x, axis=-1)


def median(x):
    return np.median(x, axis=-1)


def detect_warmup(durations: np.ndarray, max_fraction: float = 0.25) -> int:
    """Leading steps slower than the steady state: the first step within median + 3·MAD of the
    whole series (at most ``max_fraction`` of the steps are skipped)."""
    x = np.asarray(durations, float)
    if len(x) < 4:
        return 0
    med = np.median(x)
    mad = np.median(np.abs(x - med)) or 1e-12
    limit = med + 3 * 1.4826 * mad
    cap = int(len(x) * max_fraction)
    for i in range(cap + 1):
        if x[i] <= limit:
            return i
    return cap
