"""``commprof try`` reads the typed :class:`Report` (issue 28 item 3): the baseline cut to a short
rung's steps, the job's kind, a side's loss curve, the rule-out, the metric and the HTML page's
baseline curve, on the committed demo report (tests/golden/reports/demo.json) and edits of it.
Oracles from the definitions, computed on the JSON document, never through the code under test."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from commprof.analysis.result.model import Report
from commprof.cli import try_ as t, try_checks as tc, try_search as ts, try_verdict as tv

DEMO = Path(__file__).resolve().parents[1] / "golden" / "reports" / "demo.json"


@pytest.fixture
def doc() -> dict:
    d = json.loads(DEMO.read_text())
    d["run"].setdefault("commprof_version", None)  # the golden copy leaves the version out
    return d


def _with_loss(doc: dict, shift: float) -> Report:
    """The demo's report with its loss curve shifted by ``shift`` and one metric."""
    d = copy.deepcopy(doc)
    d["training"]["loss"]["values"] = [v + shift for v in d["training"]["loss"]["values"]]
    d["training"]["metrics"] = [{"name": "val_acc", "steps": [90], "values": [0.5 + shift], "ranks": [0, 1],
                                 "higher_is_better": True, "final": 0.5 + shift}]
    return Report.from_dict(d)


def test_the_baseline_cut_to_a_short_rung_keeps_its_first_steps(doc):
    report = Report.from_dict(doc)
    before = report.to_dict()
    cut = ts.truncated(report, 20)
    rows = [r for r in doc["steps"]["per_step"] if r["step"] < 20]
    assert rows and len(rows) < len(doc["steps"]["per_step"])
    out = cut.to_dict()
    assert out["steps"]["per_step"] == rows
    assert out["kpis"]["step_time_s"] == pytest.approx(np.mean([r["duration_mean_s"] for r in rows]))
    loss = doc["training"]["loss"]
    keep = [i for i, s in enumerate(loss["steps"]) if s < 20]
    assert out["training"]["loss"]["steps"] == [loss["steps"][i] for i in keep]
    assert out["training"]["loss"]["values"] == [loss["values"][i] for i in keep]
    assert "metrics" not in out["training"]  # the job's metrics, taken at the end, dropped
    assert out["ops"] == doc["ops"] and out["run"] == doc["run"]
    assert report.to_dict() == before  # the cached report itself is unchanged
    # a report saved without step_time_s or metrics: the cut has the one, lacks the other
    d = copy.deepcopy(doc)
    del d["kpis"]["step_time_s"]
    d["training"]["metrics"] = []
    out = ts.truncated(Report.from_dict(d), 20).to_dict()
    assert "step_time_s" in out["kpis"] and "metrics" not in out["training"]
    d.pop("training")
    assert ts.truncated(Report.from_dict(d), 20).training is None


def test_full_length_costs_and_candidates_come_from_the_reports(doc):
    short = copy.deepcopy(doc)
    short["steps"]["per_step"] = [r for r in short["steps"]["per_step"] if r["step"] < 30]
    reports = [Report.from_dict(doc), Report.from_dict(short)]
    assert ts.full_length(reports) == max(r["step"] for r in short["steps"]["per_step"]) + 1
    step_s = doc["kpis"]["step_time_s"]
    costs = ts.costs_of([10.0, 12.0], reports[:1], 50)
    assert costs.step_s == pytest.approx(step_s) and costs.startup_s == pytest.approx(11.0 - 50 * step_s)
    assert "all_reduce" in {o["op"] for o in doc["ops"]}
    assert ts.candidates_for(reports[0])[0] == "bf16-compress"
    assert set(ts.candidates_for(reports[0])) == set(ts.DDP_CANDIDATES)
    fsdp = copy.deepcopy(doc)
    for o in fsdp["ops"]:
        o["op"] = "reduce_scatter"
    assert ts.candidates_for(Report.from_dict(fsdp)) == ts.FSDP_CANDIDATES
    fsdp["ops"] = []
    assert ts.candidates_for(Report.from_dict(fsdp)) == []


def test_a_side_averages_its_runs_losses_on_the_steps_they_share(doc):
    a, b = _with_loss(doc, 0.0), _with_loss(doc, 1.0)
    b.training.loss.steps = b.training.loss.steps[5:]
    b.training.loss.values = b.training.loss.values[5:]
    side = t.Side("baseline", [Path("a"), Path("b")], [a, b])
    curve = side.loss()
    loss = doc["training"]["loss"]
    assert curve["steps"] == loss["steps"][5:]
    assert curve["values"] == pytest.approx([v + 0.5 for v in loss["values"][5:]])
    assert curve["final"] == curve["values"][-1]
    assert side.step_time() == pytest.approx(np.mean([r["duration_mean_s"] for r in doc["steps"]["per_step"]]))
    assert side.kpi("bytes_per_step") == pytest.approx(doc["kpis"]["bytes_per_step"])
    no_loss = copy.deepcopy(doc)
    no_loss.pop("training")
    assert t.Side("x", [Path("c")], [Report.from_dict(no_loss)]).loss() is None


def test_the_metric_every_run_reported_is_the_one_judged(doc):
    a, b = _with_loss(doc, 0.0), _with_loss(doc, 0.1)
    assert tv.common_metric([a, b]) == "val_acc" and tv.common_metric([a, b], "loss") is None
    assert tv.metric_of(b, "val_acc").final == pytest.approx(0.6)
    plain = copy.deepcopy(doc)  # no metrics key at all
    assert tv.common_metric([a, Report.from_dict(plain)]) is None
    curve = tv.loss_curve(a, 2)
    assert list(curve.steps) == [s for s in doc["training"]["loss"]["steps"] if s >= 2]


def test_a_fix_without_its_target_is_ruled_out_from_the_report_alone(doc, tmp_path):
    d = copy.deepcopy(doc)
    for o in d["ops"]:
        o["op"] = "all_to_all"
    said = []
    kept, ruled = tc.rule_out(["bf16-compress", "bf16-reduce"], tmp_path / "saved.json", Report.from_dict(d), 5,
                              said.append)
    assert kept == [] and [s for s, _ in ruled] == ["bf16-compress", "bf16-reduce"]
    assert "no DistributedDataParallel model" in ruled[0][1] and "fully_shard" in ruled[1][1]
    assert len(said) == 2
    kept, ruled = tc.rule_out(["bf16-compress"], tmp_path / "saved.json", Report.from_dict(doc), 5, said.append)
    assert kept == ["bf16-compress"] and ruled == []
    k = doc["kpis"]
    assert tc.measured_compute(Report.from_dict(doc)) == pytest.approx(k["step_time_s"] - k["exposed_comm_s_per_step"])


def test_the_fix_page_shows_the_baselines_curve_and_leaves_the_cached_report_alone(doc, tmp_path, monkeypatch):
    from commprof.report import html
    seen = []
    monkeypatch.setattr(html.HtmlRenderer, "render", lambda self, report, **kw: seen.append(report) or "page")
    base = t.Side("baseline", [Path("a")], [_with_loss(doc, 1.0)])
    fixed = _with_loss(doc, 0.0)
    path = t._html(tmp_path, base, t.Side("bf16-compress", [Path("b")], [fixed]))
    assert path == tmp_path / "bf16-compress.html" and path.read_text() == "page"
    (shown,) = seen
    loss = doc["training"]["loss"]
    compare = shown.to_dict()["training"]["compare"]
    assert compare == [{"label": "baseline", "steps": loss["steps"], "values": [v + 1.0 for v in loss["values"]]}]
    assert fixed.training.compare is None and "compare" not in fixed.to_dict()["training"]
