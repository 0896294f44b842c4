"""What every renderer shows the same way: the verdict's parts, the notes (structured, chosen by
kind) and a rank's status word — read from the typed :class:`Report`."""
from __future__ import annotations

from commprof.analysis.result.model import (Assessment, Kpis, NoteItem, Overhead, RankRow, Report,
                                            Run, Steps, Training)
from commprof.format.units import fmt_pct, fmt_seconds


def note_items(report: Report) -> list[NoteItem]:
    """The report's notes with kind and severity (documents written before ``note_items``
    existed: their texts, kind ``note``)."""
    if report.has("note_items") and report.note_items is not None:
        return report.note_items
    return [NoteItem(kind="note", severity="warning", text=t) for t in report.notes or []]


def of_kind(report: Report, *kinds: str) -> list[NoteItem]:
    return [n for n in note_items(report) if n.kind in kinds]


def except_kind(report: Report, *kinds: str) -> list[NoteItem]:
    return [n for n in note_items(report) if n.kind not in kinds]


def rank_status(r: RankRow, hang: dict | None = None) -> str:
    """``ok``; ``failed (exception …)`` for a process that ended with an uncaught exception;
    ``capture stopped: ENOSPC (…)`` for one whose storage filled up (it went on);
    ``incomplete (died?…)`` for one without a trailer otherwise; ``killed by commprof after hang
    (…)`` for one that ``--kill-on-hang`` stopped (``hang``: the report's ``hang``, whose
    ``killed`` says which signal commprof sent last)."""
    reason = r.exit_reason
    killed = (hang or {}).get("killed")
    if killed and r.complete and reason == "SIGTERM":
        return "killed by commprof after hang (SIGTERM)"
    if killed == "SIGKILL" and not r.complete:
        return "killed by commprof after hang (SIGKILL)"
    if r.complete:
        if reason in (None, "exit", "finished"):
            return "ok"
        if str(reason).startswith("exception"):
            return f"failed ({reason})"
        return f"ok ({reason})"
    last = r.last_record_s
    if str(reason).startswith("capture stopped"):  # storage full: the process went on
        return str(reason) + ("" if last is None else f" at {last:.1f} s")
    when = "" if last is None else f", last record at {last:.1f} s"
    lc = r.last_collective
    if lc:
        when += (f", last collective {lc.op} #{lc.seq} on group {lc.group}"
                 + ("" if lc.completed else ", not completed"))
    return f"incomplete (died?{when})"


def assessment(report: Report) -> Assessment:
    """The verdict's level and figures (documents written before ``assessment`` existed: the
    same function on their KPIs)."""
    if report.assessment is not None:
        return report.assessment
    from commprof.analysis.outcome.verdict import assess
    return Assessment(**assess(vars(report.kpis)).to_dict())  # assess reads the KPIs by name


def gpu_line(k: Kpis, steps: Steps) -> str:
    """The GPU timeline's shares of GPU time (kpis.gpu_*), and what they cover."""
    over = (f"over {steps.measured} GPU-window step(s) per rank"
            if k.time_basis == "gpu_windows" else
            "over the profiled steps" if k.gpu_basis == "steps" else "over whole traces")
    return (f"of GPU time: communication {fmt_pct(k.gpu_comm_fraction)}, "
            f"{fmt_pct(k.gpu_overlap_ratio)} of it overlapped with compute, exposed "
            f"{fmt_pct(k.gpu_exposed_comm_fraction)}; compute "
            f"{fmt_pct(k.gpu_compute_fraction)}, memcpy {fmt_pct(k.gpu_memcpy_fraction)}, "
            f"idle {fmt_pct(k.gpu_idle_fraction)} ({over})")


def timeline_cards(k: Kpis, steps: Steps) -> list[tuple[str, str, str]]:
    """(title, value, detail) of the GPU timeline and of the host-side figures, where the
    report has them (``kpis.gpu_*``, ``kpis.host``)."""
    cards = []
    if k.gpu_comm_fraction is not None:
        cards.append(("GPU timeline", f"{fmt_pct(k.gpu_overlap_ratio)} of communication "
                      "overlapped", gpu_line(k, steps)))
    if k.host:
        h = k.host
        cards.append(("host-side (launch) times", f"{fmt_pct(h.exposed_comm_fraction)} exposed",
                      f"{fmt_pct(h.comm_fraction)} in flight of a "
                      f"{fmt_seconds(h.step_time_s)} step, on host clocks: for NCCL, launch "
                      "times, not transfers"))
    return cards


def training_line(t: Training) -> str:
    """The loss (final, over how many steps) and the fixes applied (``training``)."""
    loss = t.loss
    parts = [f"loss {loss.final:.4g} at step {loss.steps[-1]} ({len(loss.steps)} steps, "
             f"mean over {loss.ranks} rank(s))" if loss else "no loss recorded"]
    for f in t.fixes or []:
        parts.append(f"fix {f.fix}: {f.status}" + (f" ({f.why})" if f.why else ""))
    return "; ".join(parts)


def is_trace(run: Run) -> bool:
    """Whether the report was built from PyTorch-profiler traces (no command, exit code or node)."""
    return run.status == "trace"


def trace_ranks_line(run: Run) -> str:
    """The ranks of a trace report: how many, their hosts where the traces name them, versions."""
    hosts = run.hosts or []
    where = (f" on {len(hosts)} host(s) ({', '.join(hosts[:4])}{' …' if len(hosts) > 4 else ''})"
             if hosts else " (hosts not recorded in the traces)")
    nccl = f", NCCL {run.nccl_version}" if run.nccl_version else ""
    return f"{run.ranks_captured} of world size {run.world_size}{where}, backend {run.backend}{nccl}"


def source_rows(run: Run) -> list[tuple[str, object]]:
    """What the report was built from, as (label, value) rows: a run's command, ranks, versions
    and exit code; a trace report's source and ranks (traces have no command or exit code)."""
    trace = is_trace(run)
    rows = [("source", f"{run.source}: {run.ranks_captured} trace file(s)")] if trace else [
        ("command", " ".join(run.command or []))]
    rows += [("ranks", trace_ranks_line(run) if trace else
              f"{run.ranks_captured} of world size {run.world_size} on "
              f"{run.nodes} node(s): {', '.join(run.hosts or [])}"),
             ("backend", run.backend), ("torch", run.torch_version or "not recorded"),
             ("NCCL", run.nccl_version or ("not recorded in the traces" if trace else
                                           "n/a (not a CUDA build)"))]
    return rows if trace else rows + [("exit", run.exit_code)]


def clocked_split_text(o: Overhead) -> str:
    """What the native kernel's clock held besides per-call work (once; stalled, not counted)."""
    if o.stalled_calls is None:
        return ""
    return (f"; once per group {fmt_seconds(o.once_s_per_rank)}/rank" + (
        f"; {o.stalled_calls} call(s) stalled off-core inside the kernel's clock "
        f"({fmt_seconds(o.stalled_s_per_rank)}/rank, not counted)" if o.stalled_calls else ""))
