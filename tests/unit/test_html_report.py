"""The HTML renderer reads the typed Report: its charts and tables follow the report's fields,
including sections set on the typed object the way ``commprof try`` sets them (a baseline loss
curve in ``training.compare``).  In-process; the browser test is tests/integration/test_visual_report.py."""
from __future__ import annotations

import dataclasses
import html as html_mod
import json

import pytest

from commprof.analysis.result.model import Links, ProbeCurvePoint, Report
from commprof.analysis.result.model_sections import FixRow, LossCurve, LossSeries, Training
from commprof.cli.report import build_report
from commprof.report.html import HtmlRenderer

from synthetic import periodic_rank, write_run


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Report:
    """Two ranks, five steps of one all_reduce each; rank 1 waits longer (cross-rank data)."""
    run = write_run(tmp_path_factory.mktemp("html") / "run",
                    [periodic_rank(0, steps=5), periodic_rank(1, steps=5, wait_ms=(10, 60))])
    return build_report(run, 1, jobs=1)


def fresh(report: Report) -> Report:
    """A copy to edit (the fixture is shared)."""
    return Report.from_dict(report.to_dict())


def render(report: Report) -> tuple[str, dict]:
    """The page and its figures (the JSON handed to plotly.js)."""
    page = HtmlRenderer().render(report, color=False, width=None)
    figures = page.split("<script>var FIGURES = ", 1)[1].split(";</script>", 1)[0]
    return page, json.loads(figures)


def traces(figure: dict) -> dict[str, dict]:
    return {t["name"]: t for t in figure["data"]}


def test_step_timeline_splits_each_step_into_compute_hidden_and_exposed(report):
    _, figures = render(report)
    bars = traces(figures["step-timeline"])
    rows = report.steps.per_step
    assert rows and bars["compute"]["x"] == [r.step for r in rows]
    for i, r in enumerate(rows):
        step_ms = r.duration_s * 1e3
        in_flight, exposed = step_ms * r.comm_fraction, step_ms * r.exposed_comm_fraction
        assert bars["communication exposed"]["y"][i] == pytest.approx(exposed)
        assert bars["communication hidden"]["y"][i] == pytest.approx(in_flight - exposed)
        assert bars["compute"]["y"][i] == pytest.approx(step_ms - in_flight)


def test_rank_table_and_rank_view_follow_the_typed_ranks(report):
    doc = fresh(report)
    doc.ranks[1].complete, doc.ranks[1].exit_reason, doc.ranks[1].last_record_s = False, None, 1.5
    page, figures = render(doc)
    table = page.split('id="rank-table"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 1 + len(doc.ranks)  # the head, then one row per rank
    assert "incomplete (died?, last record at 1.5 s)" in table
    in_flight = traces(figures["rank-view"])["in flight (s)"]
    assert in_flight["x"] == [str(r.rank) for r in doc.ranks]
    assert in_flight["y"] == pytest.approx([r.comm_s for r in doc.ranks])


def test_loss_curve_shows_a_baseline_set_on_the_typed_training(report):
    doc = fresh(report)
    doc.training = Training(
        loss=LossCurve(steps=[0, 1, 2], values=[3.0, 2.0, 1.5], ranks=2, final=1.5, lost=0,
                       source="backward"),
        fixes=[FixRow(fix="local-sgd:4", status="skipped", why="<no> optimizer", changes=None,
                      ranks=[0, 1])],
        compare=[LossSeries(label="baseline", steps=[0, 1, 2], values=[3.0, 2.5, 2.25])])
    page, figures = render(doc)
    curves = traces(figures["loss-curve"])
    assert curves["this run"]["y"] == [3.0, 2.0, 1.5]
    assert curves["baseline"]["x"] == [0, 1, 2] and curves["baseline"]["y"] == [3.0, 2.5, 2.25]
    section = page.split('<section id="training">', 1)[1].split("</section>", 1)[0]
    assert f"<b>local-sgd:4</b>: skipped — {html_mod.escape('<no> optimizer')} (ranks 0, 1)" in section
    assert '<div id="loss-curve" class="chart">' in section


def test_sections_without_their_data_are_left_out(report):
    doc = fresh(report)
    doc.training, doc.links, doc.cross_rank, doc.whatif = None, None, None, None
    doc.steps = dataclasses.replace(doc.steps, per_step=[])
    page, figures = render(doc)
    assert set(figures) == {"op-bandwidth", "rank-view"}
    for section in ('id="training"', 'id="links"', 'id="whatif"', 'id="arrivals"'):
        assert section not in page
    assert "No training steps were detected." in page


def test_probe_curve_leaves_out_points_without_busbw_and_sorts_by_size(report):
    doc = fresh(report)
    sizes = {1 << 20: 1.5, 1 << 10: 0.25, 1 << 12: None}
    doc.links = Links(sampler=[], interfaces=[], gauges=[], tcp=[], efficiency=[], probe=None,
                      timeline=[], notes=[], probe_curve=[
                          ProbeCurvePoint(op="all_reduce", size_bytes=s, busbw_gbps=b)
                          for s, b in sizes.items()])
    page, figures = render(doc)
    probe = traces(figures["op-bandwidth"])["probe all_reduce"]
    assert probe["x"] == [1 << 10, 1 << 20] and probe["y"] == [0.25, 1.5]
    assert '<section id="links">' in page and 'id="link-timeline"' not in page  # no timeline
