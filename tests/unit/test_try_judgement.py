"""``commprof try``'s judgement on synthetic curves (commprof/analysis/outcome/convergence.py, issue 25
items 1, 3 and 5).  Oracles from the definitions in the module docstring.

A synthetic run: 1 + seed shift + effect + 2·exp(−step/8) + AR(1) noise — the seed shift (the
run-to-run difference different seeds make) and the noise are drawn per run.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from commprof.analysis.outcome.convergence import (MIN_TAIL, Curve, Stat, effective_speedup, judge,
                                           noise_band, statistic, too_short)


def _run(rng, effect=0.0, n=60, seed_sd=0.02, noise_sd=0.05):
    e = rng.normal(0, noise_sd, n)
    noise = np.zeros(n)
    for i in range(n):
        noise[i] = (0.7 * noise[i - 1] if i else 0.0) + e[i]
    s = np.arange(n)
    return Curve(s, 1.0 + rng.normal(0, seed_sd) + effect + 2 * np.exp(-s / 8) + noise)


def _verdicts(effect, trials=300, higher_is_better=False):
    rng = np.random.default_rng(12345)
    out = {"ok": 0, "inconclusive": 0, "worse": 0}
    for _ in range(trials):
        base = [statistic(_run(rng)) for _ in range(2)]
        fix = [statistic(_run(rng, effect)) for _ in range(2)]
        out[judge(base, fix, higher_is_better)["verdict"]] += 1
    return {k: v / trials for k, v in out.items()}


def test_runs_that_differ_only_by_seed_are_within_noise():
    rates = _verdicts(0.0)
    # a one-sided 95 % band: about 5 % "worse" by chance (+3 standard errors of 300 trials)
    assert rates["worse"] <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 300) and rates["ok"] >= 0.85, rates


def test_a_clearly_harmful_fix_is_worse_and_a_better_one_is_never_rejected():
    assert _verdicts(0.5)["worse"] >= 0.95
    assert _verdicts(-0.5)["ok"] == 1.0
    # a metric where higher is better: a higher value is the better one
    assert _verdicts(0.5, higher_is_better=True)["ok"] == 1.0


def test_band_is_a_t_interval_of_the_run_to_run_scatter_and_the_verdict_one_sided():
    base = [Stat(1.0, 0.001, 10), Stat(1.3, 0.001, 10), Stat(1.1, 0.001, 10)]
    ref = (1.0 + 1.3 + 1.1) / 3
    var = sum((x - ref) ** 2 for x in (1.0, 1.3, 1.1)) / 2  # 2 degrees of freedom
    band = 2.920 * math.sqrt(var) * math.sqrt(1 / 3 + 1)  # against one more run
    assert noise_band(base) == pytest.approx(band)
    assert noise_band(base[:1]) is None
    j = judge(base, [Stat(ref + 0.9 * band, None, 1)])  # unpaired: against the baselines' mean
    assert j["worse_by"] == pytest.approx(0.9 * band / ref) and j["band"] == pytest.approx(band / ref)
    assert j["verdict"] == "ok"
    assert judge(base, [Stat(ref + 1.1 * band, None, 1)])["verdict"] == "worse"
    assert judge(base, [Stat(ref - 5 * band, None, 1)])["verdict"] == "ok"  # better: never rejected
    assert judge(base[:1], [Stat(1.5, None, 1)])["verdict"] == "inconclusive"  # no band
    assert judge(base[:1], [Stat(0.5, None, 1)])["verdict"] == "ok"
    # both sides' scatter is pooled: 2 + 1 degrees of freedom
    fix = [Stat(2.0, None, 1), Stat(2.2, None, 1)]
    pooled = (2 * var + 0.02) / 3
    assert noise_band(base, fix) == pytest.approx(2.353 * math.sqrt(pooled) * math.sqrt(1 / 3 + 1 / 2))
    # the tails' own scatter is a floor
    tight = [Stat(1.0, 0.1, 10), Stat(1.0, 0.1, 10)]
    assert noise_band(tight) == pytest.approx(6.314 * 0.1 * math.sqrt(1 / 2 + 1))


def test_time_to_target_counts_wall_time_not_steps():
    steps = np.arange(40)
    base = Curve(steps, 10.0 - steps, np.ones(40))
    # trailing mean of 10 (the tail of 40 steps) of 10 − s at s ≥ 9 is 10 − (s − 4.5); the target
    # is the tail mean 10 − 34.5: the baseline reaches it at s = 39, after 40 s
    fast = Curve(steps, 10.0 - 2 * steps, np.ones(40))  # 10 − 2(s − 4.5) ≤ −24.5 from s = 22
    r = effective_speedup([base], [fast])
    assert r["time_base_s"] == 40 and r["time_s"] == 23 and r["speedup"] == pytest.approx(40 / 23)
    assert r["extrapolated"] is False


def test_a_fix_that_needs_more_steps_than_the_baseline_ran_is_extrapolated_up_to_twice_them():
    steps = np.arange(40)
    base = Curve(steps, 10.0 - steps, np.ones(40))  # target −24.5, reached after 40 s (above)
    # twice as fast per step (0.5 s), half the progress per step: its trailing mean
    # 10 − 0.5(s − 4.5) reaches −24.5 at s = 73.5, i.e. step 74, within the cap of 2 × 40 steps:
    # 75 steps of 0.5 s = 37.5 s (a straight line; the fit's exponential is nearly one here)
    half = Curve(steps, 10.0 - 0.5 * steps, np.full(40, 0.5))
    r = effective_speedup([base], [half])
    assert r["reached"] is True and r["extrapolated"] is True and r["cap_steps"] == 80
    assert r["time_s"] == pytest.approx(37.5, rel=0.03)
    assert r["speedup"] == pytest.approx(40 / 37.5, rel=0.03)
    # a fifth of the progress per step: 10 − 0.2(s − 4.5) reaches −24.5 only at s = 177 > 80
    slow = Curve(steps, 10.0 - 0.2 * steps, np.full(40, 0.5))
    r = effective_speedup([base], [slow])
    assert r["reached"] is False and r["speedup"] is None
    # higher is better: the mirror image extrapolates the same
    r = effective_speedup([Curve(steps, -base.values, base.durations)],
                          [Curve(steps, -half.values, half.durations)], higher_is_better=True)
    assert r["extrapolated"] and r["time_s"] == pytest.approx(37.5, rel=0.03)


def test_a_short_window_says_how_many_steps_it_needs():
    steps = np.arange(12)
    r = too_short([Curve(steps, np.ones(12))], 0.01, warmup=3)
    assert r["too_short"] and r["steps_needed"] == 3 + 4 * MIN_TAIL


def test_a_curve_still_falling_is_too_short_and_the_steps_needed_flatten_it():
    tau, a, b, band = 30.0, 1.0, 2.0, 0.01
    n = 40
    s = np.arange(n, dtype=float)
    curve = Curve(np.arange(n), a + b * np.exp(-s / tau))
    r = too_short([curve], band, warmup=5)
    assert r["too_short"] and r["steps_needed"] is not None

    def drop(m):  # the true curve's fall from the quarter before the tail to the tail
        t = max(MIN_TAIL, math.ceil(0.25 * m))
        y = a + b * np.exp(-np.arange(m) / tau)
        return np.mean(y[m - 2 * t:m - t]) - np.mean(y[m - t:])

    m = r["steps_needed"] - 5
    assert drop(m) <= band * 1.05 and drop(int(m * 0.8)) > band
    flat = Curve(np.arange(n), a + b * np.exp(-s / 3.0))  # converged long before the tail
    assert too_short([flat], band, warmup=5)["too_short"] is False


def test_a_run_whose_loss_went_non_finite_is_worse():
    from commprof.cli.try_verdict import diverged
    steps = np.arange(40)
    base = [Curve.of(steps, np.ones(40))]
    nan_late = np.where(steps < 20, 1.0, np.nan)  # the report's curve leaves out NaN steps
    assert diverged(base, [Curve.of(steps, nan_late)]).startswith("diverged: a finite loss on 20 of")
    assert diverged(base, [Curve.of(steps, np.ones(40))]) is None


def test_a_run_whose_loss_rose_above_anything_the_baseline_had_diverged():
    from commprof.cli.try_verdict import diverged
    steps = np.arange(40)
    base = [Curve.of(steps, 3.0 - steps / 20), Curve.of(steps, 2.9 - steps / 20)]  # highest: 3.0
    # its tail (the last 10 steps) averages 3.1 > 3.0: the loss grew instead of falling
    rising = Curve.of(steps, np.where(steps < 30, 2.0, 3.1))
    assert diverged(base, [rising]).startswith("diverged: its loss over the last steps (3.1)")
    # a tail averaging 2.95: worse than the baseline's tail (~1.1) but not above its start
    assert diverged(base, [Curve.of(steps, np.where(steps < 30, 2.0, 2.95))]) is None
