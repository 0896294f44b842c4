"""Which clock the headline KPIs stand on (``kpis.time_basis``; docs/kpis.md, "Time basis").

* ``host`` — host clocks see the transfers (gloo and other CPU backends): the KPIs as measured.
* ``gpu_windows`` — a ``commprof run`` of an NCCL job whose GPU windows recorded GPU ops: the
  step KPIs are over the windows' measured steps, with the GPU timeline's communication and
  exposure of the ops launched in each step (:mod:`commprof.analysis.gpu.gpu_timeline`) over the
  step's wall time.  Bytes per step stay exact: the host counts them.
* ``gpu_trace`` — PyTorch-profiler traces (:mod:`commprof.analysis.outcome.trace_summary`).
* ``host_launch`` — an NCCL job without GPU figures: the host sees only each collective's
  launch, so every communication-time KPI is null; the host's figures stay under ``kpis.host``.

Where the basis is not ``host``, ``kpis.host`` keeps the host-side KPIs, labelled as such.  This
module prepares what the headline stands on; :func:`commprof.analysis.measures.kpis.headline` assembles it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from commprof.analysis.gpu import gpu_timeline
from commprof.analysis.measures import kpis as kpi
from commprof.analysis.measures.kpi_registry import GPU_TRACE, GPU_WINDOWS, HOST, HOST_LAUNCH

__all__ = ["HOST", "GPU_WINDOWS", "GPU_TRACE", "HOST_LAUNCH", "rank_window_steps", "window_steps",
           "choose", "headline_steps", "window_gpu", "trace_gpu", "gpu_bandwidth", "wall_fractions",
           "blank_launch_times"]

_SUMS = ("comm_s", "overlap_s", "exposed_comm_s", "compute_s", "memcpy_s", "idle_s", "span_s")


def rank_window_steps(gpu: pd.DataFrame | None, windows: pd.DataFrame | None,
                      steps: pd.DataFrame) -> pd.DataFrame | None:
    """One rank's GPU figures per step its GPU windows recorded whole (``gpu_timeline.STEP_COLUMNS``),
    steps with no GPU op left out; None when there are none.

    ``gpu``/``windows``: the rank's ``gpu_activity``/``gpu_windows`` frames; ``steps``: its host
    step windows (``step``, ``t_start``, ``t_end``).  A record's ``step`` was set at capture time:
    the step in which its op was launched, numbered as the analysis numbers steps.
    """
    if gpu is None or not len(gpu) or windows is None or not len(windows) or not len(steps):
        return None
    rec = windows[windows["status"] == "recorded"]
    whole: set[int] = set()
    for first, n in zip(rec["first_step"], rec["steps_ended"]):
        if pd.notna(first) and pd.notna(n):
            whole.update(range(int(first), int(first) + int(n)))
    st = steps[steps["step"].isin(whole)]
    if not len(st):
        return None
    g = gpu[gpu["step"].isin(whole)]
    g = g.assign(kind=gpu_timeline.kinds(g))
    frame = pd.DataFrame({"step": st["step"].to_numpy("int64"),
                          "start_ns": st["t_start"].to_numpy("float64").astype("int64"),
                          "end_ns": st["t_end"].to_numpy("float64").astype("int64")})
    per = gpu_timeline.per_step(g, frame)
    per = per[per["span_s"] > 0]
    return per.reset_index(drop=True) if len(per) else None


def window_steps(frames: list[tuple[int, pd.DataFrame | None]]) -> pd.DataFrame:
    """Every rank's :func:`rank_window_steps` in one frame, with a ``rank`` column."""
    rows = [f.assign(rank=r) for r, f in frames if f is not None and len(f)]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["rank", *gpu_timeline.STEP_COLUMNS])


def choose(backend: str, gpu_steps: pd.DataFrame) -> str:
    """The time basis of a run: GPU windows where they recorded GPU ops, else ``host_launch``
    for NCCL, else ``host``."""
    if len(gpu_steps):
        return GPU_WINDOWS
    return HOST_LAUNCH if "nccl" in str(backend).lower() else HOST


def headline_steps(gpu_steps: pd.DataFrame, host_steps: pd.DataFrame,
                   host_meas: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rank-steps in ``kpis.STEP_COLUMNS`` form, the GPU rows they came from) of the window
    steps that are measured (past warm-up); all window steps when every one is in warm-up.

    A step's time is its wall time (the host step: what the job waits for, what a what-if
    saves); ``comm_s``/``exposed_s`` are the GPU communication of the ops launched in it and its
    exposed part; bytes, bus bytes and calls are the host's (exact) for the same step.
    """
    keys = host_meas[["rank", "step"]].astype("int64")
    g = gpu_steps.astype({"rank": "int64", "step": "int64"})
    used = g.merge(keys, on=["rank", "step"])
    if not len(used):
        used = g
    h = host_steps[["rank", "step", "t_start", "t_end", "source", "duration_s", "bytes", "bus_bytes",
                    "ops"]].astype({"rank": "int64", "step": "int64"})
    m = used.merge(h, on=["rank", "step"], how="inner")
    span = m["duration_s"].to_numpy("float64")
    out = pd.DataFrame({
        "rank": m["rank"], "step": m["step"], "t_start": m["t_start"], "t_end": m["t_end"],
        "source": m["source"], "duration_s": span, "comm_s": m["comm_s"],
        "exposed_s": m["exposed_comm_s"],
        "comm_fraction": np.divide(m["comm_s"], span, out=np.zeros(len(m)), where=span > 0),
        "exposed_comm_fraction": np.divide(m["exposed_comm_s"], span, out=np.zeros(len(m)),
                                           where=span > 0),
        "bytes": m["bytes"].fillna(0.0), "bus_bytes": m["bus_bytes"].fillna(0.0),
        "ops": m["ops"].fillna(0.0)})
    return out[kpi.STEP_COLUMNS], used


def window_gpu(used: pd.DataFrame) -> dict:
    """The GPU timeline's shares (``kpis.gpu_*``), time-weighted over the window steps ``used``."""
    total = {k: float(used[k].sum()) for k in _SUMS}
    return {**gpu_timeline.fractions(total), "basis": "steps"}


def trace_gpu(timelines) -> dict:
    """The GPU timeline's shares over every rank's profiled steps (else whole traces)."""
    rows = [tl.steps[list(_SUMS)] for tl in timelines if len(tl.steps) and tl.steps["span_s"].sum() > 0]
    if rows:
        total, basis = pd.concat(rows).sum().to_dict(), "steps"
    else:
        total = {k: sum(tl.totals[k] for tl in timelines) for k in _SUMS}
        basis = "trace"
    return {**gpu_timeline.fractions(total), "basis": basis}


def gpu_bandwidth(tables: list[pd.DataFrame]) -> dict:
    """algbw/busbw of the calls the Flight Recorder timed on the GPU (Σ bytes ÷ Σ GPU time),
    None without any."""
    rows = [t for t in tables if t is not None and len(t)]
    if not rows:
        return {"algbw_gbps": None, "busbw_gbps": None}
    t = pd.concat(rows)
    ns = float(t["gpu_time_ns"].sum())
    if ns <= 0:
        return {"algbw_gbps": None, "busbw_gbps": None}
    return {"algbw_gbps": float(t["gpu_bytes"].sum()) / ns, "busbw_gbps": float(t["gpu_bus_bytes"].sum()) / ns}


def wall_fractions(gpu_totals: list[tuple[dict | None, float]]) -> dict:
    """Whole-window GPU fractions: per rank, GPU communication (exposed) over every op its
    windows recorded ÷ the windows' wall time (open → close); the median over ranks."""
    def med(key):
        v = [g[key] / wall for g, wall in gpu_totals if g and wall > 0]
        return float(np.median(v)) if v else None
    return {"comm_fraction_wall": med("comm_s"), "exposed_comm_fraction_wall": med("exposed_comm_s")}


# ranks[] and steps.per_step keys that rest on communication time (null on host_launch).
RANK_COMM_TIME = ("comm_s", "exposed_comm_s", "comm_fraction", "exposed_comm_fraction",
                  "comm_fraction_step_median", "exposed_comm_fraction_step_median",
                  "comm_fraction_wall", "exposed_comm_fraction_wall", "comm_s_per_step",
                  "exposed_comm_s_per_step", "wait_s", "transfer_s")
STEP_COMM_TIME = ("comm_fraction", "exposed_comm_fraction", "comm_s", "exposed_s")


def blank_launch_times(ranks: pd.DataFrame, step_info: dict) -> tuple[pd.DataFrame, dict]:
    """``host_launch``: the per-rank and per-step communication times nulled (launch times are
    not communication time); the run's host figures stay under ``kpis.host``."""
    ranks = ranks.copy()
    for col in RANK_COMM_TIME:
        if col in ranks:
            ranks[col] = None
    info = dict(step_info)
    info["per_step"] = [{k: (None if k in STEP_COMM_TIME else v) for k, v in row.items()}
                        for row in step_info.get("per_step") or []]
    return ranks, info
