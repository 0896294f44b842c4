"""The HTML report's collectives section: the op table (per rank, whole run, and bytes per
measured step) and, where the run used more than one process group, the same per group."""
from __future__ import annotations

import html

from commprof.analysis.result.model import Report
from commprof.format.units import fmt_bytes, fmt_seconds


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _table(table_id: str, head: list[str], rows: list[tuple]) -> str:
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in rows)
    return (f'<table class="sortable" id="{table_id}"><thead><tr>'
            + "".join(f"<th>{_e(h)}</th>" for h in head) + f"</tr></thead><tbody>{body}</tbody></table>")


def groups_table(report: Report) -> str:
    """The op table per process group, when the run used more than one group ("" otherwise)."""
    rows = report.op_groups or []
    if len({r.group for r in rows}) < 2:
        return ""
    head = ["group", "description", "op", "n", "ranks", "calls", "bytes", "calls/step", "bytes/step"]
    return ('<h3>Per process group</h3><p class="help">Means over the ranks that issued the op in '
            'the group; per step: over measured steps, start-up traffic apart.</p>'
            + _table("op-group-table", head, [
                (r.group, r.group_desc or "-", r.op, r.group_size, r.ranks,
                 _num(r.count), fmt_bytes(r.bytes), _num(r.calls_per_step),
                 fmt_bytes(r.bytes_per_step)) for r in rows]))


def ops_section(report: Report, chart: bool) -> str:
    """The op table, the per-group table and (``chart``) the op-bandwidth chart's place."""
    head = ["op", "n", "count", "bytes", "bytes/step", "time", "p50", "p99", "algbw GB/s",
            "busbw GB/s", "dtype"]
    table = _table("op-table", head, [
        (o.op, "unknown" if o.group_size is None else o.group_size, o.count,
         fmt_bytes(o.bytes), fmt_bytes(o.bytes_per_step),
         fmt_seconds(o.time_s), fmt_seconds(o.p50_s), fmt_seconds(o.p99_s),
         _num(o.algbw_gbps), _num(o.busbw_gbps), o.dtype) for o in report.ops])
    plot = ('<p class="help">Achieved busbw per call-size bucket (marker area: calls); dashed: '
            'the probe (<code>commprof probe</code>) when one was run.</p>'
            '<div id="op-bandwidth" class="chart"></div>') if chart else ""
    return (f'<section id="ops"><h2>Collectives (per rank, whole run)</h2>{table}'
            f'{groups_table(report)}{plot}</section>')
