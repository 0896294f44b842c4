"""Several runs per side in `commprof compare` and `commprof gate` (issue 25 item 7): judged by the
run-to-run spread (two-sample t on each run's value) when there are three runs or more in all,
and said plainly when there is one run per side (a bootstrap over steps of one run says nothing
about how much the next run differs)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from commprof.gate import measure, rules
from commprof.gate.compare import compare
from commprof.gate.runs import merge, runs_interval, t_quantile
from test_gate import baseline_file, run_gate

# Student's t quantiles from a printed table (two-sided 95 % and 90 %)
T_TABLE = {(0.975, 1): 12.7062, (0.975, 2): 4.3027, (0.975, 3): 3.1824, (0.975, 10): 2.2281,
           (0.95, 4): 2.1318, (0.95, 30): 1.6973}


@pytest.mark.parametrize("p, df", sorted(T_TABLE))
def test_t_quantiles_match_the_table(p, df):
    assert t_quantile(p, df) == pytest.approx(T_TABLE[(p, df)], abs=2e-4)


def test_the_run_interval_is_the_pooled_two_sample_t_interval():
    a, b = [100.0, 104.0], [110.0, 108.0]
    ss = (2 ** 2 + 2 ** 2) + (1 ** 2 + 1 ** 2)  # squared deviations from each side's mean
    half = T_TABLE[(0.975, 2)] * math.sqrt(ss / 2) * math.sqrt(1 / 2 + 1 / 2)
    lo, hi = runs_interval(a, b, relative=False)
    assert (lo, hi) == (pytest.approx(7 - half, abs=1e-3), pytest.approx(7 + half, abs=1e-3))
    rlo, rhi = runs_interval(a, b, relative=True)
    assert (rlo, rhi) == (pytest.approx((7 - half) / 102, abs=1e-5), pytest.approx((7 + half) / 102, abs=1e-5))
    assert runs_interval([1.0], [2.0], False) is None  # one run per side: no run-to-run spread


def _runs(tmp_path, name, centers, seed):
    """One baseline file per run: 30 steps tightly around each run's own mean step time."""
    rng = np.random.default_rng(seed)
    return [baseline_file(tmp_path / f"{name}{i}.json", c + rng.normal(0, 0.0005, 30),
                          np.full(30, 0.2) + rng.normal(0, 0.001, 30)) for i, c in enumerate(centers)]


def test_compare_judges_by_the_run_to_run_spread_and_one_run_by_steps(tmp_path):
    # the runs of each side differ far more than the steps within a run do (machine load)
    a = [measure.load(p) for p in _runs(tmp_path, "a", [0.100, 0.120], 1)]
    b = [measure.load(p) for p in _runs(tmp_path, "b", [0.112, 0.126], 2)]
    one = {r["metric"]: r for r in compare(a[0], b[0])}
    assert one["step_time"]["verdict"] == "worse" and one["step_time"]["basis"] == "steps"
    both = {r["metric"]: r for r in compare(merge(a), merge(b), 0.95, a, b)}
    row = both["step_time"]
    assert row["basis"] == "runs" and row["verdict"] == "within noise", row
    assert row["a_runs"] == [pytest.approx(float(m.series["step_time_mean"].mean())) for m in a]
    # a change beyond the run-to-run spread is still found
    c = [measure.load(p) for p in _runs(tmp_path, "c", [0.150, 0.152], 3)]
    a2 = [measure.load(p) for p in _runs(tmp_path, "d", [0.100, 0.102], 4)]
    assert {r["metric"]: r for r in compare(merge(a2), merge(c), 0.95, a2, c)}["step_time"]["verdict"] == "worse"


def test_gate_regression_by_runs(tmp_path):
    a = [measure.load(p) for p in _runs(tmp_path, "a", [0.100, 0.120], 5)]
    b = [measure.load(p) for p in _runs(tmp_path, "b", [0.115, 0.128], 6)]
    rule = rules.parse_regression("step_time=+5%")
    single = rules.evaluate(rule, b[0], a[0])
    assert single.status == "fail" and "(steps)" in single.message
    several = rules.evaluate(rule, merge(b), merge(a), 0.95, (b, a))
    assert several.status == "pass" and "(run-to-run)" in several.message, several.message


def test_the_commands_take_several_runs_per_side_and_say_which_basis(tmp_path):
    a, b = _runs(tmp_path, "a", [0.100, 0.120], 7), _runs(tmp_path, "b", [0.115, 0.128], 8)
    proc = run_gate("compare", "--baseline", str(a[0]), "--baseline", str(a[1]), str(b[0]), str(b[1]))
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "run-to-run spread (2 vs 2 runs" in text and "runs (low..high)" in text
    proc = run_gate("compare", str(a[0]), str(b[0]))
    assert proc.returncode == 0 and "one run per side" in " ".join(proc.stdout.split())
    proc = run_gate("compare", str(a[0]), str(a[1]), str(b[0]))
    assert proc.returncode == 2 and "--baseline" in proc.stderr
    gate = ["--max-regression", "step_time=+5%"]
    proc = run_gate("gate", str(b[0]), str(b[1]), "--baseline", str(a[0]), "--baseline", str(a[1]), *gate)
    assert proc.returncode == 0, proc.stdout
    assert "run-to-run spread (2 vs 2 runs" in " ".join(proc.stdout.split())
    proc = run_gate("gate", str(b[0]), "--baseline", str(a[0]), *gate)
    assert proc.returncode == 1 and "one run per side" in " ".join(proc.stdout.split())


def test_a_config_file_may_list_several_baseline_runs(tmp_path):
    a, b = _runs(tmp_path, "a", [0.100, 0.120], 9), _runs(tmp_path, "b", [0.115, 0.128], 10)
    (tmp_path / "commprof.toml").write_text(
        f'[gate]\nbaseline = ["{a[0].name}", "{a[1].name}"]\nmax_regression = ["step_time=+5%"]\n')
    proc = run_gate("gate", str(b[0]), str(b[1]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "run-to-run spread (2 vs 2 runs" in " ".join(proc.stdout.split())


def _loss_run(high: float, low: float, step_s: float) -> measure.Measurements:
    """A run of 40 measured steps: loss ``high`` for steps 0-19, ``low`` after; each step
    ``step_s`` long (values and durations exact in binary floating point)."""
    from commprof.analysis.result.model import LossCurve, Training
    steps = list(range(40))
    values = [high if s < 20 else low for s in steps]
    loss = LossCurve(steps=steps, values=values, ranks=1, final=values[-1], lost=0, source="backward")
    return measure.Measurements("r", "run", {}, {}, {}, training=Training(loss=loss, fixes=[]),
                                step_durations={s: step_s for s in steps})


def test_compare_states_the_smoothed_loss_with_its_band_and_the_time_to_target():
    """`commprof compare`'s loss lines (issue 25: "reaches at step N" was noise): the tail means
    (last quarter: 10 of 40 steps) judged one-sided against the run-to-run band, and the wall
    time until the trailing mean of 10 steps reaches A's worst tail mean."""
    from commprof.gate.output import loss_lines
    from commprof.gate.runs import loss_judgement
    a = [_loss_run(3.0, 2.0, 0.125), _loss_run(3.25, 2.25, 0.125)]
    b = [_loss_run(3.25, 2.25, 0.0625), _loss_run(3.25, 2.25, 0.0625)]
    j = loss_judgement(a, b)
    # tail means: A 2.0 and 2.25, B 2.25 twice; s² pooled over 2 degrees of freedom
    s = math.sqrt(((2.0 - 2.125) ** 2 + (2.25 - 2.125) ** 2 + 0.0) / 2)
    band = 2.920 * s * math.sqrt(1 / 2 + 1 / 2) / 2.125  # one-sided t(0.95, df 2), printed tables
    assert j["worse_by"] == pytest.approx((2.25 - 2.125) / 2.125)
    assert j["band"] == pytest.approx(band, rel=1e-3) and j["verdict"] == "ok"
    # target: A's worst tail mean, 2.25.  A run of low L reaches it once the 10-step window holds
    # at most (2.25 − L) ÷ 1.0 × 10 high steps: A1 at step 27 (28 steps), A2, B1, B2 at step 29
    t = j["time_to_target"]
    assert t["target"] == 2.25 and t["window"] == 10
    assert t["time_base_s"] == pytest.approx((28 + 30) / 2 * 0.125)
    assert t["time_s"] == pytest.approx(30 * 0.0625)
    assert t["speedup"] == pytest.approx((29 * 0.125) / (30 * 0.0625))
    text = "\n".join(loss_lines(j))
    assert f"B vs A, loss: {j['worse_by'] * 100:.1f} % worse (noise ±{band * 100:.1f} %): ok" in text
    assert f"effective speed-up {t['speedup']:.2f}x" in text and "reaches" not in text
    one = "\n".join(loss_lines(loss_judgement(a[:1], b[:1])))  # one run a side: no band
    assert "no noise band: one run per side" in one and ": inconclusive" in one
    assert loss_lines(loss_judgement(a, [measure.Measurements("r", "run", {}, {}, {})]))[0].startswith(
        "loss: not recorded in both runs")
