"""The one-page terminal report (rich): banner with the three KPIs, per-op and per-rank tables."""
from __future__ import annotations

import dataclasses
import io

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from commprof.analysis.result.model import ClockAlignment, Kpis, Model, RankRow, Report, Run
from commprof.format.text import printable_data
from commprof.format.typed import model_fields
from commprof.format.units import fmt_bytes, fmt_gbps, fmt_pct, fmt_seconds
from commprof.report.notes import (clocked_split_text, except_kind, gpu_line, is_trace, of_kind,
                                   rank_status, trace_ranks_line, training_line)
from commprof.report.terminal_links import bw_cell, links_section, num_cell

MAX_RANK_ROWS = 16


class TerminalRenderer:
    """Rich tables; plain text when not writing to a colour terminal."""

    name = "terminal"
    suffixes = (".txt",)

    def render(self, report: Report, *, color: bool = False, width: int | None = None) -> str:
        report = printable_copy(report)  # every string of a run (command, groups, notes) shown, never sent
        buf = io.StringIO()
        console = Console(file=buf, force_terminal=color, no_color=not color, width=width or 120,
                          highlight=False, soft_wrap=False)
        console.print(banner(report))
        if report.hang:
            console.print(hang_panel(report.hang))
        if report.ops:
            console.print(ops_table(report))
        if len({g.group for g in report.op_groups or []}) > 1:
            console.print(groups_table(report))
        if report.ranks:
            console.print(ranks_table(report, console.width))
        if report.links:
            for part in links_section(report.links):
                console.print(part)
        if report.whatif:
            for part in whatif_section(report):
                console.print(part)
        for line in notes(report):
            console.print(line)
        console.print(Text(report.verdict, style="bold"))
        return buf.getvalue()


def printable_copy(obj):
    """A copy of ``obj`` (a typed model, or lists and dicts of them) with every string made
    printable (:func:`commprof.format.text.printable_data`), keys of free-form dicts included."""
    if isinstance(obj, Model):
        return dataclasses.replace(obj, extra_keys=printable_data(obj.extra_keys), **{
            f.name: printable_copy(getattr(obj, f.name)) for f in model_fields(type(obj))})
    if isinstance(obj, dict):
        return {printable_data(k): printable_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [printable_copy(v) for v in obj]
    return printable_data(obj)


def hang_panel(hang: dict) -> Panel:
    """What ``commprof run --hang-timeout`` found stuck, and on whom it waited."""
    from commprof.analysis.cross.hang_text import hang_lines
    status = (f"; the job was stopped ({hang['killed']})" if hang.get("killed") else
              "; it later finished" if hang.get("resolved_wall_ns") else "")
    return Panel(Text("\n".join(hang_lines(hang))), title=f"hang detected{status}",
                 title_align="left", border_style="red")


def banner(report: Report) -> Panel:
    """The run, its steps, the three KPIs and their parts, training, commprof's own cost."""
    run, steps, k = report.run, report.steps, report.kpis
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    argv = list(run.command or [])
    if argv and "/" in argv[0]:
        argv[0] = argv[0].rsplit("/", 1)[1]  # the interpreter's path says little
    command = " ".join(argv) or "-"
    # Captured strings (command, hosts, paths, group names) are Text, never rich markup.
    if is_trace(run):  # no command, no exit: say what the report was built from
        grid.add_row("source", Text(f"{run.source}: {run.ranks_captured} trace file(s)"))
        grid.add_row("ranks", Text(trace_ranks_line(run)))
    else:
        grid.add_row("command", Text(command if len(command) < 200 else command[:197] + "..."))
        grid.add_row("ranks", Text(f"{run.ranks_captured} of world size {run.world_size} on "
                                   f"{run.nodes} node(s), backend {run.backend}; exit code "
                                   f"{_exit(run)}"))
    step_line = (f"{steps.count} ({steps.source}); mean {fmt_seconds(k.step_time_s)}, "
                 f"median {fmt_seconds(steps.median_s)}, over {steps.measured} measured after "
                 f"{steps.warmup} warm-up" if steps.count else "none detected (see notes)")
    grid.add_row("steps", step_line)
    grid.add_row("", "")
    grid.add_row("bytes synchronized", f"{fmt_bytes(k.bytes_per_step)} per step per rank "
                                       f"(bus {fmt_bytes(k.bus_bytes_per_step)})")
    basis = k.time_basis or "host"
    if basis == "host_launch":
        grid.add_row("communication", Text("GPU timeline not measured (NCCL: the host sees only "
                                           "launches; see notes)", style="bold"))
    else:
        grid.add_row("communication" + TIMELINE_LABEL.get(basis, ""),
                     f"in flight {fmt_pct(k.comm_fraction)} of step time, "
                     f"exposed {fmt_pct(k.exposed_comm_fraction)} "
                     f"(worst rank {fmt_pct(k.exposed_comm_fraction_max_rank)}; "
                     "time-weighted: Σ over steps ÷ Σ step time)")
    if k.gpu_comm_fraction is not None:
        grid.add_row("  GPU timeline", gpu_line(k, steps))
    if k.host:
        h = k.host
        grid.add_row("  host-side", f"in flight {fmt_pct(h.comm_fraction)}, exposed "
                                    f"{fmt_pct(h.exposed_comm_fraction)} of a "
                                    f"{fmt_seconds(h.step_time_s)} step (host clocks"
                                    + ("; NCCL launch times, not transfers)" if basis != "gpu_trace" else ")"))
    if k.step_time_s is not None and k.compute_s_per_step is not None:
        grid.add_row("  per step (mean)", step_parts_line(k))
    grid.add_row("  whole run", f"in flight {fmt_pct(k.comm_fraction_wall)} of wall time, "
                                f"exposed {fmt_pct(k.exposed_comm_fraction_wall)}")
    grid.add_row("observed bandwidth", f"algbw {fmt_gbps(k.algbw_gbps)}, busbw "
                                       f"{fmt_gbps(k.busbw_gbps)} (time-weighted, all ops)")
    if report.training:
        grid.add_row("training", training_line(report.training))
    o = report.overhead
    if o.calls:
        grid.add_row("commprof's own cost",
                     f"{o.record_us_per_call:.1f} µs/call recording (measured"
                     + (f", {o.capture_path} kernel" if o.capture_path else "") + ") + ≈ "
                     f"{o.dispatch_us_per_call_estimate:.1f} µs/call dispatch (benchmark) ≈ "
                     f"{fmt_pct(o.estimated_fraction_of_wall)} of wall time"
                     + (f" (incl. {o.gpu_windows} GPU window(s): "
                        f"{fmt_seconds(o.gpu_window_s_per_rank)}/rank)"
                        if o.gpu_windows else "") + clocked_split_text(o))
    return Panel(grid, title=Text(f"commprof report — {run.path}"), title_align="left")


TIMELINE_LABEL = {"gpu_windows": " (GPU)", "gpu_trace": " (GPU)"}


def _exit(run: Run) -> str:
    if run.signal:
        return f"{run.exit_code} (signal {run.signal})"
    return "-" if run.exit_code is None else str(run.exit_code)


def ops_table(report: Report) -> Table:
    """Per (op, group size): counts, bytes, times and bandwidths per rank, whole run."""
    t = Table(title="Collectives (per rank, whole run; bandwidth in GB/s)", title_justify="left",
              box=box.SIMPLE_HEAD, caption="n = group size; count, bytes, time = per rank (mean over "
              "ranks); bytes/step = over measured steps, start-up traffic apart; p50/p99 = call durations", caption_justify="left")
    for name, just in (("op", "left"), ("n", "right"), ("count", "right"), ("bytes", "right"),
                       ("bytes/step", "right"), ("time", "right"), ("p50", "right"),
                       ("p99", "right"), ("algbw", "right"), ("busbw", "right")):
        t.add_column(name, justify=just, no_wrap=True)
    steps = report.steps.count or None
    for op in report.ops:
        per_step = op.bytes_per_step  # over measured steps (start-up apart), else the run's
        if per_step is None and steps and op.bytes is not None:
            per_step = op.bytes / steps
        t.add_row(Text(op.op), _or_unknown(op.group_size), str(op.count), fmt_bytes(op.bytes),
                  fmt_bytes(per_step) if steps else "-", fmt_seconds(op.time_s),
                  fmt_seconds(op.p50_s), fmt_seconds(op.p99_s), bw_cell(op.algbw_gbps),
                  bw_cell(op.busbw_gbps))
    return t


def _or_unknown(value) -> str:
    return "unknown" if value is None else str(value)


def groups_table(report: Report) -> Table:
    """The op table per process group (``op_groups``): means over the ranks that issued the op."""
    t = Table(title="Per process group (per rank that issued the op; per step: measured steps)",
              title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("group", "description", "op", "n", "ranks", "calls", "bytes", "calls/step", "bytes/step"):
        t.add_column(name, justify="left" if name in ("group", "description", "op") else "right",
                     no_wrap=True)
    for g in report.op_groups:
        t.add_row(Text(str(g.group)), Text(str(g.group_desc or "-")), Text(g.op),
                  str(g.group_size), str(g.ranks), num_cell(g.count, ".3g"),
                  fmt_bytes(g.bytes), num_cell(g.calls_per_step, ".3g"),
                  fmt_bytes(g.bytes_per_step))
    return t


# Dropped first when the terminal is too narrow for every column (the JSON keeps them all).
_RANK_COLUMNS_BY_PRIORITY = ("exposed\n(wall)", "ops", "last", "host", "transfer", "bytes")


def ranks_table(report: Report, width: int = 120) -> Table:
    """Per-rank rows (the extremes when there are many), fitted to ``width`` columns of text:
    the least needed columns are left out, and the caption says which."""
    rows = report.ranks
    shown = rows if len(rows) <= MAX_RANK_ROWS else _extremes(rows)
    cross = any(r.wait_s is not None for r in rows)
    columns = _rank_columns(shown, report.hang, cross)
    dropped = []
    for name in _RANK_COLUMNS_BY_PRIORITY:
        if _table_width(columns) <= width:
            break
        if name in columns:
            del columns[name]
            dropped.append(name.replace("\n", " "))
    t = Table(title="Ranks (step = median step; comm/exposed = time-weighted over measured steps)",
              title_justify="left", box=box.SIMPLE_HEAD)
    widest_word = max((len(w) for v in columns["status"] for w in str(v).split()), default=6)
    for name in columns:  # the status wraps between words, never inside one
        t.add_column(name, justify="left" if name in ("host", "status") else "right",
                     no_wrap=name != "status",
                     min_width={"host": 6, "status": min(max(widest_word, 6), 24)}.get(name))
    for i in range(len(shown)):
        t.add_row(*(values[i] for values in columns.values()))
    legend = _ranks_legend(report.run, cross)
    if len(shown) < len(rows):
        legend = f"{len(shown)} of {len(rows)} ranks shown (most and least exposed); see --format json. " + legend
    if dropped:
        legend = f"too narrow for {', '.join(dropped)} (see --width or --format json). " + legend
    t.caption, t.caption_justify = legend, "left"
    return t


def _rank_columns(shown: list[RankRow], hang: dict | None, cross: bool) -> dict:
    """Column name -> its cells, in display order."""
    cols = {"rank": [str(r.rank) for r in shown],
            "host": [Text(str(r.host or "unknown")) for r in shown],
            "ops": [str(r.ops) for r in shown],
            "bytes": [fmt_bytes(r.bytes) for r in shown],
            "step": [fmt_seconds(r.step_median_s) for r in shown],
            "comm": [fmt_pct(r.comm_fraction) for r in shown],
            "exposed": [fmt_pct(r.exposed_comm_fraction) for r in shown],
            "exposed\n(wall)": [fmt_pct(r.exposed_comm_fraction_wall) for r in shown]}
    if cross:
        cols["wait"] = [fmt_seconds(r.wait_s) for r in shown]
        cols["transfer"] = [fmt_seconds(r.transfer_s) for r in shown]
        cols["last"] = [fmt_pct(r.last_share) for r in shown]
    cols["status"] = [rank_status(r, hang) for r in shown]
    return cols


def _table_width(columns: dict) -> int:
    """Text columns the table needs without truncating (status counted at its longest word)."""
    total = 1  # each column: its text, a space either side and a separator
    for name, values in columns.items():
        cells = [str(v) for v in values]
        if name == "status":
            need = max([len(w) for c in cells for w in c.split()] + [6])
        else:
            need = max([len(c) for c in cells] + [0])
        total += max(need, *(len(h) for h in name.split("\n"))) + 3
    return total


def _ranks_legend(run: Run, cross: bool) -> str:
    legend = "exposed (wall) = exposed share of the whole run, init to teardown"
    if cross:
        legend += ("; wait = after arriving, until the last rank arrived; transfer = from then to "
                   + ("the end of its own kernel" if is_trace(run) else "the first completion")
                   + "; last = share of matched collectives at which this rank arrived last")
    return legend


def _extremes(rows: list[RankRow]) -> list[RankRow]:
    key = [r for r in rows if r.exposed_comm_fraction is not None]
    key.sort(key=lambda r: r.exposed_comm_fraction)
    half = MAX_RANK_ROWS // 2
    picked = key[:half] + key[-half:] if len(key) > MAX_RANK_ROWS else key
    return sorted({r.rank: r for r in picked}.values(), key=lambda r: r.rank)


def notes(report: Report) -> list[Text]:
    """Stragglers, the clock alignment, the notes and commprof's own failures, one line each."""
    out = [Text(f"straggler: {n.text}", style="bold magenta") for n in of_kind(report, "straggler")]
    ca = report.clock_alignment
    if ca and ca.max_uncertainty_ms is not None:
        out.append(Text(clock_line(ca, is_trace(report.run)), style="dim"))
    out += [Text(f"note: {n.text}", style="yellow" if n.severity != "info" else "dim")
            for n in except_kind(report, "straggler")]
    for d in report.degraded:
        out.append(Text(f"commprof degraded on rank {d.rank}: {d.where} failed {d.count}x "
                        f"({d.error})", style="red"))
    return out


_CLOCK_METHODS = {"barrier": "barrier probes", "same-host": "one host's clock",
                  "wall-anchor": "wall clocks", "instance-ends": "collectives' common ends",
                  "same-clock": "one clock (offsets within noise)", "none": "not aligned"}


def clock_line(ca: ClockAlignment, trace: bool) -> str:
    """How the ranks' clocks were aligned, and the wait/transfer definitions."""
    methods = sorted({r.method for r in ca.ranks if r.method != "reference"})
    how = ", ".join(_CLOCK_METHODS.get(m, m) for m in methods) or "reference only"
    return (f"clocks aligned to rank {ca.reference_rank} ({how}; uncertainty up to "
            f"{ca.max_uncertainty_ms:.3g} ms); wait = time after arriving until the last rank "
            "arrived, transfer = from then to " + ("the end of the rank's kernel" if trace else
                                                   "the first completion"))


def step_parts_line(k: Kpis) -> str:
    """The mean step as the parts that add up (docs/whatif.md, "The parts of a step")."""
    no_comm = k.no_comm_s_per_step if k.has("no_comm_s_per_step") else k.compute_s_per_step
    idle = k.idle_s_per_step
    parts = [f"{fmt_seconds(no_comm)} with no communication in flight"
             + (f" (of which GPU idle {fmt_seconds(idle)})" if idle is not None else ""),
             f"{fmt_seconds(k.hidden_comm_s_per_step)} communication hidden under compute"]
    if k.wait_s_per_step is not None:
        parts += [f"{fmt_seconds(k.exposed_transfer_s_per_step)} exposed transfer",
                  f"{fmt_seconds(k.wait_s_per_step)} waiting for late ranks"]
    else:
        parts.append(f"{fmt_seconds(k.exposed_comm_s_per_step)} exposed communication")
    return f"{fmt_seconds(k.step_time_s)} = " + " + ".join(parts)


def whatif_section(report: Report) -> list:
    """Projected step time under each scenario, then the ranked recommendations."""
    t = Table(title="What if (projected from this run; model: docs/whatif.md)", title_justify="left",
              box=box.SIMPLE_HEAD)
    for name in ("scenario", "step", "speed-up", "comm", "exposed"):
        t.add_column(name, justify="left" if name == "scenario" else "right", no_wrap=True)
    k = report.kpis
    t.add_row("measured", fmt_seconds(k.step_time_s), "1.00x", fmt_pct(k.comm_fraction),
              fmt_pct(k.exposed_comm_fraction))
    for w in report.whatif:
        t.add_row(w.name, fmt_seconds(w.step_time_s), num_cell(w.speedup, ".2f", "x"),
                  fmt_pct(w.comm_fraction), fmt_pct(w.exposed_comm_fraction))
    out = [t]
    recs = report.recommendations or []
    if recs:
        out.append(Text("Recommendations (ranked by projected saving per step):", style="bold"))
        out += [Text(f"  {i}. ({r.kind}) {r.action}: ~{r.projected_saving * 100:.0f}% — "
                     f"{r.evidence}") for i, r in enumerate(recs[:5], 1)]
    return out
