"""The self-contained HTML report: verdict, step timeline, ops, ranks, links, commprof's own cost,
read from the typed :class:`~commprof.analysis.result.model.Report`.

Charts are plotly figures (built with ``plotly.graph_objects``) drawn by plotly.js, which is
inlined from the ``plotly`` package: the file opens offline, with hover and zoom, and needs no
server (docs/architecture.md says why plotly).  Every string that came from the run (command
line, hosts, paths, group and interface names) is HTML-escaped; the data handed to the charts is
JSON with ``<``, ``>`` and ``&`` escaped, so nothing captured can close a ``<script>``.
"""
from __future__ import annotations

import html
import json
import os

from commprof.analysis.result.model import Report
from commprof.report.html_ops import ops_section
from commprof.report.html_plot import figure
from commprof.report.html_training import loss_figure, training_section
from commprof.report.notes import (assessment, except_kind, is_trace, of_kind, rank_status,
                                   source_rows, timeline_cards)
from commprof.format.units import fmt_bytes, fmt_pct, fmt_seconds

_COLORS = {"compute": "#8da0cb", "hidden": "#66c2a5", "exposed": "#fc8d62"}


def _code(text) -> str:
    """Escaped text whose `backticked` spans become <code> (recommendations are written so)."""
    parts = str(text).split("`")
    return "".join(f"<code>{_e(p)}</code>" if i % 2 else _e(p) for i, p in enumerate(parts))


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _script_json(obj) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' survives literally."""
    text = json.dumps(obj, allow_nan=False, default=float)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _plotly_js() -> str:
    import plotly
    path = os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")
    with open(path, encoding="utf-8") as fh:
        return fh.read().replace("</script", "<\\/script")


class HtmlRenderer:
    """One file, no network: ``commprof report RUN -o report.html``."""

    name = "html"
    suffixes = (".html", ".htm")

    def render(self, report: Report, *, color: bool = False, width: int | None = None) -> str:
        figures = {name: fig for name, fig in (
            ("step-timeline", step_timeline(report)), ("op-bandwidth", op_bandwidth(report)),
            ("rank-view", rank_view(report)), ("arrivals", arrivals(report)),
            ("link-timeline", link_timeline(report)), ("loss-curve", loss_figure(report))) if fig}
        body = "\n".join([banner(report), hang(report),
                          steps_section(report, "step-timeline" in figures),
                          ops_section(report, "op-bandwidth" in figures),
                          ranks_section(report, "arrivals" in figures),
                          whatif_section(report), training_section(report, "loss-curve" in figures),
                          links_section(report, "link-timeline" in figures),
                          overhead_section(report), notes_section(report)])
        return _PAGE.format(title=_e(f"commprof report — {report.run.path}"), style=_STYLE,
                            plotly=_plotly_js(), body=body, figures=_script_json(figures),
                            script=_SCRIPT)


# -- sections ------------------------------------------------------------------------------------

def banner(report: Report) -> str:
    k, run, steps = report.kpis, report.run, report.steps
    v = assessment(report)
    level = {"bound": "bad", "partly_bound": "warn", "not_bound": "good"}.get(v.level, "unknown")
    headline = (v.label if v.level == "unmeasured" else
                f"Communication is exposed for {fmt_pct(v.exposed_fraction)} of {v.basis} "
                f"(in flight {fmt_pct(v.comm_fraction)}) — {v.label}")
    cards = [("bytes synchronized", f"{fmt_bytes(k.bytes_per_step)} per step per rank",
              f"bus {fmt_bytes(k.bus_bytes_per_step)}"),
             ("communication share", f"{fmt_pct(k.exposed_comm_fraction)} exposed",
              f"{fmt_pct(k.comm_fraction)} in flight; worst rank "
              f"{fmt_pct(k.exposed_comm_fraction_max_rank)}"),
             ("bandwidth achieved", f"busbw {_gbps(k.busbw_gbps)}",
              f"algbw {_gbps(k.algbw_gbps)}, time-weighted over all ops")]
    cards += timeline_cards(k, steps)
    meta = source_rows(run)
    meta += [("steps",
              f"{steps.count} ({steps.source}); median {fmt_seconds(steps.median_s)}, "
              f"{steps.measured} measured after {steps.warmup} warm-up"),
             ("traces" if is_trace(run) else "run directory", run.path)]
    return (f'<header class="verdict {level}"><h1 id="verdict">{_e(headline)}</h1>'
            f'<p class="sentence">{_e(report.verdict)}</p><div class="cards">'
            + "".join(f'<div class="card"><h3>{_e(t)}</h3><div class="big">{_e(v)}</div>'
                      f'<div class="small">{_e(d)}</div></div>' for t, v, d in cards)
            + '</div><table class="meta">'
            + "".join(f"<tr><th>{_e(a)}</th><td>{_e(b)}</td></tr>" for a, b in meta)
            + "</table></header>")


def hang(report: Report) -> str:
    h = report.hang
    if not h:
        return ""
    from commprof.analysis.cross.hang_text import hang_lines
    return ('<section id="hang" class="alert"><h2>Hang detected</h2><pre>'
            + _e("\n".join(hang_lines(h))) + "</pre></section>")


def steps_section(report: Report, chart: bool) -> str:
    if not chart:
        return '<section id="steps"><h2>Steps</h2><p>No training steps were detected.</p></section>'
    return ('<section id="steps"><h2>Step timeline</h2><p class="help">Each measured step (median '
            'over ranks): compute, communication hidden behind compute, and exposed communication '
            '(the training thread waited).</p><div id="step-timeline" class="chart"></div></section>')


def ranks_section(report: Report, arrivals_chart: bool = False) -> str:
    head = ["rank", "host", "ops", "bytes", "step", "comm", "exposed", "wait", "transfer",
            "last arrival", "status"]
    rows = "".join(
        "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in (
            r.rank, r.host or "unknown", r.ops, fmt_bytes(r.bytes), fmt_seconds(r.step_median_s),
            fmt_pct(r.comm_fraction), fmt_pct(r.exposed_comm_fraction),
            fmt_seconds(r.wait_s), fmt_seconds(r.transfer_s), fmt_pct(r.last_share),
            rank_status(r, report.hang))) + "</tr>" for r in report.ranks)
    strag = "".join(f'<p class="bad"><b>Straggler:</b> {_e(n.text)}.</p>'
                    for n in of_kind(report, "straggler"))
    chart = ('<p class="help">Per step, how long each rank waited for the last one to arrive '
             '(clocks aligned to rank 0).</p><div id="arrivals" class="chart"></div>') if arrivals_chart else ""
    return ('<section id="ranks"><h2>Ranks</h2>' + strag + '<p class="help">Communication time per '
            'rank over the whole run: in flight, exposed (the training thread waited), waiting for '
            'late ranks, and transfer once all had arrived. A rank that waits much less than the '
            'others is often the straggler they wait for.</p>'
            '<div id="rank-view" class="chart"></div>' + chart + '<table class="sortable" id="rank-table"><thead><tr>'
            + "".join(f"<th>{_e(h)}</th>" for h in head) + f"</tr></thead><tbody>{rows}</tbody></table></section>")


def whatif_section(report: Report) -> str:
    rows = report.whatif or []
    if not rows:
        return ""
    head = ["scenario", "projected step", "speed-up", "comm", "exposed", "model"]
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in (
            w.name, fmt_seconds(w.step_time_s), "-" if w.speedup is None else f"{w.speedup:.2f}x",
            fmt_pct(w.comm_fraction), fmt_pct(w.exposed_comm_fraction), w.model)) + "</tr>"
        for w in rows)
    recs = "".join(f"<li><b>{_code(r.action)}</b> ({_e(r.kind)}): ~{_e(round(r.projected_saving * 100))}% "
                   f"per step — {_code(r.evidence)}</li>" for r in report.recommendations or [])
    return ('<section id="whatif"><h2>What if</h2><p class="help">Projected from this run '
            '(docs/whatif.md); measured step (mean): ' + _e(fmt_seconds(report.kpis.step_time_s)) + '</p>'
            '<table class="sortable"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head)
            + f"</tr></thead><tbody>{body}</tbody></table>"
            + (f"<h3>Recommendations</h3><ol>{recs}</ol>" if recs else "") + "</section>")


def links_section(report: Report, chart: bool) -> str:
    lk = report.links
    if not lk:
        return ""
    parts = ['<section id="links"><h2>Links</h2>']
    if chart:
        parts.append('<p class="help">Throughput of each busy interface over time; shaded: '
                     'a collective was in flight on that host.</p><div id="link-timeline" class="chart"></div>')
    head = ["link", "tx", "tx mean", "tx peak", "tx in comm", "rx mean", "wire/logical"]
    rows = "".join(
        "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in (
            f"{r.host}:{r.source}/{r.device}", fmt_bytes(r.tx_bytes),
            _rate(r.tx_mean_Bps), _rate(r.tx_peak_Bps), _rate(r.tx_comm_Bps), _rate(r.rx_mean_Bps),
            "-" if r.wire_to_logical is None else f"{r.wire_to_logical:.3f}")) + "</tr>"
        for r in lk.interfaces if (r.tx_bytes or 0) + (r.rx_bytes or 0) > 0)
    parts.append('<table class="sortable"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head)
                 + f"</tr></thead><tbody>{rows}</tbody></table>")
    for t in lk.tcp:
        parts.append(f"<p>TCP to {_e(t.peer)}: path RTT {_e(t.minrtt_ms)} ms, smoothed "
                     f"{_e(round(t.srtt_ms_median, 3))} ms median, {_e(t.retrans)} retransmits</p>")
    for e in lk.efficiency:
        parts.append(f"<p>{_e(e.op)} at {_e(fmt_bytes(e.size_bytes))}: job busbw "
                     f"{_e(_num(e.job_busbw_gbps))} GB/s = {_e(fmt_pct(e.efficiency))} of the probe's</p>")
    for s in lk.sampler:
        parts.append(f'<p class="small">sampler on {_e(s.host)}: {_e(fmt_pct(s.cpu_fraction_of_core))} '
                     f'of a core at {_e(s.hz)} Hz</p>')
    parts.append("</section>")
    return "".join(parts)


def overhead_section(report: Report) -> str:
    o = report.overhead
    if not o.calls:
        return ""
    return ('<section id="overhead"><h2>What commprof cost this run</h2><p>'
            f"{_e(o.calls)} calls recorded; recording measured at {_e(round(o.record_us_per_call or 0, 1))} µs "
            f"per call inside the hooks, plus ≈ {_e(round(o.dispatch_us_per_call_estimate))} µs per call "
            f"of dispatch (benchmark)"
            + (f", plus {_e(o.gpu_windows)} GPU window(s) of torch.profiler taking "
               f"{_e(fmt_seconds(o.gpu_window_s_per_rank))} per rank (measured)"
               if o.gpu_windows else "")
            + f": about {_e(fmt_pct(o.estimated_fraction_of_wall))} of wall "
            "time.</p></section>")


def notes_section(report: Report) -> str:
    items = [f"<li>{_e(n.text)}</li>" for n in except_kind(report, "straggler")]
    items += [f"<li class=\"bad\">commprof degraded on rank {_e(d.rank)}: {_e(d.where)} failed "
              f"{_e(d.count)}x ({_e(d.error)})</li>" for d in report.degraded]
    return f'<section id="notes"><h2>Notes</h2><ul>{"".join(items)}</ul></section>' if items else ""


# -- figures (plotly JSON) ---------------------------------------------------------------------

def step_timeline(report: Report) -> dict | None:
    import plotly.graph_objects as go
    rows = report.steps.per_step or []
    if not rows:
        return None
    x = [r.step for r in rows]
    dur = [r.duration_s * 1e3 for r in rows]
    comm = [min(r.comm_fraction or 0, 1) for r in rows]
    exp = [min(r.exposed_comm_fraction or 0, c) for r, c in zip(rows, comm)]
    compute = [d * (1 - c) for d, c in zip(dur, comm)]
    hidden = [d * (c - e) for d, c, e in zip(dur, comm, exp)]
    exposed = [d * e for d, e in zip(dur, exp)]
    data = [go.Bar(x=x, y=compute, name="compute", marker_color=_COLORS["compute"]),
            go.Bar(x=x, y=hidden, name="communication hidden", marker_color=_COLORS["hidden"]),
            go.Bar(x=x, y=exposed, name="communication exposed", marker_color=_COLORS["exposed"])]
    return figure(data, dict(barmode="stack", xaxis_title="step", yaxis_title="ms"))


def op_bandwidth(report: Report) -> dict | None:
    import plotly.graph_objects as go
    rows = [r for r in report.op_sizes or [] if r.time_s and r.bus_bytes]
    if not rows:
        return None
    data = []
    for op in sorted({r.op for r in rows}):
        mine = sorted((r for r in rows if r.op == op), key=lambda r: r.bytes / r.count)
        data.append(go.Scatter(
            x=[r.bytes / r.count for r in mine], y=[r.bus_bytes / r.time_s / 1e9 for r in mine],
            mode="markers+lines", name=op,
            marker=dict(size=[min(30, 6 + 2 * r.count ** 0.5) for r in mine]),
            text=[f"{r.count} calls, n={r.group_size}" for r in mine]))
    curve = (report.links.probe_curve if report.links else None) or []
    for op in sorted({c.op for c in curve}):
        pts = sorted((c for c in curve if c.op == op and c.busbw_gbps), key=lambda c: c.size_bytes)
        data.append(go.Scatter(x=[c.size_bytes for c in pts], y=[c.busbw_gbps for c in pts],
                               mode="lines", line=dict(dash="dash"), name=f"probe {op}"))
    return figure(data, dict(xaxis=dict(type="log", title="message size S (bytes)"),
                           yaxis=dict(type="log", title="busbw (GB/s)", exponentformat="power")))


def rank_view(report: Report) -> dict | None:
    import plotly.graph_objects as go
    ranks = [r for r in report.ranks if r.comm_s is not None]
    if not ranks:
        return None
    x = [str(r.rank) for r in ranks]
    data = [go.Bar(x=x, y=[r.comm_s for r in ranks], name="in flight (s)", marker_color=_COLORS["hidden"]),
            go.Bar(x=x, y=[r.exposed_comm_s for r in ranks], name="exposed (s)",
                   marker_color=_COLORS["exposed"])]
    if any(r.wait_s is not None for r in ranks):
        data += [go.Bar(x=x, y=[r.wait_s for r in ranks], name="waiting for late ranks (s)",
                        marker_color="#e78ac3"),
                 go.Bar(x=x, y=[r.transfer_s for r in ranks], name="transfer (s)",
                        marker_color="#a6d854")]
    return figure(data, dict(barmode="group", xaxis=dict(title="rank", type="category"),
                           yaxis_title="seconds, whole run"))


def arrivals(report: Report) -> dict | None:
    """Per measured step, each rank's wait for late ranks (ms): the straggler waits ~0."""
    import plotly.graph_objects as go
    rows = (report.cross_rank.per_step if report.cross_rank else None) or []
    if not rows:
        return None
    ranks = rows[0].ranks
    data = [go.Scatter(x=[r.step for r in rows], y=[r.wait_s[i] * 1e3 for r in rows],
                       mode="lines+markers", name=f"rank {rank}") for i, rank in enumerate(ranks)]
    return figure(data, dict(xaxis_title="step", yaxis_title="ms waiting for the last rank"))


def link_timeline(report: Report) -> dict | None:
    import plotly.graph_objects as go
    series = (report.links.timeline if report.links else None) or []
    series = [s for s in series if s.t_s]
    if not series:
        return None
    data, shapes = [], []
    for s in series:
        label = html.escape(f"{s.host}:{s.source}/{s.device}")
        for d, rates in (("tx", s.tx_Bps), ("rx", s.rx_Bps)):
            if rates:
                data.append(go.Scatter(x=s.t_s, y=[v / 1e6 for v in rates], mode="lines",
                                       name=f"{label} {d}"))
    for a, b in series[0].comm_windows_s or []:
        shapes.append(dict(type="rect", xref="x", yref="paper", x0=a, x1=b, y0=0, y1=1,
                           fillcolor="rgba(252,141,98,0.15)", line=dict(width=0), layer="below"))
    return figure(data, dict(xaxis_title="seconds since sampling started", yaxis_title="MB/s",
                           shapes=shapes))


def _gbps(v) -> str:
    return "-" if v is None else f"{v:.3g} GB/s"


def _num(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _rate(v) -> str:
    return "-" if v is None else fmt_bytes(v) + "/s"


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header.verdict{padding:24px 32px;border-bottom:4px solid #999;background:#fff}
header.good{border-color:#1a9850}header.warn{border-color:#fdae61}header.bad{border-color:#d73027}
h1{margin:0 0 8px;font-size:26px}.sentence{margin:0 0 16px;color:#444}
.cards{display:flex;gap:16px;flex-wrap:wrap}.card{background:#f4f4f6;border-radius:8px;padding:12px 16px;min-width:220px}
.card h3{margin:0;font-size:12px;text-transform:uppercase;color:#666}.big{font-size:20px;font-weight:600}
.small{font-size:12px;color:#666}table{border-collapse:collapse;margin:8px 0}
td,th{padding:4px 10px;border-bottom:1px solid #e4e4e4;text-align:right;font-variant-numeric:tabular-nums}
td:first-child,th:first-child{text-align:left}table.meta td,table.meta th{text-align:left;border:0;padding:2px 12px 2px 0}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:" \\2195";color:#bbb}
section{background:#fff;margin:16px 32px;padding:8px 20px 16px;border-radius:8px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.help{color:#555;font-size:13px}.chart{width:100%;min-height:360px}.alert{border-left:4px solid #d73027}
li.bad,p.bad{color:#d73027}#js-errors{color:#d73027;white-space:pre}
"""

_SCRIPT = """
(function(){
  var figs = FIGURES;
  Object.keys(figs).forEach(function(id){
    var el = document.getElementById(id);
    if (el) Plotly.newPlot(el, figs[id].data, figs[id].layout, {displaylogo:false, responsive:true});
  });
  document.querySelectorAll('table.sortable').forEach(function(table){
    table.querySelectorAll('th').forEach(function(th, col){
      th.addEventListener('click', function(){
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir > 0 ? 'asc' : 'desc';
        function key(r){ var t = r.cells[col].textContent.trim(); var m = t.match(/^-?[0-9.]+(e[-+]?[0-9]+)?/);
          if (!m) return t; var v = parseFloat(m[0]); var u = t.slice(m[0].length).trim();
          var s = {'kB':1e3,'MB':1e6,'GB':1e9,'TB':1e12,'ms':1e-3,'\\u00b5s':1e-6,'ns':1e-9}[u.split('/')[0]] || 1;
          return v * s; }
        rows.sort(function(a, b){ var x = key(a), y = key(b);
          return (typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y))) * dir; });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
  document.body.dataset.rendered = 'yes';
})();
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{style}</style>
<script>
window.__commprofErrors = [];
function __commprofError(msg){{ window.__commprofErrors.push(String(msg));
  var d = document.getElementById('js-errors'); if (d) {{ d.hidden = false; d.textContent += msg + '\\n'; }} }}
window.addEventListener('error', function(e){{ __commprofError(e.message); }});
(function(){{ var orig = console.error; console.error = function(){{
  __commprofError(Array.prototype.join.call(arguments, ' ')); return orig.apply(console, arguments); }}; }})();
</script>
<script>{plotly}</script>
</head><body>
<div id="js-errors" hidden></div>
{body}
<footer style="margin:16px 32px;color:#888;font-size:12px">commprof report — self-contained; charts by plotly.js (inlined)</footer>
<script>var FIGURES = {figures};</script>
<script>{script}</script>
</body></html>
"""
