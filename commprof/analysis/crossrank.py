"""Cross-rank analysis: each collective instance seen by all its ranks — wait vs transfer, and
stragglers (docs/kpis.md, "Wait, transfer, stragglers").

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
* A straggler is **significant** when it is the step straggler in at least half the measured steps,
  that share is unlikely under chance (binomial p < 0.01 with p₀ = 1/ranks), and its median
  lateness margin over the second-latest rank exceeds max(0.5 ms, 3 × the clock uncertainty).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from commprof.analysis.clocks import RankClock

CALL_COLUMNS = ["rank", "group", "group_size", "seq", "op", "t_issue", "t_end"]
MAX_STEPS_SHOWN = 2000


def rank_calls(rank: int, coll: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """The columns cross-rank matching needs from one rank's collectives (no P2P, no failures);
    groups are named as the process group is (the same on every member)."""
    if not len(coll):
        return pd.DataFrame(columns=CALL_COLUMNS)
    c = coll[~coll["op"].astype(str).isin(["send", "recv"])]
    if "failed" in c:
        c = c[~c["failed"].astype(bool)]
    names = dict(zip(groups["gid"], groups["name"].astype(str))) if len(groups) else {}
    return pd.DataFrame({"rank": rank,
                         "group": [names.get(g, f"gid{g}") for g in c["group"].to_numpy()],
                         "group_size": c["group_size"].to_numpy(), "seq": c["seq"].to_numpy(),
                         "op": c["op"].astype(str).to_numpy(),
                         "t_issue": c["t_issue"].to_numpy("float64"),
                         "t_end": c["t_end"].to_numpy("float64")})


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


def analyze(calls: pd.DataFrame, clocks: dict[int, RankClock], steps0: pd.DataFrame,
            measured_steps: set[int], world: int) -> dict | None:
    """Per-rank wait/transfer, stragglers and per-step waits; None with fewer than two ranks."""
    if not len(calls) or calls["rank"].nunique() < 2:
        return None
    c = calls.copy()
    c["a"] = np.nan
    c["e"] = np.nan
    for rank, idx in c.groupby("rank").groups.items():
        clk = clocks.get(int(rank))
        if clk is None:
            continue
        c.loc[idx, "a"] = clk.to_reference(c.loc[idx, "t_issue"].to_numpy())
        c.loc[idx, "e"] = clk.to_reference(c.loc[idx, "t_end"].to_numpy())
    c = c[np.isfinite(c["a"])]
    key = ["group", "seq"]
    size = c.groupby(key)["rank"].transform("nunique")
    c = c[size == c["group_size"]]
    unmatched = int(len(calls) - len(c))
    if not len(c):
        return None
    g = c.groupby(key, sort=False)
    c["L"] = g["a"].transform("max")
    c["wait"] = c["L"] - c["a"]
    first_end = g["e"].transform("min")
    c["transfer"] = np.maximum(first_end - c["L"], 0.0)
    inst = c.sort_values("a").groupby(key, sort=False).agg(
        L=("L", "first"), transfer=("transfer", "first"), size=("group_size", "first"),
        last=("rank", "last"), total_wait=("wait", "sum"),
        second=("a", lambda s: s.iloc[-2] if len(s) > 1 else np.nan))
    inst["margin"] = inst["L"] - inst["second"]
    inst["per_other"] = inst["total_wait"] / np.maximum(inst["size"] - 1, 1)
    # steps (rank 0's windows, reference clock)
    inst["step"] = -1
    if len(steps0):
        ends = steps0["t_end"].to_numpy("float64")
        starts = steps0["t_start"].to_numpy("float64")
        i = np.searchsorted(ends, inst["L"].to_numpy(), side="left")
        ok = (i < len(ends)) & (inst["L"].to_numpy() > starts[np.minimum(i, len(ends) - 1)])
        inst.loc[ok, "step"] = steps0["step"].to_numpy()[i[ok]]
    per_rank = c.groupby("rank").agg(wait_ns=("wait", "sum"), transfer_ns=("transfer", "sum"),
                                     instances=("seq", "size"))
    last_counts = inst.groupby("last").size()
    per_rank["last_share"] = (last_counts.reindex(per_rank.index).fillna(0) / len(inst)).to_numpy()
    uncertainty = max((clk.uncertainty_ns or 0.0) for clk in clocks.values()) if clocks else 0.0
    step_rows = inst[inst["step"].isin(measured_steps)]
    stragglers, per_step = _stragglers(step_rows, c, measured_steps, world, uncertainty)
    return {"per_rank": per_rank.reset_index(), "stragglers": stragglers, "per_step": per_step,
            "instances": int(len(inst)), "unmatched_records": unmatched}


def _stragglers(inst: pd.DataFrame, calls: pd.DataFrame, measured: set[int], world: int,
                uncertainty_ns: float) -> tuple[list[dict], list[dict]]:
    if not len(inst) or not measured:
        return [], []
    caused = inst.groupby(["step", "last"])["per_other"].sum().unstack(fill_value=0.0)
    n_steps = len(measured)
    step_straggler = caused.idxmax(axis=1)[caused.max(axis=1) > 0]
    out = []
    threshold_ns = max(0.5e6, 3 * uncertainty_ns)
    for rank in sorted(set(step_straggler.to_numpy().tolist()), key=lambda r: -(step_straggler == r).sum()):
        k = int((step_straggler == rank).sum())
        share = k / n_steps
        cost = float(caused[rank].sum()) / n_steps if rank in caused else 0.0
        margins = inst.loc[inst["last"] == rank, "margin"].dropna()
        margin = float(margins.median()) if len(margins) else 0.0
        p_value = binom_tail(k, n_steps, 1 / max(world, 2))
        out.append({"rank": int(rank), "steps_last": k, "steps": n_steps, "share_of_steps": share,
                    "wait_cost_per_step_s": cost / 1e9, "median_margin_s": margin / 1e9,
                    "p_value": p_value,
                    "significant": bool(share >= 0.5 and p_value < 0.01 and margin > threshold_ns)})
    waits = (calls.merge(inst[["step"]].reset_index(), on=["group", "seq"])
             .groupby(["step", "rank"])["wait"].sum().unstack(fill_value=0.0))
    per_step = [{"step": int(s), "wait_s": [round(float(v) / 1e9, 6) for v in row.to_numpy()],
                 "ranks": [int(r) for r in row.index], "straggler": int(step_straggler[s])
                 if s in step_straggler.index else None}
                for s, row in list(waits.iterrows())[:MAX_STEPS_SHOWN]]
    return out, per_step
