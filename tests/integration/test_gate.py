"""Gate rules, statistics and outputs on known inputs (baseline files written by the tests)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from commprof.errors import UsageError
from commprof.gate import measure, rules, stats
from commprof.gate.compare import compare
from runner import commprof
from synthetic import periodic_rank, write_run

_SEEDS = iter(range(1000, 100000))


def baseline_file(path, step_time, exposed, bytes_per_step=4e6, busbw_rows=None):
    """A commprof.baseline/1 file with the given per-step series."""
    doc = {"schema": measure.BASELINE_SCHEMA, "source": str(path), "run": {}, "skipped_steps": 2,
           "steps_total": len(step_time) + 2,
           "series": {"step_time": list(map(float, step_time)),
                      "exposed_comm_fraction": list(map(float, exposed)),
                      "comm_fraction": list(map(float, exposed)),
                      "bytes_per_step": [float(bytes_per_step)] * len(step_time)},
           "values": {"busbw": 1.0, "bus_bytes_per_step": bytes_per_step},
           "op_sizes": busbw_rows or []}
    path.write_text(json.dumps(doc))
    return path


def noisy(center, spread, n=40, seed=None):
    """``n`` normal draws; each call its own seed, so tests do not depend on their order."""
    rng = np.random.default_rng(next(_SEEDS) if seed is None else seed)
    return center + rng.normal(0, spread, n)


def run_gate(*args, cwd=None, env=None):
    """``commprof ARGS`` without colour and, unless ``env`` sets one, without a GitHub step
    summary file (in this process, or in a subprocess where ``cwd`` is given: runner.commprof)."""
    return commprof(*args, cwd=cwd, timeout=120,
                    env={"NO_COLOR": "1", "GITHUB_STEP_SUMMARY": None, **(env or {})})


# -- statistics --------------------------------------------------------------------------------

def test_bootstrap_interval_holds_zero_for_the_same_distribution():
    a, b = noisy(0.1, 0.01), noisy(0.1, 0.01)
    lo, hi = stats.diff_ci(a, b, relative=False)
    assert lo < 0 < hi
    lo, hi = stats.diff_ci(a, a + 0.05, relative=False)
    assert 0.03 < lo < 0.05 < hi < 0.07


def test_warmup_detection():
    x = np.array([0.5, 0.3, 0.1, 0.1, 0.11, 0.1, 0.09, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert stats.detect_warmup(x) == 2
    assert stats.detect_warmup(np.full(12, 0.1)) == 0
    assert stats.detect_warmup(np.array([9.0] * 12)) == 0


# -- rules ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, metric, limit, mode", [
    ("exposed_comm_fraction=+5pp", "exposed_comm_fraction", 0.05, "pp"),
    ("step_time=+10%", "step_time", 0.10, "%"),
    ("bytes_per_step=+100MB", "bytes_per_step", 100e6, "abs"),
    ("busbw=-10%", "busbw", 0.10, "%"),
    ("busbw:all_reduce:1MB+=-0.5GB/s", "busbw:all_reduce:1MB+", 0.5, "abs"),
])
def test_regression_syntax(spec, metric, limit, mode):
    r = rules.parse_regression(spec)
    assert (r.metric, r.mode) == (metric, mode) and r.limit == pytest.approx(limit)


@pytest.mark.parametrize("spec, words", [
    ("exposed_comm_fraction", "METRIC=+AMOUNT"),
    ("nope=+5%", "unknown metric 'nope'"),
    ("step_time=+5pp", "fractions only"),
    ("step_time=-5%", "grows"),
    ("busbw=+5%", "drops"),
    ("bytes_per_step=+lots", "METRIC=+AMOUNT"),
    ("bytes_per_step=+3parsecs", "not a size"),
])
def test_malformed_regressions_are_usage_errors(spec, words):
    with pytest.raises(UsageError, match=words.replace("+", r"\+")):
        rules.parse_regression(spec)


def test_limit_values_in_every_unit():
    assert rules.parse_value("30%", "frac", "r") == pytest.approx(0.3)
    assert rules.parse_value("1.2GB", "B", "r") == 1.2e9
    assert rules.parse_value("250ms", "s", "r") == pytest.approx(0.25)
    assert rules.parse_value("80Gbit/s", "GB/s", "r") == pytest.approx(10)
    with pytest.raises(UsageError, match="0.3 or 30%"):
        rules.parse_value("1.5", "frac", "r")


def test_regression_inside_the_noise_passes_and_beyond_it_fails(tmp_path):
    base = measure.load(baseline_file(tmp_path / "b.json", noisy(0.1, 0.01, seed=1), noisy(0.2, 0.03, seed=2)))
    same = measure.load(baseline_file(tmp_path / "s.json", noisy(0.1, 0.01, seed=3), noisy(0.2, 0.03, seed=4)))
    worse = measure.load(baseline_file(tmp_path / "w.json", noisy(0.1, 0.01, seed=5), noisy(0.3, 0.03, seed=6)))
    rule = rules.parse_regression("exposed_comm_fraction=+5pp")
    ok = rules.evaluate(rule, same, base)
    assert ok.status == "pass" and ok.ci[0] < 0 < ok.ci[1] and "within noise" in ok.message
    bad = rules.evaluate(rule, worse, base)
    assert bad.status == "fail" and bad.ci[0] > 0.05
    # the value is the time-weighted fraction, Σ exposed ÷ Σ step, computed here from the series
    tw = {}
    for name, seeds in (("b", (1, 2)), ("w", (5, 6))):
        t, f = noisy(0.1, 0.01, seed=seeds[0]), noisy(0.2 if name == "b" else 0.3, 0.03, seed=seeds[1])
        tw[name] = float((f * t).sum() / t.sum())
    assert f"exposed_comm_fraction {tw['b'] * 100:.2f}% -> {tw['w'] * 100:.2f}%" in bad.message
    # A change larger than the allowance but not confidently so does not fail:
    wide_exposed = noisy(0.2, 0.03, seed=2) + 0.07  # ≈ +7pp ...
    wide_exposed[::2] += np.linspace(-0.3, 0.3, len(wide_exposed[::2]))  # ... but very noisy
    wide = measure.load(baseline_file(tmp_path / "x.json", noisy(0.1, 0.01, seed=7), wide_exposed))
    r = rules.evaluate(rule, wide, base)
    assert r.change > 0.05 and r.ci[0] < 0.05 and r.status == "pass"


def test_limits_and_busbw_by_size(tmp_path):
    rows = [{"op": "all_reduce", "group_size": 2, "bucket": 20, "count": 10, "bytes": 10 * 1.5e6,
             "bus_bytes": 10 * 1.5e6, "time_s": 10 * 1.5e6 / 2e9},   # 2 GB/s at 1.5 MB
            {"op": "all_reduce", "group_size": 2, "bucket": 10, "count": 10, "bytes": 10 * 2e3,
             "bus_bytes": 10 * 2e3, "time_s": 10 * 2e3 / 0.01e9}]  # 0.01 GB/s at 2 kB
    m = measure.load(baseline_file(tmp_path / "m.json", noisy(0.1, 0.01), noisy(0.2, 0.01),
                                   busbw_rows=rows))
    assert measure.metric_value(m, "busbw:all_reduce:1MB+")[0] == pytest.approx(2.0)
    assert measure.metric_value(m, "busbw:all_reduce")[0] < 2.0
    assert rules.evaluate(rules.parse_min_busbw("all_reduce:1MB+=1.5GB/s"), m, None).status == "pass"
    assert rules.evaluate(rules.parse_min_busbw("all_reduce:1MB+=3GB/s"), m, None).status == "fail"
    missing = rules.evaluate(rules.parse_min_busbw("all_gather=1GB/s"), m, None)
    assert missing.status == "fail" and "cannot verify" in missing.message
    (lim,) = rules.build_rules({"max_exposed_comm_fraction": "0.15"})
    r = rules.evaluate(lim, m, None)
    assert r.status == "fail" and "must be <= 15.00%" in r.message


def test_compare_verdicts(tmp_path):
    a = measure.load(baseline_file(tmp_path / "a.json", noisy(0.1, 0.01, seed=11),
                                   noisy(0.2, 0.02, seed=13)))
    b = measure.load(baseline_file(tmp_path / "b.json", noisy(0.1, 0.01, seed=12),
                                   noisy(0.3, 0.02, seed=14), bytes_per_step=8e6))
    rows = {r["metric"]: r for r in compare(a, b)}
    assert rows["step_time"]["verdict"] == "within noise"
    assert rows["exposed_comm_fraction"]["verdict"] == "worse"
    assert rows["bytes_per_step"]["verdict"] == "worse" and rows["bytes_per_step"]["relative"] == 1.0
    rows = {r["metric"]: r for r in compare(b, a)}
    assert rows["exposed_comm_fraction"]["verdict"] == "better"


# -- the command: exit codes, files, configuration ---------------------------------------------

def test_gate_outputs_junit_markdown_json_and_step_summary(tmp_path):
    base = baseline_file(tmp_path / "b.json", noisy(0.1, 0.01), noisy(0.2, 0.02))
    cur = baseline_file(tmp_path / "c.json", noisy(0.1, 0.01), noisy(0.3, 0.02))
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    proc = run_gate("gate", str(cur), "--baseline", str(base), "--max-regression",
                    "exposed_comm_fraction=+5pp", "--max-regression", "step_time=+10%",
                    "--junit", str(tmp_path / "j.xml"), "--markdown", str(tmp_path / "m.md"),
                    "--json", str(tmp_path / "g.json"), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert proc.returncode == 1, proc.stderr
    assert "FAIL --max-regression exposed_comm_fraction=+5pp: exposed_comm_fraction" in proc.stdout
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert suite.tag == "testsuites" and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == ["--max-regression exposed_comm_fraction=+5pp",
                                              "--max-regression step_time=+10%"]
    assert cases[0].find("failure") is not None and cases[1].find("failure") is None
    md = (tmp_path / "m.md").read_text().splitlines()
    table = [l for l in md if l.startswith("|")]
    assert table[0] == "| | rule | measured | baseline | detail |" and table[1] == "|---|---|---|---|---|"
    assert len(table) == 4 and all(l.count("|") == 6 for l in table)
    assert summary.read_text().startswith("earlier step\n### commprof gate")
    g = json.loads((tmp_path / "g.json").read_text())
    assert g["passed"] is False and [r["status"] for r in g["rules"]] == ["fail", "pass"]


def test_rules_from_pyproject_and_flags_override(tmp_path):
    base = baseline_file(tmp_path / "b.json", noisy(0.1, 0.01), noisy(0.2, 0.02))
    cur = baseline_file(tmp_path / "c.json", noisy(0.1, 0.01), noisy(0.2, 0.02))
    (tmp_path / "pyproject.toml").write_text(
        '[tool.commprof.gate]\nbaseline = "b.json"\nmax_exposed_comm_fraction = 0.1\n'
        'max_regression = ["step_time=+10%"]\n')
    proc = run_gate("gate", str(cur), cwd=tmp_path)
    assert proc.returncode == 1 and "rules from" in proc.stdout  # 0.2 > 0.1 from the file
    proc = run_gate("gate", str(cur), "--max-exposed-comm-fraction", "0.5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout  # the flag overrides the file's limit
    (tmp_path / "commprof.toml").write_text('[gate]\nbogus = 1\n')
    proc = run_gate("gate", str(cur), cwd=tmp_path)
    assert proc.returncode == 2 and "unknown gate key(s) bogus" in proc.stderr


@pytest.mark.parametrize("args, words", [
    (["--max-regression", "step_time=+10%"], "needs --baseline"),
    (["--baseline", "missing.json", "--max-regression", "step_time=+10%"], "missing.json"),
    (["--max-regression", "step_time=+10pp", "--baseline", "b.json"], "fractions only"),
    (["--min-busbw", "all_reduce"], "OP[:SIZE+]=RATE"),
    (["--max", "nosuch=3"], "unknown metric 'nosuch'"),
    ([], "no gate rules"),
    (["--baseline", "old.json", "--max-regression", "step_time=+10%"], "commprof.baseline/0"),
    (["--skip-steps", "x", "--max-step-time", "1s"], "--skip-steps"),
    # a baseline's op_sizes rows are the report's, checked against the report's model
    (["--baseline", "rows.json", "--max-regression", "step_time=+10%"], "rows.json: op_sizes[0].bus_bytes: missing"),
])
def test_bad_input_is_exit_2_with_one_line(tmp_path, args, words):
    baseline_file(tmp_path / "b.json", noisy(0.1, 0.01), noisy(0.2, 0.02))
    baseline_file(tmp_path / "rows.json", noisy(0.1, 0.01), noisy(0.2, 0.02), busbw_rows=[
        {"op": "all_reduce", "group_size": 2, "bucket": 20, "count": 1, "bytes": 1.5e6, "time_s": 1e-3}])
    cur = baseline_file(tmp_path / "c.json", noisy(0.1, 0.01), noisy(0.2, 0.02))
    (tmp_path / "old.json").write_text('{"schema": "commprof.baseline/0"}')
    proc = run_gate("gate", str(cur), *args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("commprof: error:") and words in lines[0], lines


@pytest.mark.parametrize("args, line", [
    (["--max-step-time", "250"], "--max-step-time 250: give a unit (ms, s, us)"),
    (["--max-bytes-per-step", "1200000"],
     "--max-bytes-per-step 1200000: give a unit (B, kB, MB, GB, KiB, MiB, GiB)"),
    (["--max", "step_time=0.25"], "--max step_time=0.25: give a unit (ms, s, us)"),
    (["--baseline", "b.json", "--max-regression", "step_time=10"],
     "--max-regression step_time=10: give a unit (ms, s, us) or a relative change (%)"),
    (["--baseline", "b.json", "--max-regression", "bytes_per_step=+100"],
     "--max-regression bytes_per_step=+100: give a unit (B, kB, MB, GB, KiB, MiB, GiB) or a "
     "relative change (%)"),
])
def test_times_and_sizes_without_a_unit_are_refused(tmp_path, args, line):
    """A bare 250 is neither 250 s nor 250 ms: refused, naming the units, instead of guessed."""
    baseline_file(tmp_path / "b.json", noisy(0.1, 0.01), noisy(0.2, 0.02))
    cur = baseline_file(tmp_path / "c.json", noisy(0.1, 0.01), noisy(0.2, 0.02))
    proc = run_gate("gate", str(cur), *args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines() == [f"commprof: error: {line}"]


@pytest.mark.parametrize("name, table, message", [
    ("pyproject.toml", "[tool.commprof.gate]\nmax_step_time = 250\n",
     "max_step_time = 250: give a unit (ms, s, us)"),
    ("commprof.toml", '[gate]\nmax_bytes_per_step = "1000"\n',
     'max_bytes_per_step = "1000": give a unit (B, kB, MB, GB, KiB, MiB, GiB)'),
    ("commprof.toml", '[gate]\nbaseline = "b.json"\nmax_regression = ["step_time=+20"]\n',
     'max_regression = "step_time=+20": give a unit (ms, s, us) or a relative change (%)'),
])
def test_config_values_without_a_unit_are_refused_naming_the_file(tmp_path, name, table, message):
    baseline_file(tmp_path / "b.json", noisy(0.1, 0.01), noisy(0.2, 0.02))
    cur = baseline_file(tmp_path / "c.json", noisy(0.1, 0.01), noisy(0.2, 0.02))
    (tmp_path / name).write_text(table)
    proc = run_gate("gate", str(cur), cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines() == [f"commprof: error: {tmp_path / name}: {message}"]


def test_values_with_units_and_bare_fractions_still_parse():
    assert rules.parse_value("250ms", "s", "r") == pytest.approx(0.25)
    assert rules.parse_value("20us", "s", "r") == pytest.approx(2e-5)
    assert rules.parse_value("1.5s", "s", "r") == pytest.approx(1.5)
    assert rules.parse_value("100MB", "B", "r") == 1e8
    assert rules.parse_value("0.2", "frac", "r") == pytest.approx(0.2)
    assert rules.parse_value("20%", "frac", "r") == pytest.approx(0.2)
    assert rules.parse_regression("exposed_comm_fraction=+5pp").limit == pytest.approx(0.05)
    assert rules.parse_regression("step_time=+20ms").limit == pytest.approx(0.02)
    for text, unit in (("250", "s"), ("0.25", "s"), ("1000", "B")):
        with pytest.raises(UsageError, match="give a unit"):
            rules.parse_value(text, unit, "r")


def test_save_baseline_round_trip_from_a_run(tmp_path):
    run = write_run(tmp_path / "run", [periodic_rank(0, steps=8), periodic_rank(1, steps=8)])
    path = tmp_path / "base.json"
    proc = run_gate("report", str(run), "--save-baseline", str(path))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(path.read_text())
    assert doc["schema"] == "commprof.baseline/1" and len(json.dumps(doc)) < 10_000
    m = measure.load(path)
    direct = measure.load(run)
    for name in ("step_time_mean", "exposed_s", "comm_s", "bytes_per_step"):
        assert np.allclose(m.series[name], direct.series[name])
    for name in ("step_time", "comm_fraction", "exposed_comm_fraction", "bytes_per_step"):
        assert m.values[name] == direct.values[name]  # the report's KPIs, saved as they are
    report = json.loads(run_gate("report", str(run), "-f", "json").stdout)
    assert direct.values["exposed_comm_fraction"] == report["kpis"]["exposed_comm_fraction"]
    proc = run_gate("gate", str(run), "--baseline", str(path), "--max-regression", "step_time=+1%",
                    "--max-regression", "bytes_per_step=+0%")
    assert proc.returncode == 0, proc.stdout
    proc = run_gate("compare", str(path), str(run))
    assert proc.returncode == 0 and "within noise" in proc.stdout or "same" in proc.stdout


def test_a_baselines_training_section_is_read_as_the_reports(tmp_path):
    """A baseline keeps the report's training section; it is read back into the same typed
    section (its loss curve), and one that is not the report's is one clear error naming the key."""
    from commprof.errors import ReportFileError
    path = baseline_file(tmp_path / "t.json", noisy(0.1, 0.01), noisy(0.2, 0.01))
    doc = json.loads(path.read_text())
    loss = {"steps": [3, 4], "values": [2.5, 2.0], "ranks": 2, "final": 2.0, "lost": 0, "source": "backward"}
    path.write_text(json.dumps({**doc, "training": {"loss": loss, "fixes": []}}))
    m = measure.load(path)
    assert (m.training.loss.steps, m.training.loss.values) == ([3, 4], [2.5, 2.0])
    assert measure.baseline_document(m)["training"] == {"loss": loss, "fixes": []}
    path.write_text(json.dumps({**doc, "training": {"loss": {"steps": [3]}, "fixes": []}}))
    with pytest.raises(ReportFileError, match=r"training\.loss\.values: missing"):
        measure.load(path)


def test_binomial_tail_is_exact_and_survives_long_runs():
    from math import comb
    from commprof.analysis.cross.crossrank import binom_tail
    exact = sum(comb(20, i) * 0.25 ** i * 0.75 ** (20 - i) for i in range(9, 21))
    assert binom_tail(9, 20, 0.25) == pytest.approx(exact, rel=1e-9)
    assert binom_tail(0, 20, 0.25) == 1.0 and binom_tail(21, 20, 0.25) == 0.0
    # no overflow at 5,000 steps; the normal approximation with continuity correction: 0.0529
    assert binom_tail(1300, 5000, 0.25) == pytest.approx(0.0529, rel=0.03)
    assert binom_tail(5000, 5000, 0.25) < 1e-300 or binom_tail(5000, 5000, 0.25) == 0.0
