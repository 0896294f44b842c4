"""The terminal table of a probe result (``commprof.probe/1``), nccl-tests style."""
from __future__ import annotations

import io

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from commprof.format.text import printable_data
from commprof.format.units import fmt_bytes, fmt_seconds


def render_probe(doc: dict, color: bool = False, width: int | None = None) -> str:
    """The probe's table as text; every string of ``doc`` (a saved file may come from elsewhere)
    made printable first."""
    doc = printable_data(doc)
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=color, no_color=not color, width=width or 100,
                  highlight=False)
    lat = doc.get("latency_us") or {}
    con.print(Text(f"commprof probe: {doc.get('backend')} on {doc.get('world_size')} rank(s), "
                   f"{doc.get('nodes')} node(s); small-message latency {lat.get('all_reduce')} µs "
                   f"(all_reduce), {lat.get('sendrecv')} µs one way (send/recv ping-pong)"))
    t = Table(box=box.SIMPLE_HEAD, title="per op and size: slowest rank per iteration; GB/s = 1e9 B/s",
              title_justify="left")
    for name in ("op", "size", "iters", "time p50", "time p99", "algbw", "busbw"):
        t.add_column(name, justify="left" if name == "op" else "right", no_wrap=True)
    for r in doc.get("results", []):
        t.add_row(r["op"], fmt_bytes(r["size_bytes"]), str(r["iters"]), fmt_seconds(r["time_median_s"]),
                  fmt_seconds(r["time_p99_s"]), f"{r['algbw_gbps']:.3g}", f"{r['busbw_gbps']:.3g}")
    con.print(t)
    for e in doc.get("errors", []):
        con.print(Text(f"not measured: {e['op']}: {e['error']}", style="yellow"))
    return buf.getvalue()
