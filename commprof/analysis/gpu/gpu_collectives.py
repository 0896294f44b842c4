"""Sizes and GPU-timed bandwidth of each communication kernel of a PyTorch-profiler trace.

Where the sizes come from, in order (``size_source``):

1. ``kernel`` — Kineto copies ``record_param_comms``' args (``Collective name``, ``In msg nelems``,
   ``Out msg nelems``, ``dtype``, ``Group size``, ``Process Group Name``) onto the kernel it launched;
2. ``record_param_comms`` — the op whose span, on the launching thread, holds the kernel's launch
   (the innermost), else the one with the kernel's ``External id``;
3. ``""`` — unknown (old traces record ``record_param_comms`` without sizes): sizes and bandwidth
   are NaN (null in the report, "unknown" in text), never 0 or negative.

The op is the collective's name in commprof's vocabulary (:func:`commprof.format.comm_ops.
canonical_op`: ``allreduce`` → ``all_reduce``, ``_allgather_base`` → ``all_gather``, …), else the
op of the communication range that launched the kernel (``nccl:all_to_all``,
``symm_mem::multimem_all_reduce_``), else read from the kernel's name where it is one op
(``op_source``: "args", "launched_by", "kernel_name"; NCCL's kernel names do not always name the
op that ran).  The byte size S, ``algbw = S / kernel time`` and ``busbw = algbw × factor`` use
nccl-tests' definitions through :mod:`commprof.analysis.measures.collectives` (GB/s = bytes per ns).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from commprof.analysis.measures import collectives as coll_mod
from commprof.format import comm_ops, schema

COLUMNS = ["rank", "start_ns", "end_ns", "duration_ns", "step", "stream", "name", "op",
           "op_source", "coll_name", "group_size", "pg_name", "dtype", "in_nelems", "out_nelems",
           "in_bytes", "out_bytes", "size_bytes", "bus_factor", "algbw_gbps", "busbw_gbps",
           "size_source", "seq"]

# c10::ScalarType names as Kineto writes them (and torch's), -> (commprof dtype, bytes)
_DTYPES = {
    "float": ("float32", 4), "float32": ("float32", 4), "double": ("float64", 8),
    "float64": ("float64", 8), "half": ("float16", 2), "float16": ("float16", 2),
    "bfloat16": ("bfloat16", 2), "byte": ("uint8", 1), "uint8": ("uint8", 1),
    "char": ("int8", 1), "int8": ("int8", 1), "short": ("int16", 2), "int16": ("int16", 2),
    "int": ("int32", 4), "int32": ("int32", 4), "long": ("int64", 8), "int64": ("int64", 8),
    "bool": ("bool", 1), "complexfloat": ("complex64", 8), "complex64": ("complex64", 8),
    "complexdouble": ("complex128", 16), "complex128": ("complex128", 16),
    "float8_e4m3fn": ("float8_e4m3fn", 1), "float8_e5m2": ("float8_e5m2", 1),
    "float8_e4m3fnuz": ("unknown", 1), "float8_e5m2fnuz": ("unknown", 1),
    "uint16": ("uint16", 2), "uint32": ("uint32", 4), "uint64": ("uint64", 8),
}
def normalize_op(coll_name: str) -> str:
    """``Collective name`` -> an op of commprof's schema ("unknown" when not one)."""
    return comm_ops.canonical_op(coll_name)


def op_from_kernel_name(name: str) -> str:
    """The op a kernel's name says, where it says one (``SendRecv``/``Generic`` say none)."""
    return comm_ops.canonical_op(name)


def pg_sizes(pg_config) -> dict:
    """``distributedInfo.pg_config`` -> {process group name: size}."""
    out = {}
    for pg in pg_config or []:
        if isinstance(pg, dict) and pg.get("pg_name") is not None:
            try:
                out[str(pg["pg_name"])] = int(pg.get("pg_size") or len(pg.get("ranks") or []))
            except (TypeError, ValueError):
                continue
    return out


# ``seq``: the collective's sequence number on its group (``Seq``), -1 where not recorded
_ARGS = ["coll_name", "in_nelems", "out_nelems", "dtype", "group_size", "pg_name", "seq"]


def _from_comms_params(k: pd.DataFrame, launches: pd.DataFrame, comms: pd.DataFrame) -> pd.DataFrame:
    """The record_param_comms args of each comm kernel ``k`` (rows without a match: defaults)."""
    out = pd.DataFrame({c: ("" if c in ("coll_name", "dtype", "pg_name") else -1)
                        for c in _ARGS}, index=k.index)
    found = pd.Series(False, index=k.index)
    if not len(comms) or not len(k):
        return out.assign(found=found)
    lt = launches.drop_duplicates("correlation")[["correlation", "pid", "tid"]]
    left = k[["correlation", "launch_ns"]].reset_index().merge(lt, on="correlation", how="inner")
    left = left[left["launch_ns"] >= 0].astype({"pid": str, "tid": str})
    right = comms.astype({"pid": str, "tid": str}).sort_values("start_ns", kind="stable")
    if len(left):
        m = pd.merge_asof(left.sort_values("launch_ns"), right[["start_ns", "end_ns", "pid", "tid", *_ARGS]],
                          left_on="launch_ns", right_on="start_ns", by=["pid", "tid"],
                          direction="backward")
        m = m[m["launch_ns"] < m["end_ns"]].set_index("index")
        for c in _ARGS:
            out.loc[m.index, c] = m[c].to_numpy()
        found.loc[m.index] = True
    rest = ~found & (k["external_id"] >= 0)
    if rest.any():
        by_ext = comms.drop_duplicates("external_id").set_index("external_id")[_ARGS]
        ext = k.loc[rest, "external_id"]
        hit = ext[ext.isin(by_ext.index)]
        for c in _ARGS:
            out.loc[hit.index, c] = by_ext.loc[hit.to_numpy(), c].to_numpy()
        found.loc[hit.index] = True
    return out.assign(found=found)


def collectives(g: pd.DataFrame, launches: pd.DataFrame, comms_params: pd.DataFrame,
                pg_sizes: dict | None = None, rank: int = 0) -> pd.DataFrame:
    """One row per communication kernel of an annotated gpu frame (:data:`COLUMNS`); sizes and
    bandwidths NaN, ``group_size`` -1 where the trace does not say them."""
    k = g[g["kind"] == "comm"]
    if not len(k):
        return pd.DataFrame(columns=COLUMNS)
    own = ((k["coll_name"].astype(str) != "") | (k["in_nelems"] >= 0)).to_numpy()
    rpc = _from_comms_params(k[~own], launches, comms_params)
    args = k[_ARGS].copy()
    for c in _ARGS if len(rpc) else []:
        args.loc[rpc.index, c] = rpc[c].to_numpy()
    source = np.where(own, "kernel", "").astype(object)
    if len(rpc):
        source[~own] = np.where(rpc["found"].to_numpy(dtype=bool), "record_param_comms", "")
    op, op_source = _ops(k, args)
    gsize = args["group_size"].to_numpy("int64").copy()
    pg = args["pg_name"].astype(str).to_numpy()
    sizes = pg_sizes or {}
    fill = gsize < 0
    gsize[fill] = [sizes.get(p, -1) for p in pg[fill]]
    dt = [_DTYPES.get(str(d).lower(), ("unknown", -1)) for d in args["dtype"]]
    item = np.array([b for _, b in dt], dtype="int64")
    in_n, out_n = args["in_nelems"].to_numpy("int64"), args["out_nelems"].to_numpy("int64")
    known = (item > 0) & (in_n >= 0) & (out_n >= 0)
    in_b = np.where(known, in_n * item, np.nan)
    out_b = np.where(known, out_n * item, np.nan)
    start, end = k["start_ns"].to_numpy("int64"), k["end_ns"].to_numpy("int64")
    df = pd.DataFrame({
        "rank": rank, "start_ns": start, "end_ns": end, "duration_ns": end - start,
        "step": k["step"].to_numpy("int64"), "stream": k["stream"].to_numpy("int64"),
        "name": k["name"].astype(str).to_numpy(), "op": op, "op_source": op_source,
        "coll_name": args["coll_name"].astype(str).to_numpy(), "group_size": gsize, "pg_name": pg,
        "dtype": [d for d, _ in dt], "in_nelems": in_n, "out_nelems": out_n,
        "in_bytes": in_b, "out_bytes": out_b, "size_source": np.where(known, source, ""),
        "seq": args["seq"].to_numpy("int64")})
    ok = known & (gsize > 0) & (op != "unknown")
    sized = coll_mod.add_sizes(df.assign(in_bytes=np.where(known, in_b, 0).astype("int64"),
                                         out_bytes=np.where(known, out_b, 0).astype("int64"),
                                         t_issue=start, t_end=end, group_size=np.maximum(gsize, 1),
                                         op=[o if o in schema.OP_INDEX else "unknown" for o in op]))
    df["size_bytes"] = np.where(ok, sized["size_bytes"].to_numpy("float64"), np.nan)
    df["bus_factor"] = np.where(ok, [coll_mod.bus_factor(o, int(n)) for o, n in zip(op, gsize)], np.nan)
    dur = df["duration_ns"].to_numpy("float64")
    df["algbw_gbps"] = np.where(ok & (dur > 0), df["size_bytes"] / np.where(dur > 0, dur, 1), np.nan)
    df["busbw_gbps"] = df["algbw_gbps"] * df["bus_factor"]
    return df[COLUMNS]


def _ops(k: pd.DataFrame, args: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(op, op_source) per kernel: its collective args, else the communication range that
    launched it, else its name ("unknown", "" when none says one)."""
    n = len(k)
    op = np.array([comm_ops.canonical_op(c) if c else "unknown" for c in args["coll_name"].astype(str)],
                  dtype=object)
    op_source = np.where(op != "unknown", "args", "").astype(object)
    if "comm_rule" in k:
        launched = (k["comm_rule"] == "launched_by_comm_op").to_numpy()
        via = k["comm_via"].astype(str).to_numpy()
        by_range = np.array([comm_ops.canonical_op(v) if launched[i] else "unknown"
                             for i, v in enumerate(via)], dtype=object) if n else op
        take = (op == "unknown") & (by_range != "unknown")
        op[take], op_source[take] = by_range[take], "launched_by"
    by_name = np.array([comm_ops.canonical_op(x) for x in k["name"].astype(str)], dtype=object)
    take = (op == "unknown") & (by_name != "unknown")
    op[take], op_source[take] = by_name[take], "kernel_name"
    return op, op_source


def comm_intervals(colls: pd.DataFrame) -> pd.DataFrame:
    """A profiler trace's communication kernels (:func:`collectives`) as a GPU timing source
    (:data:`commprof.format.comm_ops.COMM_INTERVAL_COLUMNS`)."""
    return comm_ops.intervals_frame(colls["rank"], colls["op"], colls["pg_name"], colls["start_ns"],
                                    colls["end_ns"], colls["duration_ns"], colls["name"], "trace")


def op_table(colls: pd.DataFrame) -> pd.DataFrame:
    """Per (op, group size), a row for every communication kernel (:data:`commprof.analysis.
    collectives.OP_TABLE_COLUMNS`): counts, GPU time, p50/p99 over all of them; ``bytes``,
    ``in_bytes``, ``out_bytes`` NaN unless every kernel of the row has a known size; algbw = Σ S / Σ t
    and busbw over the sized ones (NaN when none is); ``group_size`` None where unknown."""
    if not len(colls):
        return coll_mod.op_table(pd.DataFrame())
    sized = (colls["size_bytes"] >= 0).to_numpy()
    gsize = np.where(colls["group_size"].to_numpy("int64") > 0, colls["group_size"].to_numpy("int64"), 0)
    frame = pd.DataFrame({"rank": colls["rank"].to_numpy(), "op": colls["op"].to_numpy(),
                          "group_size": gsize,
                          "in_bytes": np.where(sized, colls["in_bytes"].fillna(0), 0).astype("int64"),
                          "out_bytes": np.where(sized, colls["out_bytes"].fillna(0), 0).astype("int64"),
                          "t_issue": colls["start_ns"].to_numpy("int64"),
                          "t_end": colls["end_ns"].to_numpy("int64"),
                          "dtype": colls["dtype"].to_numpy()})
    table = coll_mod.op_table(frame)
    by_size = coll_mod.op_table(frame[sized]).set_index(["op", "group_size"]) if sized.any() else None
    key = pd.MultiIndex.from_frame(table[["op", "group_size"]])
    unsized = frame[~sized].groupby(["op", "group_size"]).size()
    whole = ~key.isin(unsized.index) if len(unsized) else np.ones(len(table), dtype=bool)
    for col in ("bytes", "in_bytes", "out_bytes", "algbw_gbps", "busbw_gbps", "bus_factor"):
        known = by_size[col].reindex(key).to_numpy("float64") if by_size is not None \
            else np.full(len(table), np.nan)
        table[col] = np.where(whole, known, np.nan) if col in ("bytes", "in_bytes", "out_bytes") else known
    table["group_size"] = pd.Series([int(n) if n > 0 else None for n in table["group_size"]], dtype=object)
    for col in ("bytes", "in_bytes", "out_bytes"):  # whole bytes, or None (unknown): never a float
        table[col] = pd.Series([int(round(v)) if v == v else None for v in table[col]], dtype=object)
    return table
