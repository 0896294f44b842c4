"""The whole analysis of a run: KPIs, per-op table, per-rank table, per-step series, verdict.

:func:`summarize` is a pure function of a run (streamed one process at a time through
:func:`analyze_rank`, or already loaded); the report renderers only format what it returns.
KPI definitions: docs/kpis.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from commprof.analysis import clocks, cpu, crossrank, intervals
from commprof.analysis.collectives import add_sizes, combine_op_tables, rank_op_partial
from commprof.analysis.exposure import rank_exposure
from commprof.analysis.links import size_buckets, summarize_links
from commprof.analysis.load import RankData, Run, RunSource, open_run
from commprof.analysis.steps import measured, step_windows, wall_window
from commprof.format import reader, schema

DEFAULT_WARMUP = 2
# Host time the dispatcher hop into a Python kernel adds to one gloo call (not measurable from
# inside the run): `python benchmarks/passthrough_kernel_cost.py`, 2-core x86_64, torch 2.13.
DISPATCH_NS_PER_CALL_ESTIMATE = 12_300
_STEP_RANK_COLUMNS = ("steps", "steps_total", "step_median_s", "comm_fraction",
                      "exposed_comm_fraction", "bytes_per_step", "comm_s_per_step",
                      "exposed_comm_s_per_step")


@dataclass
class Summary:
    """Everything a report shows."""

    run: dict
    steps: pd.DataFrame  # rank, step, t_start, t_end, duration_s, comm_s, exposed_s, bytes, ...
    step_info: dict
    kpis: dict
    ops: pd.DataFrame
    ranks: pd.DataFrame
    verdict: str
    notes: list[str] = field(default_factory=list)
    degraded: pd.DataFrame | None = None
    overhead: dict = field(default_factory=dict)
    hang: dict | None = None  # the hang report (commprof.hang/1), when one was written
    links: dict | None = None  # node sampler and probe figures (analysis/links.py)
    op_sizes: pd.DataFrame | None = None  # calls per (op, n, power-of-two size bucket), all ranks
    cross_rank: dict | None = None  # analysis/crossrank.py: wait vs transfer, stragglers
    clock_alignment: dict | None = None  # analysis/clocks.py


@dataclass
class RankPart:
    """What one process contributes to a summary (small: no per-record frames)."""

    row: dict  # the ranks[] row
    process: dict
    steps: pd.DataFrame  # per step, with metrics
    ops: pd.DataFrame  # rank_op_partial
    durations: dict  # (op, group size) -> call durations, ns
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


def analyze_rank(rd: RankData) -> RankPart:
    """Every per-rank quantity of one process (steps, exposure, op sums, whole-run window)."""
    c = add_sizes(rd.collectives)
    exp = rank_exposure(c, rd.waits, rd.spans)
    s = _step_metrics(step_windows(rd.marks, rd.spans), c, exp)
    w = wall_window(rd.marks, c)
    proc = rd.process
    if not proc["complete"]:
        row_extra = {"last_record_s": _last_record_s(rd, c)}
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
    ops, durations = rank_op_partial(c)
    moving = c[c["size_bytes"] > 0]
    backends = set(rd.groups["backend"].dropna()) if len(rd.groups) else set()
    return RankPart(row=row, process=proc, steps=s, ops=ops, durations=durations,
                    moving_bytes=float(moving["size_bytes"].sum()),
                    moving_bus_bytes=float(moving["bus_bytes"].sum()),
                    moving_ns=float(moving["duration_ns"].sum()), backends=backends,
                    collectives=int(len(c)), degraded=rd.degraded,
                    bus_bytes=float(c["bus_bytes"].sum()), buckets=size_buckets(c),
                    inflight=exp.inflight, gpu=_gpu_partial(c))


def _gpu_partial(c: pd.DataFrame) -> pd.DataFrame | None:
    """Per (op, group size): count, Σ GPU duration and Σ bus bytes of calls timed on the GPU."""
    if "gpu_duration_ns" not in c or not c["gpu_duration_ns"].notna().any():
        return None
    g = c[c["gpu_duration_ns"].notna()]
    return (g.assign(op=g["op"].astype(str))
            .groupby(["op", "group_size"], as_index=False)
            .agg(gpu_calls=("gpu_duration_ns", "size"), gpu_time_ns=("gpu_duration_ns", "sum"),
                 gpu_bus_bytes=("bus_bytes", "sum")))


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


def _step_metrics(s: pd.DataFrame, c: pd.DataFrame, exp) -> pd.DataFrame:
    """Add comm/exposed time and the S, bus bytes and count of the calls issued in each step."""
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


def summarize(source: Run | RunSource | str | Path | None = None,
              warmup: int = DEFAULT_WARMUP) -> Summary:
    """Compute every KPI of a run; each rank's first ``warmup`` steps are left out of medians.

    ``source``: a loaded :class:`Run`, an opened :class:`RunSource` (streamed one process at a
    time: memory is bounded by the largest capture file), or a run directory path.
    """
    src = source if isinstance(source, (Run, RunSource)) else open_run(source)
    sampled = any(reader.sample_paths(d) for d in (src.dirs or [src.path]))
    windows: dict[str, tuple] = {}  # host -> in-flight union of its ranks (only when sampled)
    parts, calls, syncs = [], crossrank.Calls(), []
    for rd in src.iter_ranks():
        part = analyze_rank(rd)
        calls.add(rd.rank, rd.collectives, rd.groups)
        syncs.append(clocks.sync_marks(rd.marks))
        if sampled and part.inflight is not None and len(part.inflight[0]):
            host = str(part.row["host"])
            old = windows.get(host, (np.zeros(0), np.zeros(0)))
            windows[host] = intervals.union(np.concatenate([old[0], part.inflight[0]]),
                                            np.concatenate([old[1], part.inflight[1]]))
        part.inflight = None  # bounded memory: not kept per rank
        parts.append(part)
    steps_df = _finish_steps([p.steps for p in parts if len(p.steps)])
    meas = measured(steps_df, warmup)
    ranks_df = pd.DataFrame([p.row for p in parts])
    if len(meas):
        per_rank = meas.groupby("rank").agg(
            steps=("step", "size"), step_median_s=("duration_s", "median"),
            comm_fraction=("comm_fraction", "median"),
            exposed_comm_fraction=("exposed_comm_fraction", "median"),
            bytes_per_step=("bytes", "median"), comm_s_per_step=("comm_s", "median"),
            exposed_comm_s_per_step=("exposed_s", "median"))
        ranks_df = ranks_df.merge(per_rank.reset_index(), on="rank", how="left")
        ranks_df = ranks_df.merge(steps_df.groupby("rank").size().rename("steps_total").reset_index(),
                                  on="rank", how="left")
    for col in _STEP_RANK_COLUMNS:  # the document's keys exist even when there are no steps
        if col not in ranks_df:
            ranks_df[col] = None
    ops = combine_op_tables([p.ops for p in parts], [p.durations for p in parts])
    moving_ns = sum(p.moving_ns for p in parts)
    bandwidth = {
        "algbw_gbps": sum(p.moving_bytes for p in parts) / moving_ns if moving_ns > 0 else None,
        "busbw_gbps": sum(p.moving_bus_bytes for p in parts) / moving_ns if moving_ns > 0 else None,
    }
    kpis = _kpis(ranks_df, meas, bandwidth)
    step_info = _step_info(steps_df, meas, warmup)
    info = _run_info(src, parts)
    notes = list(src.notes)
    if step_info["count"] == 0 and info["collectives"]:
        notes.append("no training steps detected (no optimizer.step() and no commprof.step()): "
                     "step KPIs are empty, whole-run KPIs still apply")
    degraded = [p.degraded for p in parts if len(p.degraded)]
    cross, clock_info = _cross_rank(parts, calls, syncs, steps_df, meas, info)
    kpis["wait_fraction_wall"] = kpis["transfer_fraction_wall"] = None
    if cross is not None:
        extra = cross["per_rank"].assign(wait_s=lambda d: d["wait_ns"] / 1e9,
                                         transfer_s=lambda d: d["transfer_ns"] / 1e9)
        ranks_df = ranks_df.merge(extra[["rank", "wait_s", "transfer_s", "last_share"]], on="rank",
                                  how="left")
        for name, col in (("wait_fraction_wall", "wait_s"), ("transfer_fraction_wall", "transfer_s")):
            frac = (ranks_df[col] / ranks_df["wall_s"]) if "wall_s" in ranks_df else pd.Series(dtype=float)
            kpis[name] = _median(frac.dropna()) if len(frac.dropna()) else None
        sig = [s for s in cross["stragglers"] if s["significant"]]
        if sig:
            s0 = sig[0]
            notes.append(f"rank {s0['rank']} was last in {s0['share_of_steps']:.0%} of measured steps, "
                         f"costing each other rank {s0['wait_cost_per_step_s'] * 1e3:.1f} ms/step of waiting")
    info["oversubscribed_hosts"] = cpu.oversubscribed_hosts(pd.DataFrame([p.process for p in parts]))
    if cpu.note(info["oversubscribed_hosts"]):
        notes.append(cpu.note(info["oversubscribed_hosts"]))
    ops, gpu_info = _gpu_columns(ops, parts)
    info["gpu_timing"] = gpu_info
    if gpu_info["fr_entries_lost"]:
        notes.append(f"PyTorch's Flight Recorder overwrote {gpu_info['fr_entries_lost']} entries before "
                     "commprof read them: their GPU times are missing; raise TORCH_FR_BUFFER_SIZE")
    op_sizes = _op_sizes(parts)
    links = _links(src, parts, windows, op_sizes)
    return Summary(run=info, steps=steps_df, step_info=step_info, kpis=kpis, ops=ops,
                   ranks=ranks_df, verdict=verdict(kpis, step_info), notes=notes,
                   degraded=pd.concat(degraded, ignore_index=True) if degraded else None,
                   overhead=self_overhead(parts, ranks_df), hang=src.hang, links=links,
                   op_sizes=op_sizes, cross_rank=cross, clock_alignment=clock_info)


def _cross_rank(parts, calls, syncs, steps_df, meas, info) -> tuple[dict | None, dict | None]:
    """Clock alignment and the cross-rank analysis (None, None for single-rank runs)."""
    procs = pd.DataFrame([p.process for p in parts])
    if procs["rank"].nunique() < 2:
        return None, None
    sync = pd.concat(syncs, ignore_index=True) if syncs else pd.DataFrame(columns=["rank", "phase", "round", "t"])
    rank_clocks = clocks.align(sync, procs)
    steps0 = steps_df[steps_df["rank"] == 0] if len(steps_df) else steps_df
    measured_steps = set(meas.loc[meas["rank"] == 0, "step"].tolist()) if len(meas) else set()
    cross = crossrank.analyze(calls, rank_clocks, steps0, measured_steps,
                              int(info["world_size"] or procs["rank"].nunique()))
    return cross, clocks.summary(rank_clocks)


def _gpu_columns(ops: pd.DataFrame, parts: list[RankPart]) -> tuple[pd.DataFrame, dict]:
    """Add gpu_time_s (per rank, like time_s), gpu_busbw_gbps and time_source to the op table."""
    tables = [p.gpu for p in parts if p.gpu is not None]
    info = {"calls_with_gpu_time": 0,
            "fr_entries_seen": int(sum(p.process.get("fr_seen", 0) or 0 for p in parts)),
            "fr_entries_lost": int(sum(p.process.get("fr_lost", 0) or 0 for p in parts)),
            "source": None}
    ops = ops.copy()
    for col in ("gpu_time_s", "gpu_busbw_gbps"):
        ops[col] = np.nan
    ops["time_source"] = "host"
    if not tables or not len(ops):
        return ops, info
    g = pd.concat(tables).groupby(["op", "group_size"], as_index=False).agg(
        gpu_calls=("gpu_calls", "sum"), gpu_time_ns=("gpu_time_ns", "sum"),
        gpu_bus_bytes=("gpu_bus_bytes", "sum"), ranks=("gpu_calls", "size"))
    info["calls_with_gpu_time"] = int(g["gpu_calls"].sum())
    info["source"] = "CUDA events (PyTorch Flight Recorder, TORCH_NCCL_ENABLE_TIMING=1)"
    for row in g.itertuples():
        sel = (ops["op"] == row.op) & (ops["group_size"] == row.group_size)
        ops.loc[sel, "gpu_time_s"] = row.gpu_time_ns / 1e9 / row.ranks
        ops.loc[sel, "gpu_busbw_gbps"] = row.gpu_bus_bytes / row.gpu_time_ns if row.gpu_time_ns else np.nan
        ops.loc[sel, "time_source"] = "host + gpu"
    return ops, info


def _op_sizes(parts: list[RankPart]) -> pd.DataFrame:
    """Every rank's calls per (op, group size, size bucket), summed over ranks."""
    tables = [p.buckets for p in parts if p.buckets is not None and len(p.buckets)]
    if not tables:
        return pd.DataFrame(columns=["op", "group_size", "bucket", "count", "bytes", "bus_bytes",
                                     "time_ns"])
    return pd.concat(tables).groupby(["op", "group_size", "bucket"], as_index=False).sum()


def _links(src, parts: list[RankPart], windows: dict, buckets: pd.DataFrame) -> dict | None:
    """The Links section (node samplers, probe), or None when the run has neither."""
    bus: dict[str, float] = {}
    for p in parts:
        host = str(p.row["host"])
        bus[host] = bus.get(host, 0.0) + p.bus_bytes
    return summarize_links(src.dirs or [src.path], windows, bus, buckets, reader.read_probe(src.path))


def self_overhead(parts: list[RankPart], ranks: pd.DataFrame) -> dict:
    """commprof's own cost in this run: recording time measured by the hooks themselves, plus an
    estimate of the dispatcher hop (a benchmark constant: it cannot be timed from inside)."""
    calls = sum(int(p.process.get("self_calls") or 0) for p in parts)
    record_ns = sum(int(p.process.get("self_record_ns") or 0) for p in parts)
    n = max(len(parts), 1)
    total_ns = record_ns + calls * DISPATCH_NS_PER_CALL_ESTIMATE
    wall = ranks["wall_s"].sum() if "wall_s" in ranks else 0.0
    return {
        "calls": calls,
        "record_us_per_call": record_ns / calls / 1e3 if calls else None,
        "dispatch_us_per_call_estimate": DISPATCH_NS_PER_CALL_ESTIMATE / 1e3,
        "estimated_s_per_rank": total_ns / n / 1e9,
        "estimated_fraction_of_wall": total_ns / 1e9 / wall if wall else None,
    }


def _finish_steps(step_rows: list[pd.DataFrame]) -> pd.DataFrame:
    cols = ["rank", "step", "t_start", "t_end", "source", "duration_s", "comm_s", "exposed_s",
            "comm_fraction", "exposed_comm_fraction", "bytes", "bus_bytes", "ops"]
    if not step_rows:
        return pd.DataFrame(columns=cols)
    s = pd.concat(step_rows, ignore_index=True)
    dur = (s["t_end"] - s["t_start"]).astype("float64")
    s["duration_s"] = dur / 1e9
    s["comm_s"] = s["comm_ns"] / 1e9
    s["exposed_s"] = s["exposed_ns"] / 1e9
    s["comm_fraction"] = np.where(dur > 0, s["comm_ns"] / dur.where(dur > 0, 1), 0.0)
    s["exposed_comm_fraction"] = np.where(dur > 0, s["exposed_ns"] / dur.where(dur > 0, 1), 0.0)
    return s[cols]


def _median(series) -> float | None:
    series = pd.Series(series).dropna()
    return float(series.median()) if len(series) else None


def _max(series) -> float | None:
    series = pd.Series(series).dropna()
    return float(series.max()) if len(series) else None


def _kpis(ranks: pd.DataFrame, meas: pd.DataFrame, bandwidth: dict) -> dict:
    def col(name):
        return ranks[name] if name in ranks else pd.Series(dtype="float64")

    return {
        "bytes_per_step": _median(col("bytes_per_step")),
        "comm_fraction": _median(col("comm_fraction")),
        "exposed_comm_fraction": _median(col("exposed_comm_fraction")),
        "comm_fraction_max_rank": _max(col("comm_fraction")),
        "exposed_comm_fraction_max_rank": _max(col("exposed_comm_fraction")),
        "comm_s_per_step": _median(col("comm_s_per_step")),
        "exposed_comm_s_per_step": _median(col("exposed_comm_s_per_step")),
        "bus_bytes_per_step": _median(meas.groupby("rank")["bus_bytes"].median()) if len(meas) else None,
        "comm_fraction_wall": _median(col("comm_fraction_wall")),
        "exposed_comm_fraction_wall": _median(col("exposed_comm_fraction_wall")),
        **bandwidth,
    }


def _step_info(steps: pd.DataFrame, meas: pd.DataFrame, warmup: int) -> dict:
    counts = steps.groupby("rank").size() if len(steps) else pd.Series(dtype="int64")
    per_step = (meas.groupby("step").agg(duration_s=("duration_s", "median"),
                                         comm_fraction=("comm_fraction", "median"),
                                         exposed_comm_fraction=("exposed_comm_fraction", "median"),
                                         bytes=("bytes", "median"))
                if len(meas) else pd.DataFrame())
    return {
        "count": int(counts.median()) if len(counts) else 0,
        "count_min_rank": int(counts.min()) if len(counts) else 0,
        "count_max_rank": int(counts.max()) if len(counts) else 0,
        "source": str(steps["source"].iloc[0]) if len(steps) else "none",
        "warmup": int(warmup),
        "measured": int(meas.groupby("rank").size().median()) if len(meas) else 0,
        "median_s": _median(meas.groupby("rank")["duration_s"].median()) if len(meas) else None,
        "p90_s": float(meas["duration_s"].quantile(0.9)) if len(meas) else None,
        "per_step": per_step.reset_index().to_dict("records") if len(per_step) else [],
    }


def _run_info(src: Run | RunSource, parts: list[RankPart]) -> dict:
    m = src.manifest
    procs = pd.DataFrame([p.process for p in parts])
    world = procs["world_size"].dropna()
    backends = sorted(set().union(*(p.backends for p in parts)))
    start, end = m.get("start_wall_ns"), m.get("end_wall_ns")
    return {
        "path": str(src.path),
        "world_size": int(world.max()) if len(world) else 0,
        "ranks_captured": int(procs["rank"].nunique()),
        "processes": int(len(procs)),
        "hosts": sorted(procs["host"].dropna().unique().tolist()),
        "nodes": int(procs["host"].nunique()),
        "backend": ",".join(backends) if backends else "none",
        "command": m.get("command", []),
        "exit_code": m.get("exit_code"),
        "signal": m.get("signal"),
        "status": m.get("status"),
        "duration_s": (end - start) / 1e9 if start and end else None,
        "torch_version": m.get("torch_version"),
        "nccl_version": next((v for v in procs.get("nccl_version", []) if v), None)
        if "nccl_version" in procs else None,
        "commprof_version": m.get("commprof_version"),
        "incomplete_ranks": sorted(int(r) for r in procs.loc[~procs["complete"], "rank"]),
        "missing_ranks": sorted(set(range(int(world.max()) if len(world) else 0))
                                - {int(r) for r in procs["rank"]}),
        "collectives": sum(p.collectives for p in parts),
        "attempts": list(getattr(src, "attempts", None) or sorted({int(p.process["attempt"]) for p in parts})),
    }


def verdict(kpis: dict, step_info: dict) -> str:
    """One line: is communication what slows this job down?"""
    exposed = kpis.get("exposed_comm_fraction")
    total = kpis.get("comm_fraction")
    basis = "of step time"
    if exposed is None:
        exposed, total, basis = (kpis.get("exposed_comm_fraction_wall"),
                                 kpis.get("comm_fraction_wall"), "of wall time")
    if exposed is None or (total or 0) == 0:
        return "No communication captured: this job is not communication-bound."
    bound = 1 / (1 - exposed) if exposed < 1 else float("inf")
    head = (f"Communication is exposed for {exposed:.0%} {basis} (in flight {total:.0%}); "
            f"free communication would speed steps up at most {bound:.2f}x")
    if exposed < 0.05:
        return head + " — not communication-bound: a faster network will not help much."
    if exposed < 0.20:
        return head + " — partly communication-bound: better overlap or fewer bytes may pay off."
    return head + " — communication-bound: overlap, compress or shard differently before buying links."
