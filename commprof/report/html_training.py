"""The HTML report's training section: the loss curve of the run, and the curves it is compared
with (``training.compare``: ``commprof try`` adds the baseline's), and the fixes applied."""
from __future__ import annotations

import html

from commprof.analysis.result.model import Report
from commprof.report.html_plot import figure


def loss_figure(report: Report) -> dict | None:
    """A plotly figure of ``training.loss`` and ``training.compare`` (None without a loss)."""
    t = report.training
    if t is None:
        return None
    curves = ([("this run", t.loss)] if t.loss else []) + [
        (c.label or "other", c) for c in t.compare or []]
    if not curves:
        return None
    import plotly.graph_objects as go
    data = [go.Scatter(x=c.steps, y=c.values, mode="lines+markers", name=html.escape(str(name)))
            for name, c in curves]
    return figure(data, dict(xaxis_title="step", yaxis_title="loss (mean over ranks)"))


def training_section(report: Report, chart: bool) -> str:
    """The training section: the fixes applied and (``chart``) the loss curve's place ("" when
    the report has no ``training``)."""
    t = report.training
    if t is None:
        return ""
    fixes = "".join(f"<li><b>{html.escape(str(f.fix))}</b>: {html.escape(str(f.status))}"
                    + (f" — {html.escape(str(f.why))}" if f.why else "")
                    + f" (ranks {html.escape(', '.join(map(str, f.ranks)))})</li>"
                    for f in t.fixes or [])
    return ('<section id="training"><h2>Training</h2><p class="help">The loss of each step, from '
            'the tensor passed to backward() (docs/try.md); the fixes commprof try applied.</p>'
            + (f"<ul>{fixes}</ul>" if fixes else "")
            + ('<div id="loss-curve" class="chart"></div>' if chart else "") + "</section>")
