"""The one assembler (commprof/analysis/outcome/assemble.py) and the typed result's contract:

* ``assemble(summary)`` returns a :class:`Report` whose ``to_dict()`` is the JSON document the
  report was before the typed result (the golden copies, ``tests/golden/reports/``, written by the
  dict-building code), for a run (the committed demo capture) and a profiler trace alike;
* a saved report loads (``document.load``) into an equal Report, key order and absent keys kept;
* an optional key the analysis leaves out is absent (``has()`` False, left out of the JSON again),
  a null stays a null;
* a value of the wrong type from the analysis itself is refused with the key and ``<analysis>``.

The key-by-key round trips of edited documents (every optional key absent, every allowed null)
are in test_report_model.py.
"""
from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from commprof.analysis.outcome import advice, whatif
from commprof.analysis.outcome.assemble import SOURCE, assemble
from commprof.analysis.result.model import Recommendation, Report
from commprof.cli.report import summarize_run
from commprof.errors import ReportFileError
from commprof.report import document
from commprof.report.renderers import renderers

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("golden_reports", ROOT / "scripts" / "golden_reports.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)
TRACE = golden.SHARED / "hta_sampled_rank0.json.gz"  # small (0.1 MB), records its rank
WARMUP = 2  # commprof report's default, as the golden copies were written


@pytest.fixture(scope="module")
def demo():
    """The committed demo capture's summary (a run)."""
    return summarize_run(str(golden.DEMO_RUN), WARMUP)


@pytest.fixture(scope="module")
def trace():
    if not TRACE.is_file():
        pytest.skip(f"no shared trace {TRACE}")
    return summarize_run(str(TRACE), WARMUP)


def as_golden(report: Report, source: Path) -> dict:
    """``report``'s JSON document normalised as scripts/golden_reports.py does (path, version)."""
    text = renderers()["json"].render(report).replace(str(source), "<SOURCE>")
    doc = json.loads(text)
    doc["run"].pop("commprof_version", None)
    return doc


def stored(name: str) -> dict:
    return json.loads((golden.GOLDEN / "reports" / f"{name}.json").read_text())


def test_a_runs_report_is_the_document_it_was(demo):
    report = assemble(demo)
    assert isinstance(report, Report)
    assert as_golden(report, golden.DEMO_RUN) == stored("demo")


def test_a_traces_report_is_the_document_it_was(trace):
    report = assemble(trace)
    assert isinstance(report, Report)
    assert as_golden(report, TRACE) == stored(TRACE.name.removesuffix(".json.gz"))


def test_the_report_is_typed_all_the_way_down(demo):
    report = assemble(demo)
    assert report.ops and all(type(op).__name__ == "OpRow" for op in report.ops)
    assert report.recommendations and all(isinstance(r, Recommendation) for r in report.recommendations)
    assert report.run.world_size == len(report.ranks) == report.to_dict()["run"]["world_size"]


@pytest.mark.parametrize("which", ["demo", "trace"])
def test_a_saved_report_loads_into_an_equal_report(which, request, tmp_path):
    report = assemble(request.getfixturevalue(which))
    saved = tmp_path / "r.json"
    saved.write_text(renderers()["json"].render(report))
    loaded = document.load(saved)
    assert loaded == report
    assert json.dumps(loaded.to_dict()) == json.dumps(report.to_dict())  # key order, absent keys
    assert renderers()["json"].render(loaded) == saved.read_text()


def test_absent_stays_absent_and_null_stays_null(demo, trace, tmp_path):
    """A run has no ``gpu_comm`` (traces only) and a trace no ``training``: absent, read as None,
    and left out of the JSON; ``hang`` is a null every document has: it stays a null."""
    for summary, absent in ((demo, "gpu_comm"), (trace, "training")):
        report = assemble(summary)
        assert getattr(report, absent) is None and not report.has(absent)
        assert absent not in report.to_dict()
        assert report.hang is None and report.has("hang") and report.to_dict()["hang"] is None
        saved = tmp_path / "r.json"
        saved.write_text(json.dumps(report.to_dict()))
        loaded = document.load(saved)
        assert not loaded.has(absent) and absent not in loaded.to_dict()
        assert loaded.has("hang") and loaded.to_dict()["hang"] is None


def _refused(summary, message: str) -> None:
    with pytest.raises(ReportFileError) as exc:
        assemble(summary)
    assert exc.value.path == SOURCE == "<analysis>"
    assert str(exc.value) == f"<analysis>: {message}"


def test_a_wrong_type_from_the_analysis_names_the_key(demo):
    bad = copy.deepcopy(demo)
    bad.kpis["comm_fraction"] = "12%"
    _refused(bad, 'kpis.comm_fraction: expected a number or null, got a string "12%"')
    bad = copy.deepcopy(demo)
    bad.ops["count"] = bad.ops["count"].astype(float)
    bad.ops.loc[bad.ops.index[0], "count"] = 3.5
    _refused(bad, "ops[0].count: expected an integer, got a number 3.5")
    bad = copy.deepcopy(demo)
    bad.run["hosts"] = [None]
    _refused(bad, "run.hosts[0]: expected a string, got null")


def test_a_wrong_type_from_the_what_if_or_the_advice_names_the_key(demo, monkeypatch):
    scenarios = whatif.scenarios

    def bad_scenarios(baseline):
        out = scenarios(baseline)
        out[0]["saving"] = "a lot"
        return out
    monkeypatch.setattr(whatif, "scenarios", bad_scenarios)
    _refused(demo, 'whatif[0].saving: expected a number or null, got a string "a lot"')
    monkeypatch.setattr(whatif, "scenarios", scenarios)

    recommendations = advice.recommendations
    n = len(recommendations(assemble(demo)))
    assert n

    def bad_recommendations(report):
        out = recommendations(report)
        out[-1]["projected_saving"] = None
        return out
    monkeypatch.setattr(advice, "recommendations", bad_recommendations)
    _refused(demo, f"recommendations[{n - 1}].projected_saving: expected a number, got null")


def _golden_report() -> Report:
    doc = json.loads((golden.GOLDEN / "reports" / "demo.json").read_text())
    doc["run"]["commprof_version"] = None  # the golden copy drops it
    return Report.from_dict(doc)


def test_replaced_makes_a_key_present_and_leaves_the_original_alone():
    report = _golden_report()
    assert report.training.compare is None and not report.training.has("compare")
    training = report.training.replaced(compare=[])
    assert training.has("compare") and training.to_dict()["compare"] == []
    assert "compare" not in report.training.to_dict()
    steps = report.steps.replaced(mean_s=1.25)
    assert steps.mean_s == 1.25 and steps.has("mean_s") and steps.to_dict()["mean_s"] == 1.25
    assert report.steps.mean_s != 1.25
    cut = report.replaced(steps=steps)
    assert cut.to_dict()["steps"]["mean_s"] == 1.25 and report.to_dict()["steps"]["mean_s"] != 1.25


def test_without_makes_an_optional_key_absent_and_refuses_a_required_one():
    report = _golden_report()
    assert report.has("whatif")
    lacking = report.without("whatif")
    assert lacking.whatif is None and not lacking.has("whatif") and "whatif" not in lacking.to_dict()
    assert report.has("whatif") and report.whatif
    with pytest.raises(ValueError, match="Report.kpis: not an optional key"):
        report.without("kpis")
