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


def add_sizes(coll: pd.DataFrame) -> pd.DataFrame:
    """Add ``size_bytes`` (S), ``bus_bytes`` (S × bus factor) and ``duration_ns`` columns."""
    df = coll.copy()
    op = df["op"].to_numpy()
    n = df["group_size"].to_numpy(dtype="int64")
    inb = df["in_bytes"].to_numpy(dtype="int64")
    outb = df["out_bytes"].to_numpy(dtype="int64")
    size = np.zeros(len(df), dtype="int64")
    take_in = np.isin(op, ["all_reduce", "all_reduce_coalesced", "reduce_scatter",
                           "reduce_scatter_coalesced", "all_to_all", "broadcast", "reduce", "send"])
    take_out = np.isin(op, ["all_gather", "all_gather_coalesced", "recv"])
    size[take_in] = inb[take_in]
    size[take_out] = outb[take_out]
    g = op == "gather"
    size[g] = inb[g] * n[g]
    sc = op == "scatter"
    size[sc] = outb[sc] * n[sc]
    df["size_bytes"] = size
    factors = np.array([bus_factor(o, int(k)) for o, k in zip(op, n)]) if len(df) else np.zeros(0)
    df["bus_bytes"] = size * factors
    df["duration_ns"] = df["t_end"] - df["t_issue"]
    return df


def op_table(coll: pd.DataFrame) -> pd.DataFrame:
    """One row per (op, group size): per-rank count and bytes, latency quantiles, algbw, busbw.

    ``count``/``bytes``/``in_bytes``/``out_bytes``/``time_s`` are per rank (the mean over the ranks
    that issued the op); latencies are over every call of every rank; ``algbw_gbps`` is
    Σ S / Σ t over all calls, ``busbw_gbps`` = algbw × bus factor.
    """
    cols = ["op", "group_size", "count", "bytes", "in_bytes", "out_bytes", "time_s", "p50_s",
            "p99_s", "max_s", "algbw_gbps", "busbw_gbps", "bus_factor", "ranks", "dtype"]
    if not len(coll):
        return pd.DataFrame(columns=cols)
    df = coll if "size_bytes" in coll else add_sizes(coll)
    per_rank = (df.groupby(["op", "group_size", "rank"], sort=False)
                .agg(count=("id", "size"), bytes=("size_bytes", "sum"), in_bytes=("in_bytes", "sum"),
                     out_bytes=("out_bytes", "sum"), time_ns=("duration_ns", "sum")))
    agg = per_rank.groupby(level=["op", "group_size"], sort=False).agg(
        count=("count", "mean"), bytes=("bytes", "mean"), in_bytes=("in_bytes", "mean"),
        out_bytes=("out_bytes", "mean"), time_ns=("time_ns", "mean"), ranks=("count", "size"))
    lat = df.groupby(["op", "group_size"], sort=False)["duration_ns"].quantile([0.5, 0.99]).unstack()
    mx = df.groupby(["op", "group_size"], sort=False)["duration_ns"].max()
    tot = df.groupby(["op", "group_size"], sort=False).agg(S=("size_bytes", "sum"),
                                                            T=("duration_ns", "sum"))
    dtypes = df.groupby(["op", "group_size"], sort=False)["dtype"].agg(
        lambda s: ",".join(sorted(set(s))))
    out = agg.join(lat).join(mx.rename("max_ns")).join(tot).join(dtypes)
    out = out.reset_index()
    out["algbw_gbps"] = np.where(out["T"] > 0, out["S"] / out["T"].where(out["T"] > 0, 1), 0.0)
    out["bus_factor"] = [bus_factor(o, int(n)) for o, n in zip(out["op"], out["group_size"])]
    out["busbw_gbps"] = out["algbw_gbps"] * out["bus_factor"]
    for c in ("count", "bytes", "in_bytes", "out_bytes"):
        out[c] = out[c].round().astype("int64")
    out["time_s"] = out["time_ns"] / 1e9
    out["p50_s"] = out[0.5] / 1e9
    out["p99_s"] = out[0.99] / 1e9
    out["max_s"] = out["max_ns"] / 1e9
    return out[cols].sort_values("time_s", ascending=False, kind="stable").reset_index(drop=True)
