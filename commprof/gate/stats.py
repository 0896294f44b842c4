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


def _boot_medians(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(x), size=(RESAMPLES, len(x)))
    return np.median(x[idx], axis=1)


def median_ci(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the median of ``x``."""
    if len(x) < 2:
        return None
    m = _boot_medians(np.asarray(x, float), np.random.default_rng(SEED))
    a = (1 - confidence) / 2
    lo, hi = np.quantile(m, [a, 1 - a])
    return float(lo), float(hi)


def diff_ci(base: np.ndarray, cur: np.ndarray, relative: bool, confidence: float = 0.95
            ) -> tuple[float, float] | None:
    """Bootstrap interval of median(cur) − median(base) (or median(cur)/median(base) − 1)."""
    if len(base) < 2 or len(cur) < 2:
        return None
    rng = np.random.default_rng(SEED)
    mb = _boot_medians(np.asarray(base, float), rng)
    mc = _boot_medians(np.asarray(cur, float), rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = mc / mb - 1 if relative else mc - mb
    d = d[np.isfinite(d)]
    if not len(d):
        return None
    a = (1 - confidence) / 2
    lo, hi = np.quantile(d, [a, 1 - a])
    return float(lo), float(hi)


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
