"""Which GPU kernels are communication, and by which rule (docs/kpis.md, "GPU timeline").

A kernel is communication by the first of these rules that holds (``rule``; ``via`` says what):

1. ``launched_by_comm_op`` — its launch (the runtime call with the kernel's ``correlation``) lies,
   on the same process and thread, inside a CPU range whose launches are communication
   (:func:`commprof.format.comm_ops.comm_range_family`: ``c10d::``, ``_c10d_functional::``,
   ``symm_mem::``, ``record_param_comms``, NVSHMEM, DeepEP, ``nccl:``), else its ``External id``
   is such a range's (a launch outside the trace window); ``via`` is the innermost such range;
2. ``collective_args`` — Kineto copied a collective's args onto it (``Collective name``,
   ``In msg nelems``); ``via`` is the collective's name;
3. ``kernel_name`` — its name is a communication library's (:data:`commprof.format.comm_ops.
   KERNEL_FAMILIES`: NCCL, RCCL, MSCCL, NVSHMEM, ``multimem_*``, one-/two-shot all-reduce, vLLM's
   custom all-reduce, DeepEP); ``via`` is the family.

So a kernel of any name launched by a collective counts, and a library's kernel counts without a
CPU side (``commprof run``'s GPU windows record kernels and launches only: rules 2–3 there).
memcpy/memset stay *memory* even inside a collective.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from commprof.format import comm_ops

RULES = ("launched_by_comm_op", "collective_args", "kernel_name")
SUMMARY_COLUMNS = ["name", "rule", "via", "op", "kernels", "time_s", "ranks"]


def classify(gpu: pd.DataFrame, launches: pd.DataFrame | None = None,
             comm_ranges: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rule, via) of each row of a ``gpu`` frame: ``""`` for rows that are not communication
    kernels (memcpy, memset and other categories are never communication here)."""
    n = len(gpu)
    rule = np.full(n, "", dtype=object)
    via = np.full(n, "", dtype=object)
    if not n:
        return rule, via
    kernel = (gpu["category"].astype(str) == "kernel").to_numpy()
    names = gpu["name"].astype(str)
    uniq = pd.unique(names)
    fam = names.map(pd.Series([comm_ops.kernel_family(u) or "" for u in uniq], index=uniq, dtype=object))
    fam = fam.to_numpy(dtype=object)
    hit = kernel & (fam != "")
    rule[hit], via[hit] = "kernel_name", fam[hit]
    coll = gpu["coll_name"].fillna("").astype(str).to_numpy() if "coll_name" in gpu else np.full(n, "")
    args = (coll != "") | ((gpu["in_nelems"].to_numpy() >= 0) if "in_nelems" in gpu else False)
    hit = kernel & args
    rule[hit], via[hit] = "collective_args", np.where(coll[hit] != "", coll[hit], "In msg nelems")
    if comm_ranges is not None and len(comm_ranges):
        launched = _launched_in(gpu, launches, comm_ranges)
        hit = kernel & (launched != "")
        rule[hit], via[hit] = "launched_by_comm_op", launched[hit]
    return rule, via


def _launched_in(gpu: pd.DataFrame, launches: pd.DataFrame | None, ranges: pd.DataFrame) -> np.ndarray:
    """The innermost communication range holding each GPU op's launch ("" none), by its launch's
    thread and time, else by its ``External id``."""
    n = len(gpu)
    out = np.full(n, "", dtype=object)
    r = ranges.assign(pid=ranges["pid"].astype(str), tid=ranges["tid"].astype(str))
    if launches is not None and len(launches):
        lt = launches[launches["correlation"] >= 0].drop_duplicates("correlation")
        k = pd.DataFrame({"row": np.arange(n), "correlation": gpu["correlation"].to_numpy("int64")})
        k = k.merge(lt[["correlation", "start_ns", "pid", "tid"]].astype({"pid": str, "tid": str}),
                    on="correlation", how="inner").rename(columns={"start_ns": "t"})
        if len(k):
            out[k["row"].to_numpy()] = _enclosing(k, r)
    todo = (out == "") & (gpu["external_id"].to_numpy("int64") >= 0) if "external_id" in gpu else None
    if todo is not None and todo.any():
        by_ext = r[r["external_id"] >= 0].drop_duplicates("external_id").set_index("external_id")["name"]
        ext = gpu["external_id"].to_numpy("int64")[todo]
        pos = by_ext.index.get_indexer(ext)
        rows = np.flatnonzero(todo)
        out[rows[pos >= 0]] = by_ext.to_numpy()[pos[pos >= 0]]
    return out


def _enclosing(k: pd.DataFrame, r: pd.DataFrame) -> np.ndarray:
    """For launches ``k`` (t, pid, tid): the innermost range of ``r`` on their thread with
    start ≤ t < end ("" none).  Ranges nest: the latest-starting one at or before t holds t, or,
    when it ended before t, the one that started the union interval holding t does."""
    out = np.full(len(k), "", dtype=object)
    kk = k.reset_index(drop=True).assign(i=np.arange(len(k)))
    for (pid, tid), mine in kk.groupby(["pid", "tid"], sort=False):
        rr = r[(r["pid"] == pid) & (r["tid"] == tid)].sort_values("start_ns", kind="stable")
        if not len(rr):
            continue
        s, e = rr["start_ns"].to_numpy("int64"), rr["end_ns"].to_numpy("int64")
        t = mine["t"].to_numpy("int64")
        j = np.searchsorted(s, t, side="right") - 1
        ok = j >= 0
        inner = ok & (e[np.maximum(j, 0)] > t)
        names = rr["name"].to_numpy(dtype=object)
        res = np.where(inner, names[np.maximum(j, 0)], "").astype(object)
        # union intervals: running maximum of ends; a range holds t if the running max at j > t
        reach = np.maximum.accumulate(e)
        outer = ok & ~inner & (reach[np.maximum(j, 0)] > t)
        if outer.any():
            # the last range whose end is the running maximum reached at j
            first = np.searchsorted(reach, reach[np.maximum(j, 0)][outer], side="left")
            res[outer] = names[first]
        out[mine["i"].to_numpy()] = res
    return out


def summary(g: pd.DataFrame, rank: int) -> pd.DataFrame:
    """Per (kernel name, rule, via) of an annotated frame's communication kernels: the op the
    name or range says, count and summed duration (:data:`SUMMARY_COLUMNS`, ``ranks`` = 1)."""
    c = g[g["comm_rule"] != ""] if "comm_rule" in g and len(g) else g.iloc[0:0]
    if not len(c):
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    d = c.assign(dur=(c["end_ns"] - c["start_ns"]).astype("int64"), name=c["name"].astype(str),
                 rule=c["comm_rule"].astype(str), via=c["comm_via"].astype(str))
    out = d.groupby(["name", "rule", "via"], sort=False).agg(kernels=("dur", "size"), dur=("dur", "sum"))
    out = out.reset_index()
    out["op"] = [_op(n, r, v) for n, r, v in zip(out["name"], out["rule"], out["via"])]
    out["time_s"] = out["dur"] / 1e9
    out["ranks"] = 1
    return out[SUMMARY_COLUMNS]


def _op(name: str, rule: str, via: str) -> str:
    by_range = comm_ops.canonical_op(via) if rule != "kernel_name" else "unknown"
    return by_range if by_range != "unknown" else comm_ops.canonical_op(name)


def combine(parts: list[pd.DataFrame]) -> dict | None:
    """The report's ``gpu_comm`` section from per-rank :func:`summary` frames: per rule
    (kernels, time) and per kernel name (rule, via, op, kernels, time, ranks), all ranks summed."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    df = pd.concat(parts, ignore_index=True)
    kern = (df.groupby(["name", "rule", "via", "op"], sort=False)
            .agg(kernels=("kernels", "sum"), time_s=("time_s", "sum"), ranks=("ranks", "sum"))
            .reset_index().sort_values("time_s", ascending=False, kind="stable"))
    rules = df.groupby("rule").agg(kernels=("kernels", "sum"), time_s=("time_s", "sum"))
    return {"rules": [{"rule": r, "kernels": int(rules.loc[r, "kernels"]),
                       "time_s": float(rules.loc[r, "time_s"])} for r in RULES if r in rules.index],
            "kernels": [{"name": str(x.name), "rule": str(x.rule), "via": str(x.via) or None,
                         "op": str(x.op), "kernels": int(x.kernels), "time_s": float(x.time_s),
                         "ranks": int(x.ranks)} for x in kern.itertuples(index=False)]}


_RULE_WORDS = {"launched_by_comm_op": "launched by a communication op",
               "collective_args": "by their collective args", "kernel_name": "by their name"}


def note_text(gpu_comm: dict | None) -> str | None:
    """One line for every format: kernels and time per rule, and the kernels counted only because
    a communication op launched them (no communication library's name)."""
    if not gpu_comm or not gpu_comm["rules"]:
        return None
    parts = [f"{r['kernels']} {_RULE_WORDS.get(r['rule'], r['rule'])} ({r['time_s'] * 1e3:.3g} ms)"
             for r in gpu_comm["rules"]]
    odd = sorted({comm_ops.function_name(k["name"]) for k in gpu_comm["kernels"]
                  if k["rule"] == "launched_by_comm_op" and comm_ops.kernel_family(k["name"]) is None})
    more = (f"; not named like a communication library's: {', '.join(odd[:4])}"
            + (f" and {len(odd) - 4} more" if len(odd) > 4 else "")) if odd else ""
    return f"communication kernels: {', '.join(parts)}{more} (gpu_comm in the JSON)"
