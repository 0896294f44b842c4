"""What every renderer shows the same way: the verdict's parts, the notes (structured, chosen by
kind) and a rank's status word."""
from __future__ import annotations

from commprof.format.units import fmt_pct, fmt_seconds


def note_items(doc: dict) -> list[dict]:
    """The document's notes as ``{kind, severity, text}`` (documents written before
    ``note_items`` existed: their texts, kind ``note``)."""
    items = doc.get("note_items")
    if isinstance(items, list):
        return items
    return [{"kind": "note", "severity": "warning", "text": t} for t in doc.get("notes") or []]


def of_kind(doc: dict, *kinds: str) -> list[dict]:
    return [n for n in note_items(doc) if n.get("kind") in kinds]


def except_kind(doc: dict, *kinds: str) -> list[dict]:
    return [n for n in note_items(doc) if n.get("kind") not in kinds]


def rank_status(r: dict, hang: dict | None = None) -> str:
    """``ok``; ``failed (exception …)`` for a process that ended with an uncaught exception;
    ``capture stopped: ENOSPC (…)`` for one whose storage filled up (it went on);
    ``incomplete (died?…)`` for one without a trailer otherwise; ``killed by commprof after hang
    (…)`` for one that ``--kill-on-hang`` stopped (``hang``: the document's ``hang``, whose
    ``killed`` says which signal commprof sent last)."""
    reason = r.get("exit_reason")
    killed = (hang or {}).get("killed")
    if killed and r.get("complete") and reason == "SIGTERM":
        return "killed by commprof after hang (SIGTERM)"
    if killed == "SIGKILL" and not r.get("complete"):
        return "killed by commprof after hang (SIGKILL)"
    if r.get("complete"):
        if reason in (None, "exit", "finished"):
            return "ok"
        if str(reason).startswith("exception"):
            return f"failed ({reason})"
        return f"ok ({reason})"
    last = r.get("last_record_s")
    if str(reason).startswith("capture stopped"):  # storage full: the process went on
        return str(reason) + ("" if last is None else f" at {last:.1f} s")
    when = "" if last is None else f", last record at {last:.1f} s"
    lc = r.get("last_collective")
    if lc:
        when += (f", last collective {lc['op']} #{lc['seq']} on group {lc['group']}"
                 + ("" if lc.get("completed") else ", not completed"))
    return f"incomplete (died?{when})"


def assessment(doc: dict) -> dict:
    """The verdict's level and figures (documents written before ``assessment`` existed: the
    same function on their KPIs)."""
    if isinstance(doc.get("assessment"), dict):
        return doc["assessment"]
    from commprof.analysis.outcome.verdict import assess
    return assess(doc["kpis"]).to_dict()


def gpu_line(k: dict, steps: dict) -> str:
    """The GPU timeline's shares of GPU time (kpis.gpu_*), and what they cover."""
    over = (f"over {steps.get('measured')} GPU-window step(s) per rank"
            if k.get("time_basis") == "gpu_windows" else
            "over the profiled steps" if k.get("gpu_basis") == "steps" else "over whole traces")
    return (f"of GPU time: communication {fmt_pct(k.get('gpu_comm_fraction'))}, "
            f"{fmt_pct(k.get('gpu_overlap_ratio'))} of it overlapped with compute, exposed "
            f"{fmt_pct(k.get('gpu_exposed_comm_fraction'))}; compute "
            f"{fmt_pct(k.get('gpu_compute_fraction'))}, memcpy {fmt_pct(k.get('gpu_memcpy_fraction'))}, "
            f"idle {fmt_pct(k.get('gpu_idle_fraction'))} ({over})")


def timeline_cards(k: dict, steps: dict) -> list[tuple[str, str, str]]:
    """(title, value, detail) of the GPU timeline and of the host-side figures, where the
    document has them (``kpis.gpu_*``, ``kpis.host``)."""
    cards = []
    if k.get("gpu_comm_fraction") is not None:
        cards.append(("GPU timeline", f"{fmt_pct(k.get('gpu_overlap_ratio'))} of communication "
                      "overlapped", gpu_line(k, steps)))
    if k.get("host"):
        h = k["host"]
        cards.append(("host-side (launch) times", f"{fmt_pct(h.get('exposed_comm_fraction'))} exposed",
                      f"{fmt_pct(h.get('comm_fraction'))} in flight of a "
                      f"{fmt_seconds(h.get('step_time_s'))} step, on host clocks: for NCCL, launch "
                      "times, not transfers"))
    return cards


def training_line(t: dict) -> str:
    """The loss (final, over how many steps) and the fixes applied (``training``)."""
    loss = t.get("loss")
    parts = [f"loss {loss['final']:.4g} at step {loss['steps'][-1]} ({len(loss['steps'])} steps, "
             f"mean over {loss['ranks']} rank(s))" if loss else "no loss recorded"]
    for f in t.get("fixes") or []:
        parts.append(f"fix {f['fix']}: {f['status']}" + (f" ({f['why']})" if f.get("why") else ""))
    return "; ".join(parts)


def is_trace(run: dict) -> bool:
    """Whether the report was built from PyTorch-profiler traces (no command, exit code or node)."""
    return run.get("status") == "trace"


def trace_ranks_line(run: dict) -> str:
    """The ranks of a trace report: how many, their hosts where the traces name them, versions."""
    hosts = run.get("hosts") or []
    where = (f" on {len(hosts)} host(s) ({', '.join(hosts[:4])}{' …' if len(hosts) > 4 else ''})"
             if hosts else " (hosts not recorded in the traces)")
    nccl = f", NCCL {run['nccl_version']}" if run.get("nccl_version") else ""
    return f"{run['ranks_captured']} of world size {run['world_size']}{where}, backend {run['backend']}{nccl}"


def source_rows(run: dict) -> list[tuple[str, object]]:
    """What the report was built from, as (label, value) rows: a run's command, ranks, versions
    and exit code; a trace report's source and ranks (traces have no command or exit code)."""
    trace = is_trace(run)
    rows = [("source", f"{run.get('source')}: {run.get('ranks_captured')} trace file(s)")] if trace else [
        ("command", " ".join(run.get("command") or []))]
    rows += [("ranks", trace_ranks_line(run) if trace else
              f"{run.get('ranks_captured')} of world size {run.get('world_size')} on "
              f"{run.get('nodes')} node(s): {', '.join(run.get('hosts') or [])}"),
             ("backend", run.get("backend")), ("torch", run.get("torch_version") or "not recorded"),
             ("NCCL", run.get("nccl_version") or ("not recorded in the traces" if trace else
                                                  "n/a (not a CUDA build)"))]
    return rows if trace else rows + [("exit", run.get("exit_code"))]


def clocked_split_text(o: dict) -> str:
    """What the native kernel's clock held besides per-call work (once; stalled, not counted)."""
    if o.get("stalled_calls") is None:
        return ""
    return (f"; once per group {fmt_seconds(o.get('once_s_per_rank'))}/rank" + (
        f"; {o['stalled_calls']} call(s) stalled off-core inside the kernel's clock "
        f"({fmt_seconds(o.get('stalled_s_per_rank'))}/rank, not counted)" if o["stalled_calls"] else ""))
