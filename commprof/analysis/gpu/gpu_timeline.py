"""The three KPIs on the GPU's own timeline, from a PyTorch-profiler trace (docs/kpis.md, "GPU timeline").

Pure functions of the frames of :mod:`commprof.format.kineto`; times are int64 ns throughout.

* **Kinds.**  A kernel is *communication* when a communication op launched it (``c10d::``,
  ``_c10d_functional::``, ``symm_mem::``, ``record_param_comms``, NVSHMEM, DeepEP ranges on the CPU,
  through its launch's correlation id), when Kineto tagged it with a collective's args, or when
  its name is a communication library's — :mod:`commprof.analysis.gpu.comm_kernels` (``comm_rule``
  says which).  Every other kernel is *computation*; memcpy and memset are *memory*.
  ``user_annotation``/``gpu_user_annotation`` ranges (``nccl:all_reduce``) are never activity.
* **Steps.**  A GPU op belongs to the ``ProfilerStep#N`` that holds the runtime call that launched
  it: kernel ``correlation`` ↔ runtime ``correlation``, else the ``ac2g`` flow that ends on it.
* **KPIs** (per step over the ops launched in it; totals over every op of the trace):
  ``comm_s`` = |∪ comm|, ``compute_s`` = |∪ compute|, ``overlap_s`` = |∪ comm ∩ ∪ compute|
  (= comm + compute − |comm ∪ compute|), ``exposed_comm_s`` = comm − overlap,
  ``memcpy_s`` = |∪ memory|, ``span_s`` = last end − first start, ``idle_s`` = span − |∪ all|.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from commprof.analysis.gpu import comm_kernels, gpu_collectives
from commprof.analysis.measures import intervals
from commprof.format import comm_ops

GPU_KEYS = ("comm_s", "overlap_s", "exposed_comm_s", "compute_s", "memcpy_s", "idle_s",
            "comm_kernels", "kernels", "span_s")
STEP_COLUMNS = ["step", "cpu_start_ns", "cpu_end_ns", "cpu_s", "gpu_start_ns", "gpu_end_ns",
                *GPU_KEYS, "memory_ops", "comm_fraction", "exposed_comm_fraction",
                "compute_fraction", "memcpy_fraction", "idle_fraction", "overlap_ratio"]
NO_STEP = -1


def is_comm_kernel_name(name: str) -> bool:
    """Whether a kernel's name is a communication library's (:data:`commprof.format.comm_ops.
    KERNEL_FAMILIES`)."""
    return comm_ops.kernel_family(name) is not None


def kinds(gpu: pd.DataFrame, launches: pd.DataFrame | None = None,
          comm_ranges: pd.DataFrame | None = None, rules: np.ndarray | None = None) -> np.ndarray:
    """"comm", "compute", "memory" (memcpy, memset) or "other" (any other category: not counted)
    for each row of a ``gpu`` frame (``name``, ``category``; ``coll_name``/``in_nelems``,
    ``correlation``/``external_id`` if any), by :func:`commprof.analysis.gpu.comm_kernels.classify`
    (``rules``: its result, when already computed)."""
    if rules is None:
        rules, _ = comm_kernels.classify(gpu, launches, comm_ranges)
    comm = rules != ""
    category = gpu["category"].astype(str)
    kernel = (category == "kernel").to_numpy()
    memory = category.isin(["memcpy", "memset"]).to_numpy()
    return np.where(kernel, np.where(comm, "comm", "compute"), np.where(memory, "memory", "other"))


def launch_times(gpu: pd.DataFrame, launches: pd.DataFrame, flows: pd.DataFrame | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(launch time ns or -1, "correlation" / "ac2g" / "") for each GPU op.

    First the runtime call with the op's ``correlation``; for ops without one, the ``ac2g`` flow
    whose ``f`` end lies on the op (same pid, tid, ts): its ``s`` end's runtime call, or the time of
    the ``s`` end itself.
    """
    n = len(gpu)
    out = np.full(n, -1, dtype="int64")
    via = np.full(n, "", dtype=object)
    lt = launches.drop_duplicates("correlation", keep="first")
    lt = lt[lt["correlation"] >= 0]
    by_corr = pd.Series(lt["start_ns"].to_numpy("int64"), index=lt["correlation"].to_numpy("int64"))
    corr = gpu["correlation"].to_numpy("int64")
    pos = by_corr.index.get_indexer(corr)
    hit = (pos >= 0) & (corr >= 0)
    out[hit] = by_corr.to_numpy()[pos[hit]]
    via[hit] = "correlation"
    if flows is None or not len(flows) or hit.all():
        return out, via
    ends = flows[flows["phase"] == "f"].drop_duplicates(["pid", "tid", "ts_ns"])
    starts = flows[flows["phase"] == "s"].drop_duplicates("id")
    miss = pd.DataFrame({"row": np.flatnonzero(~hit)})
    miss["pid"] = gpu["pid"].astype(str).to_numpy()[miss["row"]]
    miss["tid"] = gpu["tid"].astype(str).to_numpy()[miss["row"]]
    miss["ts_ns"] = gpu["start_ns"].to_numpy("int64")[miss["row"]]
    m = miss.merge(ends.assign(pid=ends["pid"].astype(str), tid=ends["tid"].astype(str))[
        ["pid", "tid", "ts_ns", "id"]], on=["pid", "tid", "ts_ns"], how="inner")
    if not len(m):
        return out, via
    fid = m["id"].to_numpy("int64")
    s_ts = pd.Series(starts["ts_ns"].to_numpy("int64"), index=starts["id"].to_numpy("int64"))
    at_call, at_s = by_corr.index.get_indexer(fid), s_ts.index.get_indexer(fid)
    t = np.where(at_call >= 0, by_corr.to_numpy()[np.maximum(at_call, 0)],  # the runtime call named
                 np.where(at_s >= 0, s_ts.to_numpy()[np.maximum(at_s, 0)] if len(s_ts) else -1, -1))
    ok = ((at_call >= 0) | (at_s >= 0)) & (fid >= 0)
    rows = m["row"].to_numpy()[ok]
    out[rows] = t[ok]
    via[rows] = "ac2g"
    return out, via


def assign_steps(t_ns, steps: pd.DataFrame) -> np.ndarray:
    """The ``ProfilerStep`` number whose CPU span [start, end) holds each time (-1: none)."""
    t = np.asarray(t_ns, dtype="int64")
    if not len(steps):
        return np.full(len(t), NO_STEP, dtype="int64")
    st = steps.sort_values("start_ns", kind="stable")
    s, e = st["start_ns"].to_numpy("int64"), st["end_ns"].to_numpy("int64")
    i = np.searchsorted(s, t, side="right") - 1
    ok = (i >= 0) & (t >= 0)
    ok[ok] &= t[ok] < e[i[ok]]
    return np.where(ok, st["step"].to_numpy("int64")[np.maximum(i, 0)], NO_STEP)


def annotate(gpu: pd.DataFrame, launches: pd.DataFrame, steps: pd.DataFrame,
             flows: pd.DataFrame | None = None, comm_ranges: pd.DataFrame | None = None) -> pd.DataFrame:
    """``gpu`` plus ``comm_rule``/``comm_via`` (:mod:`commprof.analysis.gpu.comm_kernels`), ``kind``,
    ``launch_ns``, ``link`` ("correlation"/"ac2g"/"") and ``step``."""
    g = gpu.copy()
    g["comm_rule"], g["comm_via"] = comm_kernels.classify(g, launches, comm_ranges)
    g["kind"] = kinds(g, rules=g["comm_rule"].to_numpy())
    g["launch_ns"], g["link"] = launch_times(g, launches, flows)
    g["step"] = assign_steps(g["launch_ns"], steps)
    return g


def _by_group(g: pd.DataFrame, group: np.ndarray, n: int) -> dict:
    """KPI arrays (ns and counts) of each group 0 … n-1 of the annotated frame ``g``."""
    s, e = g["start_ns"].to_numpy("int64"), g["end_ns"].to_numpy("int64")
    kind = g["kind"].to_numpy()
    comm, comp, mem = kind == "comm", kind == "compute", kind == "memory"
    group = np.where(comm | comp | mem, group, -1)  # "other" rows count for nothing

    def u(mask):
        return intervals.union_length_by_group(group[mask], s[mask], e[mask], n)

    c, k, both, every = u(comm), u(comp), u(comm | comp), u(comm | comp | mem)
    valid = group >= 0
    first = np.full(n, np.iinfo("int64").max, dtype="int64")
    last = np.full(n, np.iinfo("int64").min, dtype="int64")
    np.minimum.at(first, group[valid], s[valid])
    np.maximum.at(last, group[valid], np.maximum(e[valid], s[valid]))
    has = last >= first
    span = np.where(has, last - first, 0)
    count = lambda mask: np.bincount(group[valid & mask], minlength=n)  # noqa: E731
    overlap = c + k - both
    return {"gpu_start_ns": np.where(has, first, -1), "gpu_end_ns": np.where(has, last, -1),
            "comm": c, "overlap": overlap, "exposed": c - overlap, "compute": k, "memcpy": u(mem),
            "idle": span - every, "span": span, "comm_kernels": count(comm),
            "kernels": count(comm | comp), "memory_ops": count(mem)}


def _seconds(d: dict) -> dict:
    return {"comm_s": d["comm"] / 1e9, "overlap_s": d["overlap"] / 1e9,
            "exposed_comm_s": d["exposed"] / 1e9, "compute_s": d["compute"] / 1e9,
            "memcpy_s": d["memcpy"] / 1e9, "idle_s": d["idle"] / 1e9,
            "comm_kernels": d["comm_kernels"], "kernels": d["kernels"], "span_s": d["span"] / 1e9}


def totals(g: pd.DataFrame) -> dict:
    """``ranks[].gpu``: the KPIs over every GPU op of the trace (:data:`GPU_KEYS`)."""
    d = _by_group(g, np.zeros(len(g), dtype="int64"), 1)
    return {k: (int(v[0]) if k in ("comm_kernels", "kernels") else float(v[0]))
            for k, v in _seconds(d).items()}


def _ratio(x, d):
    x, d = np.asarray(x, dtype="float64"), np.asarray(d, dtype="float64")
    r = np.divide(x, d, out=np.zeros(np.broadcast(x, d).shape), where=d > 0)
    return float(r) if r.ndim == 0 else r


def fractions(kpi) -> dict:
    """Shares of GPU step time (``span_s``) and the overlap ratio (overlap / comm, HTA's figure).

    ``kpi`` is a dict of numbers (:func:`totals`) or a frame of them (:func:`per_step`)."""
    span = kpi["span_s"]
    return {"comm_fraction": _ratio(kpi["comm_s"], span),
            "exposed_comm_fraction": _ratio(kpi["exposed_comm_s"], span),
            "compute_fraction": _ratio(kpi["compute_s"], span),
            "memcpy_fraction": _ratio(kpi["memcpy_s"], span),
            "idle_fraction": _ratio(kpi["idle_s"], span),
            "overlap_ratio": _ratio(kpi["overlap_s"], kpi["comm_s"])}


def per_step(g: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """One row per ``ProfilerStep`` (:data:`STEP_COLUMNS`): the KPIs of the ops launched in it.

    ``span_s`` (the step's GPU time) runs from the first start to the last end of those ops; a
    step's ops can run past the next step's first kernel, so steps' spans may overlap.
    """
    if not len(steps):
        return pd.DataFrame(columns=STEP_COLUMNS)
    st = steps.sort_values("start_ns", kind="stable").reset_index(drop=True)
    index = pd.Series(np.arange(len(st)), index=st["step"].to_numpy("int64"))
    group = index.reindex(g["step"].to_numpy("int64")).fillna(-1).to_numpy("int64")
    d = _by_group(g, group, len(st))
    out = pd.DataFrame({"step": st["step"].to_numpy("int64"),
                        "cpu_start_ns": st["start_ns"].to_numpy("int64"),
                        "cpu_end_ns": st["end_ns"].to_numpy("int64"),
                        "gpu_start_ns": d["gpu_start_ns"], "gpu_end_ns": d["gpu_end_ns"],
                        **_seconds(d), "memory_ops": d["memory_ops"]})
    out["cpu_s"] = (out["cpu_end_ns"] - out["cpu_start_ns"]) / 1e9
    for k, v in fractions(out).items():
        out[k] = v
    return out[STEP_COLUMNS]


def headline(total: dict, steps: pd.DataFrame) -> dict:
    """``kpis.gpu_*``: time-weighted over the steps (Σ over steps ÷ Σ step GPU time), else over the
    whole trace; ``basis`` says which."""
    by_steps = len(steps) and steps["span_s"].sum() > 0
    src = {k: float(steps[k].sum()) for k in ("comm_s", "overlap_s", "exposed_comm_s", "compute_s",
                                             "memcpy_s", "idle_s", "span_s")} if by_steps else total
    return {"basis": "steps" if by_steps else "trace",
            **{f"gpu_{k}": float(v) for k, v in fractions(src).items()}}


@dataclass
class GpuTimeline:
    """One rank's GPU timeline: what the report puts under ``ranks[].gpu`` and beside it."""

    rank: int
    gpu: pd.DataFrame                # the trace's gpu frame + kind, launch_ns, link, step
    totals: dict                     # GPU_KEYS
    steps: pd.DataFrame              # STEP_COLUMNS
    headline: dict                   # kpis.gpu_*
    collectives: pd.DataFrame        # gpu_collectives.COLUMNS, one row per comm kernel
    op_table: pd.DataFrame           # collectives.OP_TABLE_COLUMNS, GPU times
    links: dict                      # how GPU ops were tied to their launches and steps
    notes: list[str] = field(default_factory=list)
    comm: pd.DataFrame | None = None  # comm_kernels.SUMMARY_COLUMNS: which rule counted what


def analyze(trace) -> GpuTimeline:
    """Everything above for one :class:`~commprof.format.kineto.KinetoTrace`."""
    g = annotate(trace.gpu, trace.launches, trace.steps, trace.flows, trace.comm_ranges)
    steps = per_step(g, trace.steps)
    total = totals(g)
    link = g["link"].to_numpy()
    links = {"ops": len(g), "by_correlation": int((link == "correlation").sum()),
             "by_ac2g": int((link == "ac2g").sum()), "unlinked": int((link == "").sum()),
             "outside_steps": int((g["step"] == NO_STEP).sum()) if len(trace.steps) else len(g)}
    notes = list(trace.notes)
    if links["unlinked"]:
        notes.append(f"{links['unlinked']} of {len(g)} GPU ops have no launch in the trace "
                     "(no runtime call with their correlation id, no ac2g flow): in no step")
    if not len(trace.steps):
        notes.append("no ProfilerStep#N annotations: whole-trace figures only")
    if not total["comm_kernels"]:
        notes.append("no communication kernels on this GPU")
    colls = gpu_collectives.collectives(g, trace.launches, trace.comms_params,
                                        pg_sizes=gpu_collectives.pg_sizes(trace.pg_config),
                                        rank=trace.rank)
    return GpuTimeline(rank=trace.rank, gpu=g, totals=total, steps=steps,
                       headline=headline(total, steps), collectives=colls,
                       op_table=gpu_collectives.op_table(colls), links=links, notes=notes,
                       comm=comm_kernels.summary(g, trace.rank))
