"""Per-operation sizes and bandwidths, with nccl-tests' definitions (doc/PERFORMANCE.md).

* ``size_bytes`` — nccl-tests' S of one call: the tensor for all_reduce, broadcast, reduce and
  send/recv; the gathered (output) total for all_gather and gather; the full input for
  reduce_scatter, all_to_all and scatter (gather/scatter: one rank's chunk × group size).
* ``algbw = S / t`` and ``busbw = algbw × factor(op, n)`` with factor 2(n-1)/n for all_reduce,
  (n-1)/n for all_gather, reduce_scatter, all_to_all, gather and scatter, 1 for broadcast,
  reduce and send/recv.  GB/s = 1e9 bytes/s.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from commprof.analysis.measures import latency
from commprof.format import schema

_ALLREDUCE = {"all_reduce", "all_reduce_coalesced"}
_N_MINUS_1_OVER_N = {"all_gather", "all_gather_coalesced", "reduce_scatter",
                     "reduce_scatter_coalesced", "all_to_all", "gather", "scatter"}
_ONE = {"broadcast", "reduce", "send", "recv"}


def bus_factor(op: str, n: int) -> float:
    """nccl-tests' bus-bandwidth factor of ``op`` on a group of ``n`` ranks (0 for barriers)."""
    if n <= 1:
        return 0.0 if op not in _ONE else 1.0
    if op in _ALLREDUCE:
        return 2.0 * (n - 1) / n
    if op in _N_MINUS_1_OVER_N:
        return (n - 1) / n
    if op in _ONE:
        return 1.0
    return 0.0


_SIZE_FROM_INPUT = ["all_reduce", "all_reduce_coalesced", "reduce_scatter",
                    "reduce_scatter_coalesced", "all_to_all", "broadcast", "reduce", "send"]
_SIZE_FROM_OUTPUT = ["all_gather", "all_gather_coalesced", "recv"]
OP_TABLE_COLUMNS = ["op", "group_size", "count", "bytes", "in_bytes", "out_bytes", "time_s",
                    "p50_s", "p99_s", "max_s", "algbw_gbps", "busbw_gbps", "bus_factor", "ranks",
                    "dtype"]


def op_codes(op: pd.Series) -> np.ndarray:
    """Schema op codes (indexes into ``format.schema.OPS``) of an op column, categorical from the
    loader or plain strings; a name outside the schema is code 0."""
    if isinstance(op.dtype, pd.CategoricalDtype) and list(op.cat.categories) == list(schema.OPS):
        return op.cat.codes.to_numpy().astype("int64")
    return op.map(schema.OP_INDEX).fillna(0).to_numpy().astype("int64")


_IN_CODES = [schema.OP_INDEX[o] for o in _SIZE_FROM_INPUT]
_OUT_CODES = [schema.OP_INDEX[o] for o in _SIZE_FROM_OUTPUT]


def add_sizes(coll: pd.DataFrame) -> pd.DataFrame:
    """Add ``size_bytes`` (S), ``bus_bytes`` (S × bus factor) and ``duration_ns`` columns."""
    df = coll.copy()
    code = op_codes(df["op"])
    n = df["group_size"].to_numpy(dtype="int64")
    inb = df["in_bytes"].to_numpy(dtype="int64")
    outb = df["out_bytes"].to_numpy(dtype="int64")
    size = np.zeros(len(df), dtype="int64")
    take_in = np.isin(code, _IN_CODES)
    take_out = np.isin(code, _OUT_CODES)
    size[take_in] = inb[take_in]
    size[take_out] = outb[take_out]
    g = code == schema.OP_INDEX["gather"]
    size[g] = inb[g] * n[g]
    sc = code == schema.OP_INDEX["scatter"]
    size[sc] = outb[sc] * n[sc]
    df["size_bytes"] = size
    factors = np.zeros(len(df))
    if len(df):
        pair = code * 1_000_003 + n  # one key per (op, group size)
        uniq, inverse = np.unique(pair, return_inverse=True)
        table = np.array([bus_factor(schema.OPS[int(u // 1_000_003)], int(u % 1_000_003))
                          for u in uniq])
        factors = table[inverse]
    df["bus_bytes"] = size * factors
    df["duration_ns"] = df["t_end"] - df["t_issue"]
    return df


def rank_op_partial(coll: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """One rank's sums per (op, group size), and the :class:`~commprof.analysis.measures.latency.Latency`
    (a sketch of the call durations, ns) per (op, group size).

    ``coll`` has :func:`add_sizes`' columns.  Feed the results of every rank to
    :func:`combine_op_tables`.
    """
    if not len(coll):
        return pd.DataFrame(), {}
    code = op_codes(coll["op"])
    size = coll["group_size"].to_numpy("int64")
    keys, inverse = np.unique(code * 1_000_003 + size, return_inverse=True)
    m = len(keys)

    def total(col: str) -> np.ndarray:
        return np.bincount(inverse, weights=coll[col].to_numpy("float64"), minlength=m)

    dtype = coll["dtype"]
    dcode = (dtype.cat.codes.to_numpy() if isinstance(dtype.dtype, pd.CategoricalDtype)
             else dtype.map(schema.DTYPE_INDEX).fillna(0).to_numpy()).astype("int64")
    pairs = np.unique(inverse * 1000 + dcode)
    dtypes = [set() for _ in range(m)]
    for pair in pairs:
        dtypes[pair // 1000].add(schema.DTYPES[pair % 1000])
    ops = [schema.OPS[int(k // 1_000_003)] for k in keys]
    sizes = [int(k % 1_000_003) for k in keys]
    part = pd.DataFrame({"count": np.bincount(inverse, minlength=m), "bytes": total("size_bytes"),
                         "in_bytes": total("in_bytes"), "out_bytes": total("out_bytes"),
                         "time_ns": total("duration_ns"),
                         "dtype": [",".join(sorted(d)) for d in dtypes]},
                        index=pd.MultiIndex.from_arrays([ops, sizes], names=["op", "group_size"]))
    by_key = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[by_key], np.arange(m + 1))
    dur = coll["duration_ns"].to_numpy("float64")[by_key]
    lat = {(ops[i], sizes[i]): latency.latency_of(dur[bounds[i]:bounds[i + 1]]) for i in range(m)}
    return part, lat


def combine_op_tables(partials: list[pd.DataFrame], latencies: list[dict]) -> pd.DataFrame:
    """The op table of a run from every rank's :func:`rank_op_partial`.

    ``count``/``bytes``/``in_bytes``/``out_bytes``/``time_s`` are per rank (the mean over the ranks
    that issued the op); latencies are over every call of every rank (the ranks' sketches merged:
    ``p50_s``/``p99_s`` within ``latency.RELATIVE_ACCURACY`` of exact, ``max_s`` exact);
    ``algbw_gbps`` is Σ S / Σ t over all calls, ``busbw_gbps`` = algbw × bus factor.
    """
    partials = [p for p in partials if len(p)]
    if not partials:
        return pd.DataFrame(columns=OP_TABLE_COLUMNS)
    per_rank = pd.concat(partials)
    levels = ["op", "group_size"]
    out = per_rank.groupby(level=levels, sort=False).agg(
        count=("count", "mean"), bytes_mean=("bytes", "mean"), in_bytes=("in_bytes", "mean"),
        out_bytes=("out_bytes", "mean"), time_mean=("time_ns", "mean"), ranks=("count", "size"),
        S=("bytes", "sum"), T=("time_ns", "sum"),
        dtype=("dtype", lambda x: ",".join(sorted(set(",".join(x).split(","))))))
    stats = []
    for key in out.index:
        lat = latency.merge([dd[key] for dd in latencies if key in dd])
        stats.append((latency.quantile(lat, 0.5), latency.quantile(lat, 0.99), lat.max))
    out[["p50", "p99", "mx"]] = np.asarray(stats, dtype="float64")
    out = out.reset_index()
    out["algbw_gbps"] = np.where(out["T"] > 0, out["S"] / out["T"].where(out["T"] > 0, 1), 0.0)
    out["bus_factor"] = [bus_factor(o, int(n)) for o, n in zip(out["op"], out["group_size"])]
    out["busbw_gbps"] = out["algbw_gbps"] * out["bus_factor"]
    out["bytes"] = out["bytes_mean"]
    for c in ("count", "bytes", "in_bytes", "out_bytes"):
        out[c] = out[c].round().astype("int64")
    out["time_s"] = out["time_mean"] / 1e9
    out["p50_s"], out["p99_s"], out["max_s"] = out["p50"] / 1e9, out["p99"] / 1e9, out["mx"] / 1e9
    return (out[OP_TABLE_COLUMNS].sort_values("time_s", ascending=False, kind="stable")
            .reset_index(drop=True))


def op_table(coll: pd.DataFrame) -> pd.DataFrame:
    """The op table of concatenated frames of any number of ranks (see :func:`combine_op_tables`)."""
    if not len(coll):
        return pd.DataFrame(columns=OP_TABLE_COLUMNS)
    df = coll if "size_bytes" in coll else add_sizes(coll)
    parts = [rank_op_partial(g) for _, g in df.groupby("rank", sort=True)]
    return combine_op_tables([p for p, _ in parts], [d for _, d in parts])
