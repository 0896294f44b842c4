"""Is a fix's training as good as the baseline's, within the baseline's own noise? (``commprof
try``'s judgement; docs/try.md, "How a fix is judged").  Pure functions on curves.

* **The statistic** of one run: the mean of its curve (the loss per step, or a metric the job
  reported) over the *tail* — the last quarter of the steps after the warm-up, at least
  :data:`MIN_TAIL` of them — with its standard error; a metric reported once is its value.
* **The noise band**: how far apart the fix's mean and the baseline's may be from randomness
  alone — a one-sided 95 % Student-t half-width from the run-to-run scatter of the statistic
  between runs with different seeds (``COMMPROF_SEED_OFFSET``: baseline-vs-baseline and
  fix-vs-fix differences, pooled; at least the tails' own scatter).  None without two runs on a
  side.  With two runs a side (2 degrees of freedom) it is 2.92 run-to-run standard deviations.
* **The verdict** (one-sided: better is never a rejection): *worse by* = the fix's mean minus
  the baseline's (equal to the mean of the seed-paired differences when both sides have the same
  runs), as a fraction of the baseline's, signed so that positive is worse.  ``ok`` when it is at
  most the band, ``worse`` beyond it; ``inconclusive`` when there is no band and the fix is worse.
* **Time to target**: the wall time (the sum of the measured steps' durations from the end of the
  warm-up) until a run's trailing mean (the tail's length) first reaches the target: the worst
  baseline run's tail mean (each baseline run reaches it by its end).  The effective speed-up is
  the baseline's time over the fix's.  A fix run that ends before reaching it (it was given only the
  baseline's steps) is **extrapolated**: an exponential fit of its trailing mean, extended to at
  most :data:`EXTRAPOLATE_FACTOR` times the baseline's steps, each step past the run at its mean
  measured duration (``extrapolated``: True).  None when not even the fit reaches it by then.
* **Too short**: the window after the warm-up has fewer than 4 tails of :data:`MIN_TAIL` steps,
  or the baseline's curve still falls between the quarter before the tail and the tail by more
  than the band; the steps that would do come from an exponential fit of the curve (its fall
  between those quarters, scaled to the fall measured, shrinks below the band).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_TAIL = 5  # steps: the shortest tail a statistic is taken over
TAIL_FRACTION = 0.25  # the tail: the last quarter of the window after the warm-up
EXTRAPOLATE_FACTOR = 2  # a fix's time to target is extrapolated up to this many times the baseline's steps
MAX_STEPS_FACTOR = 100  # "steps that would do" are searched up to this many times the window


@dataclass
class Curve:
    """One run's curve after the warm-up: ``steps``, ``values``, and ``durations`` (seconds of
    each of those steps; None when unknown)."""

    steps: np.ndarray
    values: np.ndarray
    durations: np.ndarray | None = None

    @classmethod
    def of(cls, steps, values, start: int = 0, durations: dict | None = None) -> "Curve":
        """The part of (steps, values) from step ``start`` on; ``durations``: step -> seconds."""
        s, v = np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)
        keep = (s >= start) & np.isfinite(v)
        s, v = s[keep], v[keep]
        d = None
        if durations is not None and len(s) and all(int(x) in durations for x in s):
            d = np.array([durations[int(x)] for x in s], dtype=np.float64)
        return cls(s, v, d)


@dataclass
class Stat:
    """A run's statistic: the tail mean, its standard error (None for one value) and the tail."""

    value: float
    se: float | None
    n: int


def tail_length(n: int) -> int:
    """The tail of a window of ``n`` steps: its last quarter, at least :data:`MIN_TAIL` (≤ n)."""
    return min(n, max(MIN_TAIL, math.ceil(TAIL_FRACTION * n)))


def statistic(curve: Curve) -> Stat | None:
    """The mean over the curve's tail and its standard error (scatter / √n)."""
    n = len(curve.values)
    if not n:
        return None
    tail = curve.values[-tail_length(n):]
    se = float(np.std(tail, ddof=1) / math.sqrt(len(tail))) if len(tail) > 1 else None
    return Stat(float(np.mean(tail)), se, len(tail))


# One-sided 95 % quantiles of Student's t by degrees of freedom (beyond 30: the normal's 1.645).
T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833,
       10: 1.812, 12: 1.782, 15: 1.753, 20: 1.725, 30: 1.697}


def t95(df: int) -> float:
    """Student's t one-sided 95 % quantile for ``df`` degrees of freedom (the table's next lower
    entry between tabulated ones: never narrower than the exact value)."""
    return T95[max(k for k in T95 if k <= df)] if df <= 30 else 1.645


def _sum_sq(stats: list[Stat]) -> float:
    values = np.array([s.value for s in stats], dtype=np.float64)
    return float(np.sum((values - values.mean()) ** 2))


def noise_band(base: list[Stat], fix: list[Stat] | None = None) -> float | None:
    """Absolute half-width of the noise band of the difference between ``fix``'s mean and
    ``base``'s: t₀.₉₅ · s · √(1/n_base + 1/n_fix), where s² is the run-to-run variance of the
    statistic between runs with different seeds, pooled over both sides (baseline-vs-baseline and
    fix-vs-fix differences), and at least the tails' own variance (their standard errors).  With
    ``fix`` None: the band of one more run against the baseline's (n_fix = 1).  None without two
    runs on a side (nothing measures the run-to-run difference)."""
    fix = fix or []
    df = max(len(base) - 1, 0) + max(len(fix) - 1, 0)
    if df < 1:
        return None
    var = (_sum_sq(base) + (_sum_sq(fix) if len(fix) > 1 else 0.0)) / df
    ses = [s.se for s in base + fix if s.se is not None]
    if ses:
        var = max(var, float(np.mean(np.square(ses))))
    n_fix = max(len(fix), 1)
    return t95(df) * math.sqrt(var) * math.sqrt(1 / len(base) + 1 / n_fix)


def judge(base: list[Stat], fix: list[Stat], higher_is_better: bool = False) -> dict:
    """The verdict of ``fix``'s runs against ``base``'s (see the module docstring).  Keys:
    ``worse_by`` and ``band`` (fractions of the baseline's statistic), ``verdict``, ``paired``."""
    if not base or not fix:
        return {"worse_by": None, "band": None, "verdict": "unknown", "paired": False,
                "base": None, "value": None}
    ref = float(np.mean([s.value for s in base]))
    value = float(np.mean([s.value for s in fix]))
    scale = abs(ref) if ref else None
    worse = ((ref - value) if higher_is_better else (value - ref)) / scale if scale else None
    band_abs = noise_band(base, fix)
    band = band_abs / scale if band_abs is not None and scale else None
    if worse is None:
        verdict = "unknown"
    elif band is None:
        verdict = "ok" if worse <= 0 else "inconclusive"
    else:
        verdict = "ok" if worse <= band else "worse"
    return {"worse_by": worse, "band": band, "verdict": verdict, "paired": len(base) == len(fix),
            "base": ref, "value": value}


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each point (fewer at the start)."""
    c = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def time_to_target(curve: Curve, target: float, window: int, higher_is_better: bool = False) -> float | None:
    """Seconds from the window's start until the curve's trailing mean first reaches ``target``
    (None: never, or the durations are unknown)."""
    if curve.durations is None or not len(curve.values):
        return None
    smooth = trailing_mean(curve.values, window)
    hit = smooth >= target if higher_is_better else smooth <= target
    if not hit.any():
        return None
    first = int(np.argmax(hit))
    return float(np.sum(curve.durations[:first + 1]))


def extrapolated_time(curve: Curve, target: float, window: int, cap_points: int,
                      higher_is_better: bool = False) -> float | None:
    """Seconds until the curve's trailing mean would reach ``target`` beyond its last step, by a
    fit a + b·exp(−x/τ) of that trailing mean extended to at most ``cap_points`` steps after the
    window's start; the steps past the run cost its mean measured step duration.  None when the
    fit does not reach the target by then (or the durations are unknown)."""
    n = len(curve.values)
    if curve.durations is None or n < 4 or cap_points <= n:
        return None
    sign = -1.0 if higher_is_better else 1.0
    first = max(min(window, n - 4), 1) - 1  # fitted where the trailing mean has its whole window
    smooth = sign * trailing_mean(curve.values, window)[first:]
    fit = _exp_fit(np.arange(first, n, dtype=np.float64), smooth)
    if fit is None:
        return None
    a, b, tau = fit
    x = np.arange(n, cap_points, dtype=np.float64)
    hit = a + b * np.exp(-x / tau) <= sign * target
    if not hit.any():
        return None
    extra = int(np.argmax(hit)) + 1  # steps n .. n + extra - 1 are run past the curve's end
    return float(np.sum(curve.durations) + extra * np.mean(curve.durations))


def target_and_times(base: list[Curve], higher_is_better: bool = False) -> tuple[float | None, int, list[float | None]]:
    """(target, trailing window, each baseline run's time to it): the target is the worst
    baseline run's tail mean, the window the shortest run's tail length."""
    stats = [statistic(c) for c in base]
    stats = [s for s in stats if s is not None]
    if not stats:
        return None, MIN_TAIL, []
    target = (min if higher_is_better else max)(s.value for s in stats)
    window = min(tail_length(len(c.values)) for c in base if len(c.values))
    return target, window, [time_to_target(c, target, window, higher_is_better) for c in base]


def effective_speedup(base: list[Curve], fix: list[Curve], higher_is_better: bool = False) -> dict:
    """Time to the baseline's target on both sides and their ratio (see the module docstring)."""
    target, window, base_times = target_and_times(base, higher_is_better)
    cap = EXTRAPOLATE_FACTOR * max((len(c.values) for c in base), default=0)
    fix_times, extrapolated = [], False
    for c in fix if target is not None else []:
        t = time_to_target(c, target, window, higher_is_better)
        if t is None:
            t = extrapolated_time(c, target, window, int(cap), higher_is_better)
            extrapolated = extrapolated or t is not None
        fix_times.append(t)
    t_base = float(np.mean(base_times)) if base_times and None not in base_times else None
    t_fix = float(np.mean(fix_times)) if fix_times and None not in fix_times else None
    return {"target": target, "window": window, "time_base_s": t_base, "time_s": t_fix,
            "reached": bool(fix_times) and None not in fix_times, "extrapolated": extrapolated,
            "cap_steps": int(cap), "speedup": t_base / t_fix if t_base and t_fix else None}


def _exp_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    """Least-squares a + b·exp(−x/τ) over a grid of τ: (a, b, τ), or None when it cannot fit."""
    if len(x) < 4:
        return None
    best = None
    for tau in np.geomspace(0.5, MAX_STEPS_FACTOR * max(x[-1], 1.0), 80):
        design = np.column_stack([np.ones_like(x), np.exp(-x / tau)])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        sse = float(np.sum((design @ coef - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, float(coef[0]), float(coef[1]), float(tau))
    return best[1:] if best else None


def _quarter_drop(n: int, a: float, b: float, tau: float) -> float:
    """The fitted curve's fall from the quarter before the tail to the tail, over n steps."""
    t = tail_length(n)
    x = np.arange(n, dtype=np.float64)
    y = a + b * np.exp(-x / tau)
    prev = y[max(0, n - 2 * t):n - t]
    return float(np.mean(prev) - np.mean(y[n - t:])) if len(prev) else 0.0


def too_short(base: list[Curve], band_abs: float | None, warmup: int, higher_is_better: bool = False) -> dict:
    """Whether the baseline's window is too short to judge, why, and the steps that would do
    (``steps_needed``: counted from step 0, warm-up included; None when unknown)."""
    lengths = [len(c.values) for c in base if len(c.values)]
    if not lengths:
        return {"too_short": True, "why": "no curve after the warm-up", "steps_needed": None}
    n = min(lengths)
    if n < 4 * MIN_TAIL:
        return {"too_short": True, "steps_needed": warmup + 4 * MIN_TAIL,
                "why": f"{n} steps after the warm-up: a tail of {MIN_TAIL} needs {4 * MIN_TAIL}"}
    sign = -1.0 if higher_is_better else 1.0
    ys = [sign * c.values[:n] for c in base]
    y = np.mean(ys, axis=0)
    t = tail_length(n)
    drop = float(np.mean(y[n - 2 * t:n - t]) - np.mean(y[n - t:]))
    stats = [statistic(Curve(c.steps[:n], c.values[:n])) for c in base]
    allowed = band_abs if band_abs else 2 * max((s.se or 0.0) for s in stats if s)
    if drop <= allowed:
        return {"too_short": False, "why": None, "steps_needed": None, "drop": drop}
    fit = _exp_fit(np.arange(n, dtype=np.float64), y)
    needed = None
    if fit is not None and fit[1] > 0 and _quarter_drop(n, *fit) > 0:
        # the fit's shape, scaled to the fall measured now: longer windows fall less, as it does
        ratio = drop / _quarter_drop(n, *fit)
        for m in np.unique(np.geomspace(n + 1, MAX_STEPS_FACTOR * n, 200).astype(int)):
            if ratio * _quarter_drop(int(m), *fit) <= allowed:
                needed = int(m) + warmup
                break
    return {"too_short": True, "steps_needed": needed, "drop": drop,
            "why": f"the baseline still {'rises' if higher_is_better else 'falls'} by {drop:.3g} from the "
                   f"quarter before the tail to the tail, more than the noise band ({allowed:.3g})"}


def loss_judgement(base: list[Curve], fix: list[Curve], warmup: int) -> dict:
    """The training loss of ``fix``'s runs against ``base``'s (``commprof compare``'s loss
    statement): :func:`judge` on the tail means with their band, :func:`too_short` on the
    baseline's curves and :func:`effective_speedup`.  ``warmup``: the steps the curves start
    after (for the steps :func:`too_short` says would do)."""
    base = [c for c in base if len(c.values)]
    fix = [c for c in fix if len(c.values)]
    base_stats = [s for s in (statistic(c) for c in base) if s is not None]
    fix_stats = [s for s in (statistic(c) for c in fix) if s is not None]
    quality = judge(base_stats, fix_stats)
    short = (too_short(base, noise_band(base_stats), warmup) if base else
             {"too_short": False, "why": None, "steps_needed": None})
    verdict = "too short" if short["too_short"] and quality["verdict"] != "worse" else quality["verdict"]
    return {**quality, "quality_verdict": quality["verdict"], "verdict": verdict, "short": short,
            "time_to_target": effective_speedup(base, fix), "runs": len(fix), "baseline_runs": len(base)}
