"""The HTML report's training section: the loss curve of the run, and the curves it is compared
with (``training.compare``: ``commprof try`` adds the baseline's), and the fixes applied."""
from __future__ import annotations

import html

from commprof.report.html_plot import figure


def loss_figure(doc: dict) -> dict | None:
    """A plotly figure of ``training.loss`` and ``training.compare`` (None without a loss)."""
    t = doc.get("training") or {}
    curves = ([("this run", t["loss"])] if t.get("loss") else []) + [
        (c.get("label") or "other", c) for c in t.get("compare") or []]
    if not curves:
        return None
    import plotly.graph_objects as go
    data = [go.Scatter(x=c["steps"], y=c["values"], mode="lines+markers", name=html.escape(str(name)))
            for name, c in curves]
    return figure(data, dict(xaxis_title="step", yaxis_title="loss (mean over ranks)"))


def training_section(doc: dict, chart: bool) -> str:
    t = doc.get("training") or {}
    if not t:
        return ""
    fixes = "".join(f"<li><b>{html.escape(str(f['fix']))}</b>: {html.escape(str(f['status']))}"
                    + (f" — {html.escape(str(f['why']))}" if f.get("why") else "")
                    + f" (ranks {html.escape(', '.join(map(str, f['ranks'])))})</li>"
                    for f in t.get("fixes") or [])
    return ('<section id="training"><h2>Training</h2><p class="help">The loss of each step, from '
            'the tensor passed to backward() (docs/try.md); the fixes commprof try applied.</p>'
            + (f"<ul>{fixes}</ul>" if fixes else "")
            + ('<div id="loss-curve" class="chart"></div>' if chart else "") + "</section>")
