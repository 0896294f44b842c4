"""Cross-rank analysis: each collective instance seen by all its ranks — wait vs transfer, and
stragglers (docs/kpis.md, "Wait vs transfer, and stragglers").

A collective *instance* is the set of records with the same process group (by name) and sequence
number on that group, one per member rank; only instances with every member present are used.
On rank 0's clock (:mod:`commprof.analysis.clocks`), with ``a_r`` the time rank r called the op
(arrival) and ``e_r`` its completion:

* ``L = max_r a_r`` — the last arrival; its rank is the instance's *last rank*;
* **wait** of rank r = ``L − a_r`` (Scalasca's "Wait at N×N": time spent because others were late);
* **transfer** = ``max(0, min_r e_r − L)``: from the moment everyone was there to the first rank
  seeing the result — the data movement itself, free of lateness;
* per step (rank 0's step windows; an instance belongs to the step holding ``L``), the rank whose
  lateness caused the most wait of the others is that step's **straggler**; its cost is that wait
  divided by the number of other ranks (the wait each other rank suffered on its account).
* A straggler is **significant** when it is the step straggler in at least 75 % of measured steps,
  that share is unlikely under chance (binomial p < 0.01 with p₀ = 1/ranks), and its median
  lateness margin over the second-latest rank exceeds max(0.5 ms, 3 × the clock uncertainty).

Memory: 36 bytes per non-P2P call of every rank (the calls of all ranks are needed at once);
every step below is a numpy pass over sorted arrays, no per-call Python.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from commprof.analysis.clocks import RankClock

MAX_STEPS_SHOWN = 2000
# A straggler is named only when it is last in most measured steps: on 4 ranks sharing 2 cores,
# with no rank slowed, one rank was last in 54 % of steps (p = 0.001) — real, but not the answer
# to "is one rank late?".
SIGNIFICANT_SHARE = 0.75
_P2P = ("send", "recv")


@dataclass
class Calls:
    """Compact per-call arrays of every rank (group names interned to small integers)."""

    names: dict = field(default_factory=dict)  # group name -> code
    parts: list = field(default_factory=list)  # (rank, code, size, seq, t_issue, t_end) per rank

    def add(self, rank: int, coll: pd.DataFrame, groups: pd.DataFrame) -> None:
        """The columns matching needs from one rank's collectives (no P2P, no failed calls)."""
        if not len(coll):
            return
        keep = ~coll["op"].astype(str).isin(_P2P).to_numpy()
        if "failed" in coll:
            keep &= ~coll["failed"].to_numpy().astype(bool)
        gid_name = dict(zip(groups["gid"], groups["name"].astype(str))) if len(groups) else {}
        uniq, inverse = np.unique(coll["group"].to_numpy()[keep], return_inverse=True)
        codes = np.array([self.names.setdefault(gid_name.get(g, f"gid{g}"), len(self.names))
                          for g in uniq.tolist()], dtype=np.int64)
        code = codes[inverse]
        self.parts.append((int(rank), code.astype(np.int32),
                           coll["group_size"].to_numpy()[keep].astype(np.int32),
                           coll["seq"].to_numpy()[keep].astype(np.int64),
                           coll["t_issue"].to_numpy("float64")[keep],
                           coll["t_end"].to_numpy("float64")[keep]))

    @property
    def ranks(self) -> int:
        return len({p[0] for p in self.parts})


def binom_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), in log space (runs have thousands of steps)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    logs = [base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
            for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def analyze(calls: Calls, clocks: dict[int, RankClock], steps0: pd.DataFrame,
            measured_steps: set[int], world: int) -> dict | None:
    """Per-rank wait/transfer, stragglers and per-step waits; None with fewer than two ranks."""
    if calls.ranks < 2:
        return None
    rank_l, key_l, size_l, a_l, e_l = [], [], [], [], []
    while calls.parts:  # consumed as they are joined: peak memory ~ one copy of the calls
        rank, code, size, seq, t_issue, t_end = calls.parts.pop()
        clk = clocks.get(rank)
        if clk is None:
            continue
        rank_l.append(np.full(len(seq), rank, dtype=np.int32))
        key_l.append(code.astype(np.int64) * (1 << 40) + seq)
        size_l.append(size)
        a_l.append(clk.to_reference(t_issue))
        e_l.append(clk.to_reference(t_end))
    if not rank_l:
        return None
    key = np.concatenate(key_l)
    del key_l
    total = len(key)
    order = np.argsort(key, kind="stable")  # each instance becomes one contiguous run
    key = key[order]

    def take(chunks, order):
        joined = np.concatenate(chunks)
        chunks.clear()
        return joined[order]

    rank, size, a, e = (take(c, order) for c in (rank_l, size_l, a_l, e_l))
    del order
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    counts = np.diff(np.r_[starts, len(key)])
    complete = counts == size[starts]
    del size
    if not complete.any():
        return None
    if not complete.all():
        row_ok = np.repeat(complete, counts)
        key, rank, a, e = key[row_ok], rank[row_ok], a[row_ok], e[row_ok]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        counts = np.diff(np.r_[starts, len(key)])
    last_arrival = np.maximum.reduceat(a, starts)
    l_row = np.repeat(last_arrival, counts)
    is_last = a == l_row
    # the last rank: the first row of each instance that arrived at L
    seg_of_row = np.repeat(np.arange(len(starts)), counts)
    first_idx = np.full(len(starts), -1)
    rows_last = np.flatnonzero(is_last)
    segs = seg_of_row[rows_last]
    _, first_pos = np.unique(segs, return_index=True)
    first_idx[segs[first_pos]] = rows_last[first_pos]
    last_rank = rank[first_idx]
    second = np.maximum.reduceat(np.where(is_last, -np.inf, a), starts)
    second = np.where(np.isfinite(second), second, last_arrival)  # ties: margin 0
    first_end = np.minimum.reduceat(np.where(np.isfinite(e), e, np.inf), starts)
    transfer = np.maximum(np.where(np.isfinite(first_end), first_end - last_arrival, 0.0), 0.0)
    wait = l_row - a
    del l_row, is_last, seg_of_row
    inst_total_wait = np.add.reduceat(wait, starts)
    n_inst = len(starts)
    ranks_u = np.unique(rank)
    idx = np.searchsorted(ranks_u, rank)
    per_rank = pd.DataFrame({
        "rank": ranks_u,
        "wait_ns": np.bincount(idx, weights=wait, minlength=len(ranks_u)),
        "transfer_ns": np.bincount(idx, weights=np.repeat(transfer, counts), minlength=len(ranks_u)),
        "instances": np.bincount(idx, minlength=len(ranks_u)),
        "last_share": np.bincount(np.searchsorted(ranks_u, last_rank), minlength=len(ranks_u)) / n_inst})
    inst = pd.DataFrame({"L": last_arrival, "last": last_rank, "margin": last_arrival - second,
                         "per_other": inst_total_wait / np.maximum(counts - 1, 1), "step": -1})
    if len(steps0):
        s_end = steps0["t_end"].to_numpy("float64")
        s_start = steps0["t_start"].to_numpy("float64")
        i = np.searchsorted(s_end, last_arrival, side="left")
        ok = (i < len(s_end)) & (last_arrival > s_start[np.minimum(i, len(s_end) - 1)])
        inst.loc[ok, "step"] = steps0["step"].to_numpy()[i[ok]]
    uncertainty = max((clk.uncertainty_ns or 0.0) for clk in clocks.values()) if clocks else 0.0
    row_step = np.repeat(inst["step"].to_numpy(), counts)
    stragglers, per_step = _stragglers(inst[inst["step"].isin(measured_steps)], row_step, rank,
                                       wait, measured_steps, world, uncertainty)
    return {"per_rank": per_rank, "stragglers": stragglers, "per_step": per_step,
            "instances": int(n_inst), "unmatched_records": int(total - len(key))}


def _stragglers(inst: pd.DataFrame, row_step: np.ndarray, row_rank: np.ndarray, row_wait: np.ndarray,
                measured: set[int], world: int, uncertainty_ns: float) -> tuple[list[dict], list[dict]]:
    if not len(inst) or not measured:
        return [], []
    caused = inst.groupby(["step", "last"])["per_other"].sum().unstack(fill_value=0.0)
    n_steps = len(measured)
    step_straggler = caused.idxmax(axis=1)[caused.max(axis=1) > 0]
    out = []
    threshold_ns = max(0.5e6, 3 * uncertainty_ns)
    counts = step_straggler.value_counts()
    for rank, k in counts.items():
        k = int(k)
        share = k / n_steps
        cost = float(caused[rank].sum()) / n_steps
        margins = inst.loc[inst["last"] == rank, "margin"].dropna()
        margin = float(margins.median()) if len(margins) else 0.0
        p_value = binom_tail(k, n_steps, 1 / max(world, 2))
        out.append({"rank": int(rank), "steps_last": k, "steps": n_steps, "share_of_steps": share,
                    "wait_cost_per_step_s": cost / 1e9, "median_margin_s": margin / 1e9,
                    "p_value": p_value,
                    "significant": bool(share >= SIGNIFICANT_SHARE and p_value < 0.01
                                        and margin > threshold_ns)})
    # per measured step, each rank's total wait (a small steps x ranks matrix)
    sel = np.isin(row_step, list(measured))
    ranks_u = np.unique(row_rank)
    steps_u = np.array(sorted(measured))
    si = np.searchsorted(steps_u, row_step[sel])
    ri = np.searchsorted(ranks_u, row_rank[sel])
    mat = np.zeros((len(steps_u), len(ranks_u)))
    np.add.at(mat, (si, ri), row_wait[sel])
    per_step = [{"step": int(s), "ranks": [int(r) for r in ranks_u],
                 "wait_s": [round(float(v) / 1e9, 6) for v in mat[j]],
                 "straggler": int(step_straggler[s]) if s in step_straggler.index else None}
                for j, s in enumerate(steps_u[:MAX_STEPS_SHOWN])]
    return sorted(out, key=lambda d: -d["steps_last"]), per_step
