"""Several runs per side (``commprof compare``, ``commprof gate``; docs/ci.md): judged against
the run-to-run spread when there is one.

A bootstrap over the steps of one run says how precisely that run measured its mean; it says
nothing about how much a second run of the same job differs (machine load, placement, data
order).  With several runs per side, each run gives one value of a metric (its KPI), and the
change B − A is judged by a two-sample Student t interval on those values (pooled variance:
``t(df = n_A + n_B − 2) · s · √(1/n_A + 1/n_B)``), which needs at least three runs in all.  With
one run per side only the steps' bootstrap is left, and every output says so.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from commprof.gate.measure import Measurements, _step_values, metric_value


def merge(ms: list[Measurements], label: str | None = None) -> Measurements:
    """One :class:`Measurements` of several runs of one side: their per-step series joined (the
    step KPIs recomputed on them), the whole-run values averaged over the runs."""
    if len(ms) == 1:
        return ms[0]
    first = ms[0]
    series = {k: np.concatenate([m.series.get(k, np.zeros(0)) for m in ms]) for k in first.series}
    values = {}
    for name in first.values:
        vals = [m.values.get(name) for m in ms if m.values.get(name) is not None]
        values[name] = float(np.mean(vals)) if vals else None
    values.update({k: v for k, v in _step_values(series).items() if v is not None})
    return Measurements(label or f"{first.source} and {len(ms) - 1} more run(s)", first.kind, first.run,
                        series, values, [r for m in ms for r in m.op_sizes], first.skipped_steps,
                        sum(m.steps_total for m in ms), first.training)


@lru_cache(maxsize=64)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``df`` degrees of freedom: the density
    integrated (Simpson's rule, 4000 intervals) and inverted by bisection; exact to ~1e-6."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x: float) -> float:
        n = 4000
        h = x / n
        total = 0.0
        for i in range(n + 1):
            y = c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2)
            total += y * (1 if i in (0, n) else 4 if i % 2 else 2)
        return 0.5 + total * h / 3

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def run_values(ms: list[Measurements], metric: str) -> list[float]:
    """The value of ``metric`` in each run (its KPI), runs without one left out."""
    out = []
    for m in ms:
        v, _ = metric_value(m, metric)
        if v is not None and math.isfinite(v):
            out.append(float(v))
    return out


def runs_interval(a: list[float], b: list[float], relative: bool, confidence: float = 0.95
                  ) -> tuple[float, float] | None:
    """Interval of mean(b) − mean(a) (or mean(b)/mean(a) − 1) from the run-to-run spread, or
    None with fewer than three runs in all or one side empty."""
    na, nb = len(a), len(b)
    if not na or not nb or na + nb < 3:
        return None
    ma, mb = float(np.mean(a)), float(np.mean(b))
    ss = float(np.sum((np.asarray(a) - ma) ** 2) + np.sum((np.asarray(b) - mb) ** 2))
    df = na + nb - 2
    half = t_quantile(1 - (1 - confidence) / 2, df) * math.sqrt(ss / df) * math.sqrt(1 / na + 1 / nb)
    d = mb - ma
    if relative:
        if not ma:
            return None
        return (d - half) / ma, (d + half) / ma
    return d - half, d + half


def spread(values: list[float]) -> tuple[float, float] | None:
    """(lowest, highest) of a side's run values, or None with fewer than two runs."""
    return (min(values), max(values)) if len(values) >= 2 else None


def basis_text(na: int, nb: int | None = None) -> str:
    """What the intervals rest on, in words."""
    runs = [n for n in (na, nb) if n is not None]
    if sum(runs) >= 3 and all(runs):
        return (f"intervals from the run-to-run spread ({' vs '.join(str(n) for n in runs)} runs: "
                "two-sample t on each run's value)")
    return ("one run per side: the intervals resample steps within each run, which says nothing "
            "about run-to-run noise (machine load, placement); give several runs per side")


def loss_judgement(a: list[Measurements], b: list[Measurements]) -> dict | None:
    """The training loss of B's runs against A's (``commprof compare``): the smoothed tail means
    with the noise band of A's runs, and the time to A's final loss
    (:func:`commprof.analysis.outcome.convergence.loss_judgement`), from the later of the sides' first
    measured steps on.  None when a side recorded no loss."""
    from commprof.analysis.outcome import convergence as cv
    start = max(m.skipped_steps for m in a + b)

    def curves(ms):
        return [cv.Curve.of(loss.steps, loss.values, start, m.step_durations)
                for m in ms if m.training is not None and (loss := m.training.loss) is not None]
    ca, cb = curves(a), curves(b)
    if not ca or not cb:
        return None
    return cv.loss_judgement(ca, cb, start)
