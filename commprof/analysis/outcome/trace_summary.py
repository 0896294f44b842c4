"""The report of PyTorch-profiler traces: the same :class:`~commprof.analysis.outcome.summary.Summary` as a
``commprof run``, from the GPU's own timeline (docs/kpis.md, "GPU timeline").

Each rank's trace gives its steps (``ProfilerStep#N``) with the communication, overlap and
exposure of the GPU ops launched in them (:mod:`commprof.analysis.gpu.gpu_timeline`).  The step KPIs
are computed by the same functions as a run's (:mod:`commprof.analysis.measures.kpis`), with the step's
GPU time as its duration, so ``comm_fraction``/``exposed_comm_fraction`` are the GPU figures,
time-weighted, and the verdict, what-if and gate use them.  A profiler's trace holds its active
steps only: no warm-up is left out.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from commprof.analysis.gpu import comm_kernels, gpu_basis, gpu_collectives, gpu_timeline
from commprof.analysis.measures import kpis as kpi
from commprof.analysis.outcome import trace_crossrank, whatif
from commprof.analysis.outcome.summary import Summary
from commprof.analysis.outcome.verdict import Note, assess, straggler_note

SOURCE = "PyTorch-profiler traces (GPU timeline)"


def summarize_traces(traces: list, errors: list, path) -> Summary:
    """The summary of parsed traces (:func:`commprof.format.kineto.read_traces`); ``errors`` are
    the files left out (one note each)."""
    notes = [Note("trace_file", "warning", f"{e}: left out") for e in errors]
    timelines = [gpu_timeline.analyze(t) for t in traces]
    for t, tl in zip(traces, timelines):
        notes += [Note("trace", "info", f"rank {t.rank}: {n}") for n in tl.notes]
    steps_df = _steps(traces, timelines)
    colls = pd.concat([tl.collectives for tl in timelines], ignore_index=True) if timelines else None
    ops = gpu_collectives.op_table(colls) if colls is not None and len(colls) else \
        pd.DataFrame(columns=["op", "group_size", "count", "bytes", "time_s"])
    ops = ops.assign(gpu_time_s=ops.get("time_s"), gpu_busbw_gbps=ops.get("busbw_gbps"),
                     time_source="gpu")
    cross, clock_info, cross_notes = trace_crossrank.analyze(traces, timelines)
    notes += cross_notes
    rows = [_rank_row(t, tl) for t, tl in zip(traces, timelines)]
    ranks_df = kpi.with_cross_rank(kpi.ranks_frame(rows, steps_df, steps_df), cross, keep_columns=True)
    info = _run_info(traces, timelines, path)
    # the waiting that does not shorten with the network: each rank-step's measured wait for the
    # last rank where the trace has the other ranks (cross["per_step"]), else ranks[].wait_s
    base = whatif.build(steps_df, ranks_df, {"time_basis": gpu_basis.GPU_TRACE}, info, ops, cross=cross)
    kpis = kpi.headline(kpi.KpiSource(steps_df, ranks_df, _bandwidth(colls), gpu_basis.GPU_TRACE,
                                      gpu=gpu_basis.trace_gpu(timelines),
                                      step_parts=partial(whatif.step_components, base)))
    notes = _cross_rank_notes(notes, kpis, cross, steps_df)
    if info["missing_ranks"] and traces and any(t.world_size for t in traces):
        notes.append(Note("missing_ranks", "warning",
                          f"no trace of rank(s) {_short(info['missing_ranks'])} of world size "
                          f"{info['world_size']}: the KPIs cover the traces given"))
    gpu_comm = comm_kernels.combine([tl.comm for tl in timelines])
    if comm_kernels.note_text(gpu_comm):
        notes.append(Note("gpu_comm", "info", comm_kernels.note_text(gpu_comm)))
    return Summary(run=info, steps=steps_df, step_info=kpi.step_info(steps_df, steps_df, 0), kpis=kpis,
                   ops=ops, ranks=ranks_df, verdict=assess(kpis, base), notes=notes, degraded=None,
                   overhead={"calls": 0, "record_us_per_call": None,
                             "dispatch_us_per_call_estimate": 0.0, "blocking_calls": 0,
                             "estimated_s_per_rank": 0.0, "estimated_fraction_of_wall": None},
                   hang=None, links=None, op_sizes=None, cross_rank=cross, clock_alignment=clock_info,
                   baseline=base, gpu_comm=gpu_comm)


def _steps(traces: list, timelines: list) -> pd.DataFrame:
    """Every rank's profiled steps (``kpis.STEP_COLUMNS``), each timed on the GPU: its span."""
    frames = []
    for t, tl in zip(traces, timelines):
        s = tl.steps[tl.steps["span_s"] > 0]
        frames.append(pd.DataFrame({
            "rank": t.rank, "step": s["step"].to_numpy("int64"),
            "t_start": s["gpu_start_ns"].to_numpy("int64"), "t_end": s["gpu_end_ns"].to_numpy("int64"),
            "source": "profiler_step", "duration_s": s["span_s"].to_numpy("float64"),
            "comm_s": s["comm_s"].to_numpy("float64"), "exposed_s": s["exposed_comm_s"].to_numpy("float64"),
            "comm_fraction": s["comm_fraction"].to_numpy("float64"),
            "exposed_comm_fraction": s["exposed_comm_fraction"].to_numpy("float64"),
            "bytes": _per_step(tl, s, "size"), "bus_bytes": _per_step(tl, s, "bus"),
            "ops": _per_step(tl, s, "count")}))
    steps_df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=kpi.STEP_COLUMNS)
    return steps_df[kpi.STEP_COLUMNS] if len(steps_df) else pd.DataFrame(columns=kpi.STEP_COLUMNS)


def _rank_row(t, tl) -> dict:
    """A trace's ranks[] row before its step KPIs: whole-trace GPU figures."""
    colls = tl.collectives
    return {"rank": int(t.rank), "host": Path(t.path).name, "attempt": 0, "ops": int(len(colls)),
            "bytes": _known_sum(colls["size_bytes"]) if len(colls) else 0,
            "complete": True, "exit_reason": None, "last_record_s": None,
            "comm_s": tl.totals["comm_s"], "exposed_comm_s": tl.totals["exposed_comm_s"],
            "wall_s": tl.totals["span_s"], "gpu": dict(tl.totals),
            "comm_fraction_wall": _share(tl.totals["comm_s"], tl.totals["span_s"]),
            "exposed_comm_fraction_wall": _share(tl.totals["exposed_comm_s"], tl.totals["span_s"])}


def _run_info(traces: list, timelines: list, path) -> dict:
    """The document's ``run`` section of traces."""
    world = max([t.world_size or 0 for t in traces] + [len(traces)])
    hosts = sorted({t.host for t in traces if t.host})
    return {"path": str(path), "source": SOURCE, "world_size": int(world),
            "ranks_captured": len(traces), "processes": len(traces), "hosts": hosts, "nodes": len(hosts),
            "backend": ",".join(sorted({t.backend for t in traces if t.backend})) or "unknown",
            "command": [], "exit_code": None, "signal": None, "status": "trace",
            "duration_s": max((tl.totals["span_s"] for tl in timelines), default=None),
            "torch_version": None, "nccl_version": next((t.nccl_version for t in traces if t.nccl_version), None),
            "commprof_version": _version(),
            "incomplete_ranks": [], "missing_ranks": sorted(set(range(world)) - {t.rank for t in traces}),
            "collectives": int(sum(len(tl.collectives) for tl in timelines)), "attempts": [0],
            "gpu_timing": {"calls_with_gpu_time": int(sum(len(tl.collectives) for tl in timelines)),
                           "fr_entries_seen": 0, "fr_entries_lost": 0, "source": SOURCE},
            "oversubscribed_hosts": [],
            "devices": sorted({t.device_name for t in traces if t.device_name})}


def _cross_rank_notes(notes: list, kpis: dict, cross: dict | None, steps_df: pd.DataFrame) -> list:
    """``notes`` with the straggler note appended and the waiting note first, as a run's
    (:func:`commprof.analysis.outcome.summary.summarize`)."""
    if cross is None:
        return notes
    sig = [s for s in cross["stragglers"] if s["significant"]]
    if sig:
        notes = notes + [straggler_note(sig[0], kpis.get("exposed_comm_s_per_step"))]
    n_steps = int(steps_df["step"].nunique()) if len(steps_df) else 0
    note = trace_crossrank.waiting_note(cross["per_rank"], cross["stragglers"], n_steps,
                                        kpis["wait_fraction_wall"])
    return [note, *notes] if note else notes


def _bandwidth(colls) -> dict:
    if colls is None or not len(colls):
        return {"algbw_gbps": None, "busbw_gbps": None}
    c = colls[(colls["size_bytes"] > 0) & (colls["duration_ns"] > 0)] if "duration_ns" in colls else colls.iloc[0:0]
    t = float(c["duration_ns"].sum()) if len(c) else 0.0
    if t <= 0:
        return {"algbw_gbps": None, "busbw_gbps": None}
    return {"algbw_gbps": float(c["size_bytes"].sum()) / t,
            "busbw_gbps": float((c["size_bytes"] * c["bus_factor"]).sum()) / t}


def _per_step(tl, s: pd.DataFrame, what: str) -> np.ndarray:
    """Per step of ``s``: the collectives' bytes (``size``), bus bytes (``bus``) or count; bytes
    are NaN (unknown) in a step with a collective of unknown size."""
    c = tl.collectives
    if not len(c) or "step" not in c:
        return np.zeros(len(s))
    w = {"size": c["size_bytes"], "count": pd.Series(1.0, index=c.index),
         "bus": c["size_bytes"] * c["bus_factor"]}[what]
    total = w.groupby(c["step"]).sum(min_count=1)
    unknown = w.isna().groupby(c["step"]).any()
    total[unknown.reindex(total.index, fill_value=False).to_numpy()] = np.nan
    return total.reindex(s["step"].to_numpy("int64"), fill_value=0).to_numpy("float64")


def _known_sum(sizes: pd.Series) -> int | None:
    """Σ sizes, or None (unknown) when any is unknown."""
    return None if sizes.isna().any() else int(sizes.sum())


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _short(ranks: list[int]) -> str:
    return ", ".join(map(str, ranks[:8])) + (" …" if len(ranks) > 8 else "")


def _version() -> str:
    from commprof._version import __version__
    return __version__


def is_trace_input(target) -> bool:
    """Whether ``target`` (a path, or a list of paths) names profiler traces rather than a run
    directory or a saved report: ``.json.gz`` files, ``.json`` files holding ``traceEvents``, or
    directories of them without a run manifest."""
    from commprof.format import kineto, layout
    paths = [Path(p) for p in (target if isinstance(target, (list, tuple)) else [target]) if p]
    if not paths:
        return False
    for p in paths:
        if p.is_dir():
            if layout.manifest_path(p).exists() or layout.ranks_dir(p).is_dir():
                return False
            if not kineto.trace_files(p):
                return False
        elif not kineto.looks_like_trace(p):
            return False
    return True
