"""The whole analysis of a run: KPIs, per-op table, per-rank table, per-step series, verdict.

:func:`summarize` is a pure function of a run (streamed one process at a time through
:func:`analyze_rank`, or already loaded); the report renderers only format what it returns.
KPI definitions: docs/kpis.md.
"""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from commprof.analysis.outcome import advice, whatif
from commprof.analysis.cross import clocks, crossrank
from commprof.analysis.host import cpu, training
from commprof.analysis.gpu import gpu_basis
from commprof.analysis.measures import kpis as kpi
from commprof.analysis.measures.collectives import combine_op_tables
from commprof.analysis.measures.kpis import DEFAULT_WARMUP
from commprof.analysis.host.links import summarize_links
from commprof.analysis.host.load import Run, RunSource, open_run
from commprof.analysis.host.rank import RankPart, analyze_rank
from commprof.analysis.scale.fold import Fold
from commprof.analysis.scale.node_summary import reduce_run
from commprof.analysis.host.steps import measured
from commprof.analysis.outcome.verdict import Note, Verdict, assess, slow_step_note, straggler_note, warmup_note
from commprof.analysis.outcome.own_cost import clocked_split

__all__ = ["DEFAULT_WARMUP", "Summary", "summarize", "analyze_rank"]
# Host time the dispatcher hop into a Python kernel adds to one gloo call (not measurable from
# inside the run), as `python benchmarks/passthrough_kernel_cost.py` measured it (2-core x86_64,
# torch 2.13; docs/performance.md, "Where the per-call time goes", which a test keeps equal):
# an async call alone, and one iteration of a loop of blocking calls (hop + hand-offs).
DISPATCH_NS_ASYNC_CALL = 16_600
DISPATCH_NS_BLOCKING_CALL = 32_900
# The native kernel's CPU that its own clock does not see (the boxed call into it, its first and
# last clock reads; for a blocking call also the call into the native Work.wait around torch's):
# main-thread CPU added with the kernel (and wait) on minus its own time, per call: medians of the
# runs of `python benchmarks/run_cost.py --inside-reps 31` in docs/performance.md ("The cost per
# call of a whole commprof run", which a test keeps equal).
DISPATCH_NS_NATIVE_ASYNC_CALL = 250
DISPATCH_NS_NATIVE_BLOCKING_CALL = 860


@dataclass
class Summary:
    """Everything a report shows."""

    run: dict
    steps: pd.DataFrame  # rank, step, t_start, t_end, duration_s, comm_s, exposed_s, bytes, ...
    step_info: dict
    kpis: dict
    ops: pd.DataFrame
    ranks: pd.DataFrame
    verdict: Verdict
    notes: list[Note] = field(default_factory=list)
    degraded: pd.DataFrame | None = None
    overhead: dict = field(default_factory=dict)
    hang: dict | None = None  # the hang report (commprof.hang/1), when one was written
    links: dict | None = None  # node sampler and probe figures (analysis/host/links.py)
    op_sizes: pd.DataFrame | None = None  # calls per (op, n, power-of-two size bucket), all ranks
    cross_rank: dict | None = None  # analysis/cross/crossrank.py: wait vs transfer, stragglers
    clock_alignment: dict | None = None  # analysis/cross/clocks.py
    baseline: whatif.Baseline | None = None  # what projections start from (analysis/outcome/whatif.py)
    training: dict | None = None  # the loss curve and the fixes applied (analysis/host/training.py)
    gpu_comm: dict | None = None  # which rule counted which kernels as communication (comm_kernels)
    op_groups: pd.DataFrame | None = None  # the op table per process group (summary.op_groups)


def summarize(source: Run | RunSource | str | Path | None = None,
              warmup: int = DEFAULT_WARMUP, jobs: int | None = 1, executor: Executor | None = None,
              progress: Callable[[int, int], None] | None = None, node_summaries: bool = True) -> Summary:
    """Compute every KPI of a run; each rank's first ``warmup`` steps are left out of medians.

    ``source``: a loaded :class:`Run`, an opened :class:`RunSource` (streamed one process at a
    time: memory is bounded by the largest capture file plus small per-process state), or a run
    directory path.  Files are reduced in this process (``jobs=1``), by ``jobs`` local processes
    (None: one per core for runs big enough to gain from it; a script that asks for a pool needs
    Python's ``if __name__ == "__main__":`` guard, as for any multiprocessing) or on ``executor`` (a Dask cluster's,
    :func:`commprof.analysis.scale.reduce.dask_executor`); captures a node summary stands for are
    taken from it unless ``node_summaries`` is False.  The summary is the same either way.
    """
    src = source if isinstance(source, (Run, RunSource)) else open_run(source)
    nodes, node_notes = src.node_samples()
    fold = Fold(bool(nodes), warmup)
    for res in reduce_run(src, jobs, executor, progress, node_summaries):
        fold.add(res)
    parts = fold.parts
    steps_df = kpi.finish_steps(fold.step_rows())
    host_meas = measured(steps_df, warmup)
    info = _run_info(src, parts)
    basis, meas, used = _time_basis(parts, info, steps_df, host_meas)
    cross, clock_info = _cross_rank(parts, fold.calls, fold.syncs, steps_df, host_meas, info)
    ranks_df = kpi.with_cross_rank(kpi.ranks_frame([p.row for p in parts], meas, steps_df), cross)
    info["oversubscribed_hosts"] = cpu.oversubscribed_hosts(pd.DataFrame([p.process for p in parts]))
    ops = _measured_per_step(combine_op_tables([p.ops for p in parts], [fold.latency]), parts)
    ops, info["gpu_timing"] = _gpu_columns(ops, parts)
    step_info = kpi.step_info(steps_df, meas, warmup)
    shown_ranks, shown_steps = ((ranks_df, step_info) if basis != gpu_basis.HOST_LAUNCH
                                else gpu_basis.blank_launch_times(ranks_df, step_info))
    op_sizes, probe = _op_sizes(parts), src.probe()
    base = whatif.build(meas, shown_ranks, {"time_basis": basis}, info, ops, cross=cross, probe=probe,
                        op_sizes=op_sizes)
    kpis = kpi.headline(_kpi_source(parts, basis, meas, used, ranks_df, steps_df, host_meas, base))
    notes = _notes(src, parts, info, steps_df, step_info, warmup, cross, kpis, basis)
    notes += advice.notes(base, info, probe)
    degraded = [p.degraded for p in parts if len(p.degraded)]
    return Summary(baseline=base, run=info, steps=steps_df, step_info=shown_steps, kpis=kpis, ops=ops,
                   ranks=shown_ranks, verdict=assess(kpis, base), notes=notes,
                   degraded=pd.concat(degraded, ignore_index=True) if degraded else None,
                   overhead=self_overhead(parts, shown_ranks), hang=src.hang,
                   links=_links(nodes, node_notes, parts, fold.windows, op_sizes, probe),
                   op_sizes=op_sizes, cross_rank=cross, clock_alignment=clock_info,
                   op_groups=op_groups(parts), training=_training(parts))


def _time_basis(parts: list[RankPart], info: dict, steps_df: pd.DataFrame, host_meas: pd.DataFrame
                ) -> tuple[str, pd.DataFrame, pd.DataFrame | None]:
    """(``kpis.time_basis``, the headline's measured rank-steps, the GPU window steps they came
    from): on ``gpu_windows`` the GPU's own timeline is the truth (docs/kpis.md, "Time basis")."""
    gpu_steps = gpu_basis.window_steps([(int(p.row["rank"]), p.gpu_steps) for p in parts])
    basis = gpu_basis.choose(info["backend"], gpu_steps)
    if basis != gpu_basis.GPU_WINDOWS:
        return basis, host_meas, None
    meas, used = gpu_basis.headline_steps(gpu_steps, steps_df, host_meas)
    return basis, meas, used


def _kpi_source(parts: list[RankPart], basis: str, meas: pd.DataFrame, used: pd.DataFrame | None,
                ranks_df: pd.DataFrame, steps_df: pd.DataFrame, host_meas: pd.DataFrame,
                base: whatif.Baseline | None) -> kpi.KpiSource:
    """What the run's headline stands on: its basis' steps and bandwidth (the Flight Recorder's
    GPU times unless the host sees the transfer), and the host clocks' figures beside them."""
    moving_ns = sum(p.moving_ns for p in parts)
    host_bw = {
        "algbw_gbps": sum(p.moving_bytes for p in parts) / moving_ns if moving_ns > 0 else None,
        "busbw_gbps": sum(p.moving_bus_bytes for p in parts) / moving_ns if moving_ns > 0 else None,
    }
    parts_of_step = partial(whatif.step_components, base)
    if basis == gpu_basis.HOST:
        return kpi.KpiSource(meas, ranks_df, host_bw, basis, step_parts=parts_of_step)
    host_ranks = ranks_df if meas is host_meas else kpi.ranks_frame([p.row for p in parts], host_meas,
                                                                     steps_df)
    host = kpi.KpiSource(host_meas, host_ranks, host_bw)
    gpu_bw = gpu_basis.gpu_bandwidth([p.gpu for p in parts])
    if basis == gpu_basis.HOST_LAUNCH:
        return kpi.KpiSource(meas, ranks_df, gpu_bw, basis, step_parts=parts_of_step, host=host)
    wall = gpu_basis.wall_fractions([(p.row.get("gpu"), p.gpu_window_s) for p in parts])
    gpu = gpu_basis.window_gpu(used) if used is not None and len(used) else None
    return kpi.KpiSource(meas, ranks_df, gpu_bw, basis, wall=wall, gpu=gpu, step_parts=parts_of_step,
                         host=host)


def _notes(src, parts: list[RankPart], info: dict, steps_df: pd.DataFrame, step_info: dict,
           warmup: int, cross: dict | None, kpis: dict, basis: str) -> list[Note]:
    """The run's notes, in the order the report shows them (before the advice)."""
    notes = [Note("capture", "warning", n) for n in src.notes]
    if step_info["count"] == 0 and info["collectives"]:
        notes.append(Note("no_steps", "warning",
                          "no training steps detected (no optimizer.step() and no commprof.step()): "
                          "step KPIs are empty, whole-run KPIs still apply"))
    counts = steps_df.groupby("rank").size().to_dict() if len(steps_df) else {}
    notes += [n for n in (warmup_note(warmup, counts),
                          slow_step_note(step_info["per_step"], step_info["median_s"])) if n]
    sig = [s for s in cross["stragglers"] if s["significant"]] if cross is not None else []
    if sig:
        notes.append(straggler_note(sig[0], kpis.get("exposed_comm_s_per_step")))
    if cpu.note(info["oversubscribed_hosts"]):
        notes.append(Note("oversubscribed", "warning", cpu.note(info["oversubscribed_hosts"])))
    if basis == gpu_basis.HOST_LAUNCH:
        notes.append(Note("gpu_timeline", "warning",
                          "GPU timeline not measured: on NCCL the host sees only each collective's "
                          "launch, so communication times are left out (the host's launch times are "
                          "under kpis.host, labelled host-side); `commprof run` records GPU windows "
                          "from step 5 by default (`--gpu-windows 3/100@2` for shorter runs), or "
                          "report a torch.profiler trace (`commprof report TRACE`)"))
    lost = info["gpu_timing"]["fr_entries_lost"]
    if lost:
        notes.append(Note("flight_recorder_lost", "warning",
                          f"PyTorch's Flight Recorder overwrote {lost} entries before commprof read "
                          "them: their GPU times are missing; raise TORCH_FR_BUFFER_SIZE"))
    gpu_note = _gpu_windows_note(parts)
    return notes + ([gpu_note] if gpu_note else [])


def _measured_per_step(ops: pd.DataFrame, parts: list[RankPart]) -> pd.DataFrame:
    """``bytes_per_step``/``calls_per_step`` of the op table: per rank that issued the op, its S
    and calls over its measured steps ÷ their number, averaged over those ranks (start-up traffic,
    outside every step, and warm-up steps apart: 0 for an op only they issued); null on a run
    without steps."""
    ops = ops.copy()
    ops["bytes_per_step"] = ops["calls_per_step"] = np.nan
    frames = [p.step_ops.assign(part=i) for i, p in enumerate(parts)
              if p.step_ops is not None and len(p.step_ops)]
    if not frames or not len(ops):
        return ops
    f = pd.concat(frames, ignore_index=True)
    f = f[f["steps"] > 0]
    if not len(f):
        return ops
    per_rank = f.groupby(["part", "op", "group_size"], as_index=False).agg(
        b=("bytes", "sum"), k=("count", "sum"), steps=("steps", "first"))
    per_rank = per_rank.assign(bytes_per_step=per_rank["b"] / per_rank["steps"],
                               calls_per_step=per_rank["k"] / per_rank["steps"])
    per = per_rank.groupby(["op", "group_size"])[["bytes_per_step", "calls_per_step"]].mean()
    for (op, n), r in per.iterrows():
        sel = (ops["op"] == op) & (ops["group_size"] == n)
        ops.loc[sel, "bytes_per_step"], ops.loc[sel, "calls_per_step"] = r["bytes_per_step"], r["calls_per_step"]
    return ops


def op_groups(parts: list[RankPart]) -> pd.DataFrame | None:
    """The op table per process group (``op_groups``): per (group, op, group size), over the ranks
    that issued it — ``ranks``, their mean calls and S over the run (``count``, ``bytes``) and per
    measured step (``calls_per_step``, ``bytes_per_step``: null without steps); None without calls."""
    frames = [p.step_ops for p in parts if p.step_ops is not None and len(p.step_ops)]
    if not frames:
        return None
    f = pd.concat(frames, ignore_index=True)
    pos = f["steps"] > 0
    f = f.assign(b=(f["bytes"] / f["steps"].where(pos)), k=(f["count"] / f["steps"].where(pos)))
    out = f.groupby(["group", "group_desc", "op", "group_size"], as_index=False).agg(
        ranks=("op", "size"), count=("count_run", "mean"), bytes=("bytes_run", "mean"),
        calls_per_step=("k", "mean"), bytes_per_step=("b", "mean"))
    out["group_desc"] = out["group_desc"].replace("", None)
    return out.sort_values(["group", "bytes"], ascending=[True, False], kind="stable").reset_index(drop=True)


def _training(parts: list[RankPart]) -> dict | None:
    """``training``: the loss curve and the fixes (None when the run has neither)."""
    ranks = [int(p.row["rank"]) for p in parts]
    loss = training.loss_curve(list(zip(ranks, [p.losses for p in parts])),
                               sum(int(p.process.get("losses_lost") or 0) for p in parts))
    fixes = training.fix_table(list(zip(ranks, [p.process.get("fixes") or [] for p in parts])))
    metrics = training.metric_table(list(zip(ranks, [p.process.get("metrics") or [] for p in parts])))
    if not (loss or fixes or metrics):
        return None
    return {"loss": loss, "fixes": fixes, **({"metrics": metrics} if metrics else {})}


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


def _links(nodes, node_notes, parts: list[RankPart], windows: dict, buckets: pd.DataFrame,
           probe: dict | None) -> dict | None:
    """The Links section (node samplers, probe), or None when the run has neither."""
    bus: dict[str, float] = {}
    for p in parts:
        host = str(p.row["host"])
        bus[host] = bus.get(host, 0.0) + p.bus_bytes
    return summarize_links(nodes, node_notes, windows, bus, buckets, probe)


def _gpu_windows_note(parts: list[RankPart]) -> Note | None:
    """Say where commprof's GPU windows yielded to the job's own torch.profiler."""
    ranks = sorted({int(p.row["rank"]) for p in parts
                    if p.process.get("gpu_windows_skipped") or p.process.get("gpu_windows_yielded")})
    if not ranks:
        return None
    skipped = sum(int(p.process.get("gpu_windows_skipped") or 0) for p in parts)
    cut = sum(int(p.process.get("gpu_windows_yielded") or 0) for p in parts)
    return Note("gpu_windows", "info",
                f"GPU windows yielded to the job's own torch.profiler on rank(s) "
                f"{', '.join(map(str, ranks))}: {skipped} window(s) skipped, {cut} closed early")


def self_overhead(parts: list[RankPart], ranks: pd.DataFrame) -> dict:
    """commprof's own cost in this run: recording time measured by the hooks themselves, the GPU
    windows' start/stop/conversion time (measured), plus an estimate of the dispatcher hop into
    the kernel and, on the native path, the kernel's calls its own clock does not see (benchmark
    constants per call, blocking or not: they cannot be timed from inside)."""
    calls = sum(int(p.process.get("self_calls") or 0) for p in parts)
    record_ns = sum(int(p.process.get("self_record_ns") or 0) for p in parts)
    once_ns, stalled_calls, stalled_ns, per_call_ns = clocked_split(parts, calls, record_ns)
    # the hop into the kernel (and, native, the calls around its clock): its path's constants
    py_calls = sum(int(p.process.get("self_calls") or 0) for p in parts
                   if p.process.get("capture_path") != "native")
    py_blocking = sum(p.blocking_calls for p in parts if p.process.get("capture_path") != "native")
    gpu_windows = sum(int(p.process.get("self_gpu_windows") or 0) for p in parts)
    gpu_window_ns = sum(int(p.process.get("self_gpu_window_ns") or 0) for p in parts)
    blocking = sum(p.blocking_calls for p in parts)
    n = max(len(parts), 1)
    nat_calls, nat_blocking = calls - py_calls, blocking - py_blocking
    dispatch_ns = (py_blocking * DISPATCH_NS_BLOCKING_CALL
                   + max(py_calls - py_blocking, 0) * DISPATCH_NS_ASYNC_CALL
                   + nat_blocking * DISPATCH_NS_NATIVE_BLOCKING_CALL
                   + max(nat_calls - nat_blocking, 0) * DISPATCH_NS_NATIVE_ASYNC_CALL)
    recording_ns = record_ns if stalled_calls is None else per_call_ns * calls + once_ns
    total_ns = recording_ns + dispatch_ns + gpu_window_ns
    wall = ranks["wall_s"].sum() if "wall_s" in ranks else 0.0
    return {
        "calls": calls,
        "record_us_per_call": per_call_ns / 1e3 if calls else None,
        "once_s_per_rank": once_ns / n / 1e9 if stalled_calls is not None else None,
        "stalled_calls": stalled_calls,
        "stalled_s_per_rank": stalled_ns / n / 1e9 if stalled_calls is not None else None,
        "dispatch_us_per_call_estimate": dispatch_ns / calls / 1e3 if calls else DISPATCH_NS_ASYNC_CALL / 1e3,
        "blocking_calls": blocking,
        "estimated_s_per_rank": total_ns / n / 1e9,
        "estimated_fraction_of_wall": total_ns / 1e9 / wall if wall else None,
        "gpu_windows": gpu_windows,
        "gpu_window_s_per_rank": gpu_window_ns / n / 1e9,
        "capture_path": ",".join(sorted({str(p.process.get("capture_path")) for p in parts
                                         if p.process.get("capture_path")})) or None,
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
        "incomplete_ranks": sorted(int(r) for r in procs.loc[~procs["complete"] & ~procs[
            "exit_reason"].astype(str).str.startswith("capture stopped"), "rank"]),
        "missing_ranks": sorted(set(range(int(world.max()) if len(world) else 0))
                                - {int(r) for r in procs["rank"]}),
        "collectives": sum(p.collectives for p in parts),
        "attempts": list(getattr(src, "attempts", None) or sorted({int(p.process["attempt"]) for p in parts})),
    }
