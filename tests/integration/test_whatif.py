"""What-if model arithmetic on known inputs, the report sections and the whatif command."""
from __future__ import annotations

import json

import pytest

from commprof.analysis.outcome.advice import recommendations
from commprof.analysis.outcome.whatif import Baseline, project, scenarios
from commprof.analysis.result.model import Report
from commprof.cli.report import summarize_run
from runner import commprof
from synthetic import periodic_rank, write_run


def test_blocking_communication_scales_with_bandwidth_and_bytes():
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.060)  # no overlap: 40 ms compute
    assert project(b, bandwidth=2)["step_time_s"] == pytest.approx(0.070)
    assert project(b, bytes_div=2)["step_time_s"] == pytest.approx(0.070)
    assert project(b, bandwidth=2, bytes_div=2)["step_time_s"] == pytest.approx(0.055)
    assert project(b, overlap=True)["step_time_s"] == pytest.approx(0.060)  # comm can't hide in 40 ms


def test_hidden_communication_stays_hidden_and_the_tail_shrinks_first():
    b = Baseline(step_s=0.100, comm_s=0.050, exposed_s=0.020)  # 30 ms hidden, 20 ms tail
    r = project(b, bandwidth=2)  # transfer 50 -> 25 ms: 25 ms saved, more than the 20 ms tail
    assert r["step_time_s"] == pytest.approx(0.080) and r["exposed_comm_fraction"] == 0


def test_latency_floor_and_straggler_wait_do_not_scale():
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.060, straggler_wait_s=0.020,
                 latency_floor_s=0.010)
    # transfer 40 ms = 10 ms floor + 30 ms bandwidth; x2 -> 25 ms; plus the 20 ms wait
    assert project(b, bandwidth=2)["step_time_s"] == pytest.approx(0.040 + 0.025 + 0.020)
    assert project(b, no_straggler=True)["step_time_s"] == pytest.approx(0.080)


def test_each_step_is_projected_and_the_time_weighted_result_reported():
    # three steps; the second is slow for a reason outside communication (a GC pause)
    b = Baseline(step_s=[0.100, 0.300, 0.100], comm_s=[0.060] * 3, exposed_s=[0.060] * 3)
    none = project(b)  # no change: the measured mean step and time-weighted fractions
    assert none["step_time_s"] == pytest.approx(0.500 / 3)
    assert none["comm_fraction"] == pytest.approx(0.180 / 0.500)
    # x2: 60 ms of exposed transfer -> 30 ms in each step: 70, 270, 70 ms
    assert project(b, bandwidth=2)["step_time_s"] == pytest.approx((0.070 + 0.270 + 0.070) / 3)


def test_sync_every_k():
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.050)
    # one synchronizing step (100 ms) + three without any communication (100 - 60 = 40 ms)
    assert project(b, sync_every=4)["step_time_s"] == pytest.approx((0.100 + 3 * 0.040) / 4)
    with pytest.raises(ValueError):
        project(b, sync_every=0)


def test_report_has_whatif_and_ranked_recommendations(tmp_path):
    run = write_run(tmp_path / "run", [periodic_rank(0, steps=6), periodic_rank(1, steps=6)])
    proc = commprof("report", str(run), "-f", "json")
    doc = json.loads(proc.stdout)
    names = [w["name"] for w in doc["whatif"]]
    assert names == ["bandwidth x2", "bandwidth x4", "bytes /2", "bytes /10", "sync every 4 steps",
                     "perfect overlap"]  # no significant straggler: no such scenario
    for w in doc["whatif"]:
        assert w["model"] and w["inputs"]["step_s"] == pytest.approx(doc["kpis"]["step_time_s"])
        assert 0 < w["step_time_s"] <= doc["kpis"]["step_time_s"] + 1e-12
        assert w["speedup"] <= doc["assessment"]["speedup_bound"] + 1e-9  # the verdict bounds them
    savings = [r["projected_saving"] for r in doc["recommendations"]]
    assert savings == sorted(savings, reverse=True) and savings
    # the job's own all-reduces, no DDP broadcast: bf16 gradients, and no DDP API (test_savings.py)
    assert any("in bf16" in r["action"] for r in doc["recommendations"])
    assert not any("DDP" in r["action"] or "hook" in r["action"] for r in doc["recommendations"])
    text = commprof("report", str(run), "--width", "160").stdout
    assert "What if" in text and "Recommendations" in text
    without = Report.from_dict(doc)  # the same report without what-if rows: nothing to rank
    without.whatif = []
    assert recommendations(without) == [] and scenarios(None) == []


def test_whatif_command(tmp_path):
    run = write_run(tmp_path / "run", [periodic_rank(0, steps=6), periodic_rank(1, steps=6)])
    proc = commprof("whatif", str(run), "--bandwidth", "x2", "--bytes", "/2", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["changes"]["bandwidth"] == 2 and out["changes"]["bytes_div"] == 2
    assert out["step_time_s"] < out["inputs"]["step_s"]
    doc = json.loads(commprof("report", str(run), "-f", "json").stdout)
    b = summarize_run(str(run), 2).baseline
    assert out["step_time_s"] == pytest.approx(project(b, bandwidth=2, bytes_div=2)["step_time_s"])
    same = json.loads(commprof("whatif", str(run), "-f", "json").stdout)  # no change: the KPIs
    assert same["step_time_s"] == pytest.approx(doc["kpis"]["step_time_s"], rel=1e-12)
    assert same["comm_fraction"] == pytest.approx(doc["kpis"]["comm_fraction"], rel=1e-12)
    assert same["exposed_comm_fraction"] == pytest.approx(doc["kpis"]["exposed_comm_fraction"], rel=1e-12)
    bad = commprof("whatif", str(run), "--bytes", "/0")
    assert bad.returncode == 2 and "--bytes" in bad.stderr
