"""What ``commprof run --live`` shows: a rich panel on a terminal, one line per interval otherwise.

Both read a snapshot of :class:`commprof.live.aggregator.LiveAggregator` and format it; neither
computes a KPI.  Units as in the report (SI: 1 MB = 10^6 B, 1 GB/s = 10^9 B/s).
"""
from __future__ import annotations

import math

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from commprof.format.text import printable
from commprof.format.units import fmt_bytes, fmt_gbps, fmt_pct, fmt_seconds

MAX_OPS = 4  # busbw rows on the panel
MAX_BUCKETS = 4  # size buckets against the probe
MAX_LINKS = 4  # busiest links


def _rate(bps) -> str:
    return "-" if bps is None else f"{fmt_bytes(bps)}/s"


def _elapsed(s: float) -> str:
    s = int(s)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def bucket_name(bucket: int) -> str:
    """``20`` -> ``"1MiB"``: the lower bound of a power-of-two size bucket [2^k, 2^(k+1))."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if bucket >= shift:
            return f"{1 << (bucket - shift)}{unit}"
    return f"{1 << max(bucket, 0)}B"


def _busiest(links: list[dict]) -> list[dict]:
    rows = [r for r in links if r.get("rate_Bps")]  # idle interfaces are left out
    return sorted(rows, key=lambda r: -r["rate_Bps"])[:MAX_LINKS]


def _cost(snap: dict) -> str:
    local = [r for r in snap["ranks"] if r["local"]]
    capture = sum(r["overhead_s"] for r in local)
    elapsed = max(snap["elapsed_s"], 1e-9)
    per_rank = capture / max(len(local), 1) / elapsed
    launcher = snap.get("launcher_cpu_fraction")
    return (f"capture ≈ {fmt_pct(per_rank)} of each rank's time; this launcher "
            f"{fmt_pct(launcher)} of a core (tails, panel, exporter, sampler)")


def lines(snap: dict, hang: list[str] | None = None) -> list[tuple[str, str]]:
    """(label, text) rows, shared by the panel and the plain line."""
    w = snap["window"]
    rows = []
    if not w.get("steps"):
        rows.append(("steps", f"none yet ({snap['ranks_seen']} rank(s) seen)"))
    else:
        rate = w.get("step_rate")
        rows.append(("steps", f"{w['steps_done']} done · {rate:.2f}/s · step {fmt_seconds(w['step_time_s'])} "
                              f"(median {fmt_seconds(w['step_median_s'])})" if rate else
                     f"{w['steps_done']} done · step {fmt_seconds(w['step_time_s'])}"))
        rows.append(("communication", f"in flight {fmt_pct(w['comm_fraction'])}, exposed "
                                      f"{fmt_pct(w['exposed_comm_fraction'])} of step time"))
        rows.append(("bytes", f"{fmt_bytes(w['bytes_per_step'])} per step per rank (bus "
                              f"{fmt_bytes(w['bus_bytes_per_step'])})"))
    bw = snap["busbw"]
    if bw["ops"]:
        rows.append(("busbw", " · ".join(f"{o['op']} {fmt_gbps(o['busbw_Bps'] / 1e9)}"
                                         for o in bw["ops"][:MAX_OPS])))
    if bw["efficiency"]:
        rows.append(("vs probe", " · ".join(
            f"{e['op']} {fmt_bytes(e['size_bytes'])}: {fmt_pct(e['efficiency'])}"
            for e in bw["efficiency"][:MAX_BUCKETS])))
    elif snap.get("probe") is False and bw["ops"]:
        rows.append(("vs probe", "no probe (commprof run --probe)"))
    st = snap["straggler"]
    if st is not None:
        rows.append(("slowest rank", f"rank {st['rank']}: last in {fmt_pct(st['share'])} of "
                                     f"{st['steps']} steps; each other rank waits "
                                     f"{fmt_seconds(st['wait_s_per_step'])}/step for it"
                                     + (" (significant)" if st["significant"] else "")))
    busy = _busiest(snap["links"])
    if busy:
        rows.append(("links", " · ".join(f"{r['link']} {r['direction']} {_rate(r['rate_Bps'])}"
                                         for r in busy)))
    rows.append(("commprof", _cost(snap)))
    for line in hang or []:
        rows.append(("HANG", line))
    return rows


def render(snap: dict, run_dir: str, hang: list[str] | None = None) -> Panel:
    """The rich panel of one snapshot."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for label, text in lines(snap, hang):
        style = "bold red" if label == "HANG" else None
        table.add_row(Text(label, style=style), Text(printable(text), style=style))  # links, ops, groups
    hosts = len(snap["hosts"])
    title = (f"commprof live · {_elapsed(snap['elapsed_s'])} · {snap['ranks_seen']} rank(s) on "
             f"{hosts} node(s) · last {snap['window_steps']} steps")
    if snap.get("refresh_s", 1.0) > 1.5:
        title += f" · refresh every {snap['refresh_s']:.0f} s"
    return Panel(Group(table), title=title, subtitle=printable(run_dir), title_align="left",
                 subtitle_align="right")


def one_line(snap: dict, hang: list[str] | None = None) -> str:
    """The non-TTY form: one summary line (``commprof: live: ...``)."""
    w = snap["window"]
    parts = [_elapsed(snap["elapsed_s"])]
    if w.get("steps"):
        rate = w.get("step_rate")
        parts.append(f"step {w['steps_done']}" + (f" ({rate:.2f}/s)" if rate and math.isfinite(rate) else ""))
        parts.append(f"{fmt_seconds(w['step_time_s'])}/step")
        parts.append(f"comm {fmt_pct(w['comm_fraction'])} in flight, "
                     f"{fmt_pct(w['exposed_comm_fraction'])} exposed")
        parts.append(f"{fmt_bytes(w['bytes_per_step'])}/step")
    else:
        parts.append(f"no steps yet ({snap['ranks_seen']} rank(s))")
    if snap["busbw"]["ops"]:
        top = snap["busbw"]["ops"][0]
        parts.append(f"{top['op']} busbw {fmt_gbps(top['busbw_Bps'] / 1e9)}")
    st = snap["straggler"]
    if st is not None:
        parts.append(f"slowest rank {st['rank']} (+{fmt_seconds(st['wait_s_per_step'])}/step)")
    busy = _busiest(snap["links"])
    if busy:
        parts.append(f"{busy[0]['link']} {busy[0]['direction']} {_rate(busy[0]['rate_Bps'])}")
    if hang:
        parts.append("HANG: " + hang[0])
    return printable("live: " + " · ".join(parts))
