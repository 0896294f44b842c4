"""Cross-rank analysis: each collective instance seen by all its ranks — wait vs transfer, and
stragglers (docs/kpis.md, "Wait vs transfer, and stragglers").

A collective *instance* is the set of records with the same process group (by name) and sequence
number on that group, one per member rank; only instances with every member present are used.
On rank 0's clock (:mod:`commprof.analysis.cross.clocks`), with ``a_r`` the time rank r called the op
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

Memory: the matching columns of every call (28 bytes per non-P2P call) are kept in memory up to
a budget and spilled to a temporary directory past it (:class:`Calls`); the matching itself streams
them twice, one process at a time, against per-instance state (about 40 bytes per (group, sequence)
instance) and a measured-steps x ranks matrix — never every call of every rank at once.  Each pass
is numpy over one process's arrays, no per-call Python.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from commprof.analysis.cross.clocks import RankClock
from commprof.errors import RunDirError

MAX_STEPS_SHOWN = 2000
# A straggler is named only when it is last in most measured steps: on 4 ranks sharing 2 cores,
# with no rank slowed, one rank was last in 54 % of steps (p = 0.001) — real, but not the answer
# to "is one rank late?".
SIGNIFICANT_SHARE = 0.75
_P2P = ("send", "recv")


# The matching columns of one process: rank, then group code, group size, seq, t_issue, t_end.
_PART = np.dtype([("code", "<i4"), ("size", "<i4"), ("seq", "<i8"), ("t_issue", "<f8"), ("t_end", "<f8")])
SPILL_BUDGET_BYTES = 64 << 20


def matching_columns(coll: pd.DataFrame, groups: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """What matching needs from one process's collectives (no P2P, no failed calls): the group
    names it uses, and one ``_PART`` row per call whose ``code`` indexes those names."""
    if not len(coll):
        return [], np.zeros(0, _PART)
    keep = ~coll["op"].astype(str).isin(_P2P).to_numpy()
    if "failed" in coll:
        keep &= ~coll["failed"].to_numpy().astype(bool)
    gid_name = dict(zip(groups["gid"], groups["name"].astype(str))) if len(groups) else {}
    uniq, inverse = np.unique(coll["group"].to_numpy()[keep], return_inverse=True)
    rows = np.zeros(int(keep.sum()), _PART)
    rows["code"] = inverse
    rows["size"] = coll["group_size"].to_numpy()[keep]
    rows["seq"] = coll["seq"].to_numpy()[keep]
    rows["t_issue"] = coll["t_issue"].to_numpy("float64")[keep]
    rows["t_end"] = coll["t_end"].to_numpy("float64")[keep]
    return [gid_name.get(g, f"gid{g}") for g in uniq.tolist()], rows


@dataclass
class Calls:
    """The matching columns of every process, group names interned to small integers.

    Held in memory up to ``budget_bytes``; past it each further process's rows go to a temporary
    directory (removed by :meth:`close`, or when the object is collected), so memory stays bounded
    whatever the number of ranks."""

    budget_bytes: int = SPILL_BUDGET_BYTES
    names: dict = field(default_factory=dict)  # group name -> code
    parts: list = field(default_factory=list)  # (rank, rows or spill path) per process
    seq_range: dict = field(default_factory=dict)  # code -> (min seq, max seq)
    seq_count: dict = field(default_factory=dict)  # code -> rows (bounds the dense range)
    held_bytes: int = 0
    spilled_bytes: int = 0
    _spill: tempfile.TemporaryDirectory | None = None

    def add(self, rank: int, coll: pd.DataFrame, groups: pd.DataFrame) -> None:
        """One process's collectives (a frame of :func:`commprof.analysis.host.load.read_rank`)."""
        self.add_columns(rank, *matching_columns(coll, groups))

    def add_columns(self, rank: int, names: list[str], rows: np.ndarray) -> None:
        """One process's :func:`matching_columns` (as a worker process returns them)."""
        if not len(rows):
            return
        codes = np.array([self.names.setdefault(n, len(self.names)) for n in names], dtype=np.int32)
        rows = rows.copy() if not rows.flags.writeable else rows
        rows["code"] = codes[rows["code"]]
        for code in np.unique(rows["code"]).tolist():
            seq = rows["seq"][rows["code"] == code]
            lo, hi = self.seq_range.get(code, (int(seq.min()), int(seq.max())))
            self.seq_range[code] = (min(lo, int(seq.min())), max(hi, int(seq.max())))
            self.seq_count[code] = self.seq_count.get(code, 0) + len(seq)
        if self.held_bytes + rows.nbytes <= self.budget_bytes:
            self.parts.append((int(rank), rows))
            self.held_bytes += rows.nbytes
            return
        if self._spill is None:
            self._spill = tempfile.TemporaryDirectory(prefix="commprof-match-")
        path = Path(self._spill.name) / f"{len(self.parts)}.npy"
        np.save(path, rows, allow_pickle=False)
        self.parts.append((int(rank), path))
        self.spilled_bytes += rows.nbytes

    def iter_parts(self):
        """(rank, rows) of each process, in the order they were added."""
        for rank, rows in self.parts:
            yield rank, (np.load(rows, allow_pickle=False) if isinstance(rows, Path) else rows)

    def close(self) -> None:
        """Drop every row (and the spill directory)."""
        self.parts.clear()
        self.held_bytes = 0
        if self._spill is not None:
            self._spill.cleanup()
            self._spill = None

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


def _layers(idx: np.ndarray):
    """Row selections of ``idx`` in which no instance repeats (one, unless a process holds the
    same (group, seq) twice), so fancy-indexed updates never collide."""
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    first = np.r_[True, sorted_idx[1:] != sorted_idx[:-1]]
    if first.all():
        yield slice(None)
        return
    run_start = np.maximum.accumulate(np.where(first, np.arange(len(idx)), 0))
    level = np.empty(len(idx), dtype=np.int64)
    level[order] = np.arange(len(idx)) - run_start
    for k in range(int(level.max()) + 1):
        yield np.flatnonzero(level == k)


class _Instances:
    """Per-(group, seq) state, dense over each group's sequence range: arrivals counted, the
    latest arrival (L), its rank, the latest arrival strictly before L, the first completion."""

    def __init__(self, seq_range: dict):
        codes = max(seq_range, default=-1) + 1
        self._start, self._lo = np.zeros(codes, np.int64), np.zeros(codes, np.int64)
        n = 0
        for code, (lo, hi) in sorted(seq_range.items()):
            self._start[code], self._lo[code] = n, lo
            n += hi - lo + 1
        self.count = np.zeros(n, np.int64)
        self.size = np.zeros(n, np.int64)
        self.top = np.full(n, -np.inf)
        self.second = np.full(n, -np.inf)
        self.last = np.full(n, -1, np.int64)
        self.first_end = np.full(n, np.inf)

    def index(self, rows: np.ndarray) -> np.ndarray:
        """Each row's instance."""
        code = rows["code"]
        return self._start[code] + rows["seq"] - self._lo[code]

    def arrive(self, rank: int, idx: np.ndarray, size: np.ndarray, a: np.ndarray, e: np.ndarray) -> None:
        """Fold one process's arrivals in (a tie at L goes to the process folded last)."""
        for sel in _layers(idx):
            i, ai, ei = idx[sel], a[sel], e[sel]
            self.count[i] += 1
            self.size[i] = size[sel]
            top, second = self.top[i], self.second[i]
            above, equal = ai > top, ai == top
            self.second[i] = np.where(above, top, np.where(equal, second, np.maximum(second, ai)))
            self.top[i] = np.where(above, ai, top)
            self.last[i] = np.where(above | equal, rank, self.last[i])
            self.first_end[i] = np.where(np.isfinite(ei), np.minimum(self.first_end[i], ei), self.first_end[i])


def _check_dense(calls: Calls) -> None:
    """Refuse sequence numbers no run can have: the instances are dense over each group's range,
    which must not be sized by one forged or corrupted record (seq 2**40 among 0..99)."""
    for code, (lo, hi) in calls.seq_range.items():
        n = calls.seq_count.get(code, 0)
        if hi - lo + 1 > 8 * n + (1 << 20):
            name = next((k for k, v in calls.names.items() if v == code), code)
            raise RunDirError(f"captures: the sequence numbers of group {name!r} span {lo}..{hi} "
                              f"for {n} calls: corrupt or forged capture records")


def analyze(calls: Calls, clocks: dict[int, RankClock], steps0: pd.DataFrame,
            measured_steps: set[int], world: int) -> dict | None:
    """Per-rank wait/transfer, stragglers and per-step waits; None with fewer than two ranks.

    Two streamed passes over ``calls`` (one process at a time): the first folds every arrival
    into its instance, the second charges each complete instance's wait to its ranks."""
    if calls.ranks < 2:
        return None
    _check_dense(calls)
    inst = _Instances(calls.seq_range)
    total = 0
    for rank, rows in calls.iter_parts():
        clk = clocks.get(rank)
        if clk is None:
            continue
        total += len(rows)
        inst.arrive(rank, inst.index(rows), rows["size"], clk.to_reference(rows["t_issue"]),
                    clk.to_reference(rows["t_end"]))
    complete = (inst.count > 0) & (inst.count == inst.size)
    if not complete.any():
        calls.close()
        return None
    L = inst.top
    transfer = np.where(complete & np.isfinite(inst.first_end), np.maximum(inst.first_end - L, 0.0), 0.0)
    step = np.full(len(L), -1, np.int64)
    if len(steps0):
        s_end = steps0["t_end"].to_numpy("float64")
        s_start = steps0["t_start"].to_numpy("float64")
        i = np.searchsorted(s_end, L, side="left")
        ok = complete & (i < len(s_end)) & (L > s_start[np.minimum(i, len(s_end) - 1)])
        step[ok] = steps0["step"].to_numpy()[i[ok]]
    steps_u = np.array(sorted(measured_steps), dtype=np.int64)
    step_col = np.minimum(np.searchsorted(steps_u, step), max(len(steps_u) - 1, 0))
    in_measured = steps_u[step_col] == step if len(steps_u) else np.zeros(len(step), bool)
    inst_wait = np.zeros(len(L))
    by_rank: dict[int, list] = {}  # rank -> [wait_ns, transfer_ns, instances, per-step wait]
    matched = 0
    for rank, rows in calls.iter_parts():  # pass 2: each complete instance's wait, charged
        clk = clocks.get(rank)
        if clk is None:
            continue
        idx = inst.index(rows)
        ok = complete[idx]
        idx = idx[ok]
        wait = L[idx] - clk.to_reference(rows["t_issue"][ok])
        matched += len(idx)
        if not len(idx):
            continue
        for sel in _layers(idx):
            inst_wait[idx[sel]] += wait[sel]
        acc = by_rank.setdefault(rank, [0.0, 0.0, 0, np.zeros(len(steps_u))])
        acc[0] += float(wait.sum())
        acc[1] += float(transfer[idx].sum())
        acc[2] += len(idx)
        m = in_measured[idx]
        acc[3] += np.bincount(step_col[idx][m], weights=wait[m], minlength=len(steps_u))
    calls.close()
    ranks_u = np.array(sorted(by_rank), dtype=np.int64)
    n_inst = int(complete.sum())
    last = inst.last[complete]
    per_rank = pd.DataFrame({
        "rank": ranks_u,
        "wait_ns": [by_rank[r][0] for r in ranks_u.tolist()],
        "transfer_ns": [by_rank[r][1] for r in ranks_u.tolist()],
        "instances": np.array([by_rank[r][2] for r in ranks_u.tolist()], dtype=np.int64),
        "last_share": np.bincount(np.searchsorted(ranks_u, last), minlength=len(ranks_u)) / n_inst})
    second = inst.second[complete]
    margin = np.where(np.isfinite(second), L[complete] - second, 0.0)  # ties: margin 0
    counts = inst.count[complete]
    table = pd.DataFrame({"L": L[complete], "last": last, "margin": margin,
                          "per_other": inst_wait[complete] / np.maximum(counts - 1, 1),
                          "step": step[complete]})
    wait_matrix = (np.stack([by_rank[r][3] for r in ranks_u.tolist()], axis=1) if len(ranks_u)
                   else np.zeros((len(steps_u), 0)))
    uncertainty = max((clk.uncertainty_ns or 0.0) for clk in clocks.values()) if clocks else 0.0
    stragglers, per_step = stragglers_of(table[table["step"].isin(measured_steps)], steps_u, ranks_u,
                                         wait_matrix, world, uncertainty)
    return {"per_rank": per_rank, "stragglers": stragglers, "per_step": per_step,
            "instances": n_inst, "unmatched_records": int(total - matched)}


def stragglers_of(inst: pd.DataFrame, steps_u: np.ndarray, ranks_u: np.ndarray, wait_matrix: np.ndarray,
                  world: int, uncertainty_ns: float) -> tuple[list[dict], list[dict]]:
    """The stragglers (significance as in the module docstring) and the per-step waits, from one
    row per matched instance (``step``, ``last``, ``margin``, ``per_other``, ns) and the
    measured-steps x ranks matrix of each rank's wait (ns)."""
    if not len(inst) or not len(steps_u):
        return [], []
    caused = inst.groupby(["step", "last"])["per_other"].sum().unstack(fill_value=0.0)
    n_steps = len(steps_u)
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
    per_step = [{"step": int(s), "ranks": [int(r) for r in ranks_u],
                 "wait_s": [round(float(v) / 1e9, 6) for v in wait_matrix[j]],
                 "straggler": int(step_straggler[s]) if s in step_straggler.index else None}
                for j, s in enumerate(steps_u[:MAX_STEPS_SHOWN])]
    return sorted(out, key=lambda d: -d["steps_last"]), per_step
