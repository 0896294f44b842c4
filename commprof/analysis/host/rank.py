"""The per-rank reduction: one process's capture to the small :class:`RankPart` a summary needs
(and :class:`RankResult`, the part with the columns the cross-rank matching reads).

:func:`analyze_rank` is a pure function of one rank's frames (no file access, no other rank), so
ranks can be reduced one at a time, or in parallel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from commprof.analysis.gpu import gpu_basis
from commprof.analysis.measures.collectives import add_sizes, rank_op_partial
from commprof.analysis.host.exposure import rank_exposure
from commprof.analysis.host.links import size_buckets
from commprof.analysis.host.load import RankData
from commprof.analysis.host.steps import step_windows, wall_window
from commprof.format import schema


@dataclass
class RankPart:
    """What one process contributes to a summary (small: no per-record frames)."""

    row: dict  # the ranks[] row
    process: dict
    steps: pd.DataFrame  # per step, with metrics
    ops: pd.DataFrame  # rank_op_partial
    latency: dict  # (op, group size) -> latency.Latency: a sketch of the call durations, ns
    moving_bytes: float  # Σ S of calls with S > 0
    moving_bus_bytes: float
    moving_ns: float  # Σ duration of those calls
    backends: set
    collectives: int
    degraded: pd.DataFrame
    bus_bytes: float = 0.0  # Σ bus bytes of every call (links: wire / logical)
    buckets: pd.DataFrame | None = None  # calls per (op, n, size bucket) (links: efficiency)
    inflight: tuple | None = None  # union of in-flight intervals (links: communication windows)
    gpu: pd.DataFrame | None = None  # per (op, n): calls with a GPU-side duration, their sums
    blocking_calls: int = 0  # calls torch.distributed waited on itself (async_op False)
    gpu_steps: pd.DataFrame | None = None  # GPU-timeline figures of the steps GPU windows recorded
    gpu_window_s: float = 0.0  # Σ wall time of the recorded GPU windows (open → close)
    losses: pd.DataFrame | None = None  # step, t, value: the loss of each backward (capture/loss.py)
    # step, op, group_size, bytes, count of the calls issued in each step (folded to the measured
    # steps' sums, with ``steps``, as the run is folded: the op table's bytes per step)
    step_ops: pd.DataFrame | None = None


@dataclass
class RankResult:
    """What a summary needs from one capture file (small: no per-record frames): its
    :class:`RankPart` and the columns the cross-rank matching and the clock alignment read
    (built by :func:`commprof.analysis.scale.reduce.reduce_data`, written to node summaries by
    :mod:`commprof.analysis.scale.summary_codec`, folded by :mod:`commprof.analysis.scale.fold`)."""

    rank: int
    part: RankPart
    match_names: list[str]  # crossrank.matching_columns: the group names the rows' codes index
    match_rows: np.ndarray
    sync: pd.DataFrame  # clocks.sync_marks
    note: str | None = None  # damage found while reading the file


def analyze_rank(rd: RankData) -> RankPart:
    """Every per-rank quantity of one process (steps, exposure, op sums, whole-run window)."""
    c = add_sizes(rd.collectives)
    exp = rank_exposure(c, rd.waits, rd.spans)
    s = step_metrics(step_windows(rd.marks, rd.spans), c, exp)
    w = wall_window(rd.marks, c)
    proc = rd.process
    if not proc["complete"]:
        row_extra = {"last_record_s": _last_record_s(rd, c), "last_collective": _last_collective(rd, c)}
    else:
        row_extra = {"last_record_s": None}
    row = {"rank": int(rd.rank), "host": proc["host"], "attempt": int(proc["attempt"]),
           "ops": int(len(c)), "bytes": int(c["size_bytes"].sum()),
           "complete": bool(proc["complete"]), "exit_reason": proc["exit_reason"],
           "training_thread": exp.training_thread, **row_extra}
    if len(w):
        wa, wb = float(w["t_start"].iloc[0]), float(w["t_end"].iloc[0])
        wall = wb - wa
        row.update(wall_s=wall / 1e9, comm_s=float(exp.comm_ns([wa], [wb])[0]) / 1e9,
                   exposed_comm_s=float(exp.exposed_ns([wa], [wb])[0]) / 1e9)
        row["comm_fraction_wall"] = row["comm_s"] * 1e9 / wall if wall > 0 else None
        row["exposed_comm_fraction_wall"] = row["exposed_comm_s"] * 1e9 / wall if wall > 0 else None
    gpu_totals = _gpu_window_totals(getattr(rd, "gpu_activity", None))
    if gpu_totals is not None:
        row["gpu"] = gpu_totals
    gpu_steps = gpu_basis.rank_window_steps(getattr(rd, "gpu_activity", None),
                                            getattr(rd, "gpu_windows", None), s)
    ops, lat = rank_op_partial(c)
    moving = c[c["size_bytes"] > 0]
    backends = set(rd.groups["backend"].dropna()) if len(rd.groups) else set()
    return RankPart(row=row, process=proc, steps=s, ops=ops, latency=lat,
                    moving_bytes=float(moving["size_bytes"].sum()),
                    moving_bus_bytes=float(moving["bus_bytes"].sum()),
                    moving_ns=float(moving["duration_ns"].sum()), backends=backends,
                    collectives=int(len(c)), degraded=rd.degraded,
                    bus_bytes=float(c["bus_bytes"].sum()), buckets=size_buckets(c),
                    inflight=exp.inflight, gpu=_gpu_partial(c),
                    blocking_calls=int((~c["async_op"].astype(bool)).sum()) if "async_op" in c else 0,
                    gpu_steps=gpu_steps, gpu_window_s=_window_seconds(getattr(rd, "gpu_windows", None)),
                    losses=getattr(rd, "losses", None),
                    step_ops=step_op_bytes(s, c, rd.groups))


def _gpu_window_totals(g: pd.DataFrame | None) -> dict | None:
    """``ranks[].gpu`` of a run: the GPU-timeline KPIs of each window, summed (span too, so the
    time between windows is not idle), or None without windows."""
    from commprof.analysis.gpu import gpu_timeline
    if g is None or not len(g) or not (g["category"].astype(str) != "cpu").any():
        return None
    g = g.assign(kind=gpu_timeline.kinds(g))
    per = [gpu_timeline.totals(w) for _, w in g.groupby("window", observed=True)]
    return {k: sum(p[k] for p in per) for k in gpu_timeline.GPU_KEYS}


def _window_seconds(w: pd.DataFrame | None) -> float:
    if w is None or not len(w):
        return 0.0
    r = w[w["status"] == "recorded"]
    return float((pd.to_numeric(r["t_close"]) - pd.to_numeric(r["t_open"])).clip(lower=0).sum()) / 1e9


def _gpu_partial(c: pd.DataFrame) -> pd.DataFrame | None:
    """Per (op, group size): count, Σ GPU duration and Σ bus bytes of calls timed on the GPU."""
    if "gpu_duration_ns" not in c or not c["gpu_duration_ns"].notna().any():
        return None
    g = c[c["gpu_duration_ns"].notna()]
    return (g.assign(op=g["op"].astype(str))
            .groupby(["op", "group_size"], as_index=False)
            .agg(gpu_calls=("gpu_duration_ns", "size"), gpu_time_ns=("gpu_duration_ns", "sum"),
                 gpu_bytes=("size_bytes", "sum"), gpu_bus_bytes=("bus_bytes", "sum")))


def _last_record_s(rd: RankData, c: pd.DataFrame) -> float | None:
    """Seconds from a process's capture start to the last thing it recorded (for a rank that
    died: about when it died, give or take one flush interval)."""
    times = [rd.marks["t"].max() if len(rd.marks) else np.nan,
             c["t_return"].max() if len(c) else np.nan,
             rd.waits["t_end"].max() if len(rd.waits) else np.nan,
             rd.spans["t_end"].max() if len(rd.spans) else np.nan]
    last = np.nanmax(np.asarray(times, dtype="float64")) if not all(pd.isna(times)) else np.nan
    start = rd.marks.loc[rd.marks["kind"] == schema.MARK_START, "t"]
    origin = float(start.min()) if len(start) else float(rd.process.get("clock_mono_ns") or np.nan)
    value = (last - origin) / 1e9
    return None if np.isnan(value) else float(value)


def _last_collective(rd: RankData, c: pd.DataFrame) -> dict | None:
    """An incomplete rank's last collective: op, group, sequence number, S, when (s from its
    capture start) and whether it completed — where a rank that died was."""
    if not len(c):
        return None
    last = c.loc[c["t_issue"].idxmax()]
    names = dict(zip(rd.groups["gid"], rd.groups["desc"].fillna(rd.groups["name"]))) if len(rd.groups) else {}
    start = rd.marks.loc[rd.marks["kind"] == schema.MARK_START, "t"]
    origin = float(start.min()) if len(start) else float(c["t_issue"].min())
    done = last.get("t_done")
    return {"op": str(last["op"]), "group": str(names.get(last["group"], last["group"])),
            "seq": int(last["seq"]), "bytes": int(last["size_bytes"]),
            "t_s": (float(last["t_issue"]) - origin) / 1e9, "completed": bool(pd.notna(done))}


def step_metrics(s: pd.DataFrame, c: pd.DataFrame, exp) -> pd.DataFrame:
    """The steps ``s`` (:func:`~commprof.analysis.host.steps.step_windows`) with the columns a
    summary reads per step: communication and exposed time (from ``exp``, the rank's
    :class:`~commprof.analysis.host.exposure.RankExposure`) and the S, bus bytes and count of the
    calls ``c`` issued in each step.  Public for ``commprof run --live`` (live/rankstate.py)."""
    if not len(s):
        return s
    a, b = s["t_start"].to_numpy("float64"), s["t_end"].to_numpy("float64")
    s["comm_ns"] = exp.comm_ns(a, b)
    s["exposed_ns"] = exp.exposed_ns(a, b)
    issue = c["t_issue"].to_numpy("float64")
    idx = np.searchsorted(b, issue, side="left")  # the step whose (start, end] holds the issue
    inside = (idx < len(b)) & (issue > a[np.minimum(idx, len(b) - 1)])
    n = len(s)

    def per_step(col: str | None) -> np.ndarray:
        weights = c[col].to_numpy("float64")[inside] if col else None
        return np.bincount(idx[inside], weights=weights, minlength=n)[:n]

    s["bytes"], s["bus_bytes"], s["ops"] = per_step("size_bytes"), per_step("bus_bytes"), per_step(None)
    return s


STEP_OP_COLUMNS = ["step", "group", "group_desc", "op", "group_size", "bytes", "count"]


def step_op_bytes(s: pd.DataFrame, c: pd.DataFrame, groups: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per step, process group and (op, group size): S and calls of the calls issued in the step
    (the step whose (start, end] holds the issue, as :func:`step_metrics`); calls outside every
    step — start-up traffic such as DDP's initial broadcast — have step −1.  ``group`` is the
    group's name, ``group_desc`` its description (null when torch gave none: "undefined")."""
    if not len(c):
        return pd.DataFrame(columns=STEP_OP_COLUMNS)
    issue = c["t_issue"].to_numpy("float64")
    step = np.full(len(c), -1, dtype="int64")
    if len(s):
        a, b = s["t_start"].to_numpy("float64"), s["t_end"].to_numpy("float64")
        idx = np.searchsorted(b, issue, side="left")
        inside = (idx < len(b)) & (issue > a[np.minimum(idx, len(b) - 1)])
        step[inside] = s["step"].to_numpy("int64")[idx[inside]]
    g = groups if groups is not None and len(groups) else pd.DataFrame(columns=["gid", "name", "desc"])
    g = g.drop_duplicates("gid")
    gid = c["group"].to_numpy() if "group" in c else np.zeros(len(c), dtype="int64")
    name = pd.Series(g["name"].astype(str).to_numpy(), index=g["gid"].to_numpy())
    desc = pd.Series(g["desc"].to_numpy(), index=g["gid"].to_numpy())
    names = name.reindex(gid).to_numpy(dtype=object)
    descs = desc.reindex(gid).to_numpy(dtype=object)
    frame = pd.DataFrame({
        "step": step, "group": [str(n) if isinstance(n, str) else f"gid{i}" for n, i in zip(names, gid)],
        "group_desc": [d if isinstance(d, str) and d not in ("", "undefined") else "" for d in descs],
        "op": c["op"].astype(str).to_numpy(), "group_size": c["group_size"].to_numpy("int64"),
        "bytes": c["size_bytes"].to_numpy("float64"), "count": 1})
    out = frame.groupby(["step", "group", "group_desc", "op", "group_size"], as_index=False).agg(
        bytes=("bytes", "sum"), count=("count", "sum"))
    return out[STEP_OP_COLUMNS].astype({"count": "int64"})
