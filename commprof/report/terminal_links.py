"""The terminal report's ``links`` part (node samplers, TCP RTT, the probe and the efficiency
against it), read from the typed :class:`~commprof.analysis.result.model_sections.Links`."""
from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from commprof.analysis.result.model_sections import Links, SamplerRow
from commprof.format.units import fmt_bytes, fmt_pct


def _rate(bps) -> str:
    return "-" if bps is None else fmt_bytes(bps) + "/s"


def num_cell(value, spec: str, suffix: str = "") -> str:
    """``value`` formatted, or ``-`` for null."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


def bw_cell(gbps) -> str:
    """A bandwidth in GB/s to three digits, ``<0.001`` below that, ``-`` for null."""
    if gbps is None:
        return "-"
    return f"{gbps:.3g}" if gbps >= 0.001 or gbps == 0 else "<0.001"


def links_section(links: Links) -> list:
    """Tables: link throughput (node sampler), TCP RTT, efficiency against the probe."""
    out = []
    if links.sampler:
        out += sampler_part(links)
    probe = links.probe
    if probe:
        lat = probe.latency_us
        out.append(Text(f"probe: {probe.backend} on {probe.world_size} ranks; small-message "
                        f"latency {lat.all_reduce if lat else '-'} µs (all_reduce), "
                        f"{lat.sendrecv if lat else '-'} µs one way (send/recv)"))
    if links.efficiency:
        t = Table(title="Efficiency: the job's busbw vs the probe's at the same size (GB/s)",
                  title_justify="left", box=box.SIMPLE_HEAD)
        for name in ("op", "n", "size", "calls (all ranks)", "job busbw", "probe busbw", "efficiency"):
            t.add_column(name, justify="left" if name == "op" else "right", no_wrap=True)
        for e in links.efficiency:
            t.add_row(Text(e.op), str(e.group_size), fmt_bytes(e.size_bytes), str(e.count),
                      bw_cell(e.job_busbw_gbps), bw_cell(e.probe_busbw_gbps),
                      fmt_pct(e.efficiency) + ("" if e.same_group_size else " (n differs)"))
        out.append(t)
    for n in links.notes:
        out.append(Text(f"note: {n}", style="yellow"))
    return out


def sampler_part(links: Links) -> list:
    """The node samplers' part: throughput per busy link, gauges, TCP RTT, what was not sampled."""
    rows = [r for r in links.interfaces if (r.tx_bytes or 0) + (r.rx_bytes or 0) > 0]
    idle = len(links.interfaces) - len(rows)
    costs = [f"{s.host}: {fmt_pct(s.cpu_fraction_of_core)} of a core at {s.hz:g} Hz"
             for s in links.sampler if s.hz]
    t = Table(title=Text("Links (node sampler; bytes/s, 1 MB = 1e6 B; cost " + "; ".join(costs) + ")"),
              title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("link", "tx", "tx mean", "tx peak", "tx in comm", "rx mean", "rx peak",
                 "wire/logical"):
        t.add_column(name, justify="left" if name == "link" else "right", no_wrap=True)
    for r in sorted(rows, key=lambda r: -(r.tx_bytes or 0)):
        name = f"{r.host}:{r.source}/{r.device}" + (" (loopback)" if r.loopback else "")
        ratio = r.wire_to_logical
        t.add_row(Text(name), fmt_bytes(r.tx_bytes), _rate(r.tx_mean_Bps), _rate(r.tx_peak_Bps),
                  _rate(r.tx_comm_Bps), _rate(r.rx_mean_Bps), _rate(r.rx_peak_Bps),
                  "-" if ratio is None else f"{ratio:.3f}")
    t.caption = ("tx in comm = mean tx while any collective was in flight; wire/logical = bytes the "
                 "link carried ÷ the collectives' bus bytes on this host (≈1: all traffic is "
                 "the job's collectives)")
    if idle:
        t.caption = f"{idle} idle interface(s) not shown; see --format json. " + t.caption
    t.caption_justify = "left"
    out: list = [t]
    for g in links.gauges:
        value = (f"{fmt_bytes(g.mean)}/s mean, {fmt_bytes(g.peak)}/s peak" if g.unit == "B/s"
                 else f"{g.mean:.1f}{g.unit} mean, {g.peak:.1f}{g.unit} peak")
        out.append(Text(f"{g.host}:{g.source}/{g.device} {g.metric}: {value}"))
    for r in links.tcp:
        path = "" if r.minrtt_ms is None else f"path RTT {r.minrtt_ms:.3g} ms (min); "
        out.append(Text(f"TCP to {r.peer} ({r.host}): {path}smoothed RTT "
                        f"{r.srtt_ms_median:.3g} ms median, {r.srtt_ms_p90:.3g} ms p90 over "
                        f"{r.samples} samples; rttvar {num_cell(r.rttvar_ms_median, '.3g')} ms; "
                        f"{num_cell(r.retrans, '.0f')} retransmits; {r.connections_max} connection(s)"))
    out += [Text(line, style="dim") for line in map(_unsampled, links.sampler) if line]
    return out


def _unsampled(s: SamplerRow) -> str:
    """``not sampled on HOST: source: why; ...``, or "" when every source was available."""
    missing = [f"{name}: {st.why}" for name, st in sorted(s.sources.items()) if not st.available]
    return f"not sampled on {s.host}: " + "; ".join(missing) if missing else ""
