"""Cross-rank analysis of PyTorch-profiler traces: each communication kernel matched with its
instances on the other ranks, the ranks' clocks aligned, and each rank's communication time split
into **waiting for the last rank** and **transfer** (docs/kpis.md, "Wait vs transfer on GPU
traces").  The result has the shape of :func:`commprof.analysis.cross.crossrank.analyze`'s, so the
report, the straggler notes and the what-if read it as they read a run's.

* **Matching.**  An instance is one collective on one process group, seen on each member rank.
  Kernels are keyed by their group (``Process Group Name``) and sequence number (``Seq``) where
  the trace records them (on the kernel, or on the ``record_param_comms`` op that launched it);
  otherwise by their order among the group's kernels on each rank (the group unknown: by their
  order on each communication stream, or among all communication kernels), with a note — and an
  instance whose kernels name different ops is dropped.  An instance counts when every member
  rank has it (the group's size from the trace, else the world size).
* **Clocks.**  Ranks of one host (the trace's ``host_name``) share its clock.  Other ranks are
  placed from the instances they share with the reference rank (rank 0, else the lowest): a
  collective's kernels end together, so the offset is the median of the end differences and its
  uncertainty their largest deviation from it.  Where the host is not recorded, an offset
  within max(3 × spread, 20 µs) of zero is not applied (the kernels of one collective end within
  a few µs of each other on one host) and is stated as the uncertainty instead.
* **Split** (per complete instance, on the reference clock; ``a_r``/``e_r`` the kernel's start and
  end on rank r, ``d_r = e_r − a_r``, ``L = max_r a_r`` the last arrival): wait of rank r =
  ``clip(L − a_r, 0, d_r)``; transfer of rank r = ``d_r − wait = clip(e_r − L, 0, d_r)``.  For
  kernels that end together the transfer is about the shortest duration over the ranks.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from commprof.analysis.cross import clocks, crossrank
from commprof.analysis.outcome.verdict import Note

# Kernels of one collective on one host end within a few µs (DLRM on 8 V100s: 7 µs); an offset
# estimated without a host name is applied only beyond this and 3 × its spread.
MIN_OFFSET_NS = 20_000
_P2P = ("send", "recv")


def kernels(timelines, world: int) -> tuple[pd.DataFrame, list[str]]:
    """One row per communication kernel of every rank with its matching key: ``rank``, ``group``,
    ``key`` (sequence number or order), ``by`` ("seq"/"order"), ``size`` (members), ``start_ns``,
    ``end_ns``, ``step``, ``op``; and the notes on how they were keyed."""
    frames = [tl.collectives for tl in timelines if len(tl.collectives)]
    if not frames:
        return pd.DataFrame(), []
    c = pd.concat(frames, ignore_index=True)
    c = c[~c["op"].astype(str).isin(_P2P)].sort_values(["rank", "start_ns"], kind="stable")
    pg = c["pg_name"].astype(str)
    notes = []
    group = pg.copy()
    unknown = group == ""
    if unknown.any():
        streams = c[unknown].groupby("rank")["stream"].apply(lambda s: tuple(sorted(set(s))))
        same = streams.nunique() == 1 and c["rank"][unknown].nunique() == c["rank"].nunique()
        group[unknown] = ("stream " + c["stream"][unknown].astype(str)) if same else "all"
        notes.append("no process group recorded on the communication kernels: matched across ranks "
                     "by their order " + ("on each communication stream" if same else
                                          "among each rank's communication kernels"))
    c = c.assign(group=group.to_numpy())
    seq_known = c.groupby("group")["seq"].transform(lambda s: bool((s >= 0).all())).astype(bool)
    order = c.groupby(["rank", "group"]).cumcount()
    c["by"] = np.where(seq_known, "seq", "order")
    c["key"] = np.where(seq_known, c["seq"], order)
    ordered = sorted(set(c.loc[~seq_known & ~unknown, "group"]))
    if ordered:
        notes.append(f"no sequence numbers (Seq) on group(s) {', '.join(ordered[:6])}: their "
                     "collectives matched across ranks by order")
    c["size"] = np.where(c["group_size"] > 0, c["group_size"], world)
    return c[["rank", "group", "key", "by", "size", "start_ns", "end_ns", "step", "op"]], notes


def instances(k: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per (instance, rank) of the complete instances (every member rank present, one
    span per rank: first start to last end of its kernels), with ``inst`` numbering them."""
    notes = []
    per = k.groupby(["group", "key", "rank"], as_index=False).agg(
        start_ns=("start_ns", "min"), end_ns=("end_ns", "max"), step=("step", "first"),
        op=("op", "first"), size=("size", "first"), by=("by", "first"), kernels=("op", "size"))
    g = per.groupby(["group", "key"])
    complete = g["rank"].transform("size") == per["size"]
    bad = (g["op"].transform("nunique") > 1) & (per["by"] == "order")
    if bad.any():
        n = per.loc[bad, ["group", "key"]].drop_duplicates().shape[0]
        notes.append(f"{n} collective(s) matched by order name different ops on different ranks "
                     "(a kernel missing from some trace): left out of the wait/transfer split")
    per = per[complete & ~bad].copy()
    per["inst"] = per.groupby(["group", "key"]).ngroup()
    return per.reset_index(drop=True), notes


def align(per: pd.DataFrame, hosts: dict, ranks: list[int]) -> tuple[dict, list[str]]:
    """A :class:`~commprof.analysis.cross.clocks.RankClock` per rank (onto the reference rank's clock)."""
    ref = 0 if 0 in ranks else min(ranks)
    out = {ref: clocks.RankClock(ref, "reference", (0.0,), (0.0,), 0.0)}
    notes: list[str] = []
    rel = per.assign(end=per["end_ns"] - int(per["end_ns"].min()))  # small: exact as float64
    ends = rel.pivot_table(index="inst", columns="rank", values="end", aggfunc="first").reindex(columns=ranks)
    present = ends.notna().to_numpy("int64")
    shared = pd.DataFrame(present.T @ present, index=ranks, columns=ranks)  # instances in common
    pending = [r for r in ranks if r != ref]
    for r in list(pending):  # same host as an aligned rank: the same clock
        if hosts.get(r) is not None and hosts.get(r) == hosts.get(ref):
            out[r] = clocks.RankClock(r, "same-host", (0.0,), (0.0,), 0.0)
            pending.remove(r)
    while pending:
        block = shared.loc[pending, list(out)]
        r, q = block.stack().idxmax()
        n = int(block.loc[r, q])
        if n == 0:
            for r in pending:
                out[r] = clocks.RankClock(r, "none", (0.0,), (0.0,), None)
            notes.append(f"rank(s) {', '.join(map(str, pending))} share no matched collective with the "
                         f"reference rank {ref}: their clocks are taken as they are (uncertainty unknown)")
            break
        d = (ends[q] - ends[r]).dropna().to_numpy("float64")
        offset = float(np.median(d))
        spread = float(np.max(np.abs(d - offset)))  # conservative: the worst instance
        base = out[q]
        same_clock = hosts.get(r) is None and abs(offset) <= max(3 * spread, MIN_OFFSET_NS)
        unc = (base.uncertainty_ns or 0.0) + (max(spread, abs(offset)) if same_clock else spread)
        mates = [m for m in pending if m == r or (hosts.get(r) is not None and hosts.get(m) == hosts.get(r))]
        for m in mates:
            out[m] = clocks.RankClock(m, "same-clock" if same_clock else "instance-ends", (0.0,),
                                      (base.offset_ns[0] + (0.0 if same_clock else offset),), unc)
            pending.remove(m)
    return out, notes


def split(per: pd.DataFrame, rank_clocks: dict, steps: list[int], world: int) -> dict:
    """Per complete instance and rank: wait and transfer (module docstring); the same dict as
    :func:`commprof.analysis.cross.crossrank.analyze` (``per_rank``, ``stragglers``, ``per_step``,
    ``instances``, ``unmatched_records``)."""
    off = per["rank"].map({r: c.offset_ns[0] for r, c in rank_clocks.items()}).to_numpy("float64")
    t0 = int(per["start_ns"].min()) if len(per) else 0  # ns since 1970 lose ns as float64
    a = (per["start_ns"].to_numpy("int64") - t0).astype("float64") + off
    e = (per["end_ns"].to_numpy("int64") - t0).astype("float64") + off
    inst = per["inst"].to_numpy()
    n = int(inst.max()) + 1 if len(inst) else 0
    last_at = np.full(n, -np.inf)
    np.maximum.at(last_at, inst, a)
    L = last_at[inst]
    d = np.maximum(e - a, 0.0)
    wait = np.clip(L - a, 0.0, d)
    transfer = d - wait
    f = per.assign(a=a, wait=wait, transfer=transfer)
    # the last rank (ties: the highest rank) and its margin over the second-latest arrival
    by_a = f.sort_values(["inst", "a", "rank"], kind="stable")
    last = by_a.groupby("inst").tail(1).set_index("inst")
    sizes = by_a.groupby("inst").size().to_numpy()
    end_at = np.cumsum(sizes)  # one past each instance's last row in by_a
    second = pd.Series(np.where(sizes >= 2, by_a["a"].to_numpy()[np.maximum(end_at - 2, 0)], np.nan),
                       index=last.index)
    table = pd.DataFrame({"L": last["a"], "last": last["rank"].astype("int64"),
                          "margin": (last["a"] - second).fillna(0.0),
                          "per_other": f.groupby("inst")["wait"].sum() / np.maximum(
                              f.groupby("inst").size() - 1, 1),
                          "step": _instance_step(f, rank_clocks)})
    ranks_u = np.array(sorted(f["rank"].unique()), dtype=np.int64)
    steps_u = np.array(sorted(steps), dtype=np.int64)
    per_rank = f.groupby("rank").agg(wait_ns=("wait", "sum"), transfer_ns=("transfer", "sum"),
                                     instances=("inst", "size")).reindex(ranks_u)
    per_rank["last_share"] = (table["last"].value_counts().reindex(ranks_u).fillna(0) / max(n, 1)).to_numpy()
    per_rank = per_rank.reset_index().rename(columns={"index": "rank"})
    f["step"] = table["step"].reindex(f["inst"]).to_numpy()
    wm = (f[f["step"].isin(steps_u)].pivot_table(index="step", columns="rank", values="wait", aggfunc="sum")
          .reindex(index=steps_u, columns=ranks_u).fillna(0.0).to_numpy("float64"))
    unc = max((c.uncertainty_ns or 0.0) for c in rank_clocks.values())
    stragglers, per_step = crossrank.stragglers_of(table[table["step"].isin(steps_u)], steps_u, ranks_u,
                                                   wm, world, unc)
    return {"per_rank": per_rank, "stragglers": stragglers, "per_step": per_step, "instances": n,
            "unmatched_records": 0}


def _instance_step(f: pd.DataFrame, rank_clocks: dict) -> pd.Series:
    """The ProfilerStep of each instance: the reference rank's, else its lowest rank's."""
    ref = next(r for r, c in rank_clocks.items() if c.method == "reference")
    ordered = f.assign(pref=(f["rank"] != ref)).sort_values(["inst", "pref", "rank"], kind="stable")
    return ordered.groupby("inst")["step"].first().astype("int64")


def analyze(traces, timelines) -> tuple[dict | None, dict | None, list[Note]]:
    """The cross-rank result, the ``clock_alignment`` section and the notes for the traces of one
    job; (None, None, notes) when the split cannot be made (one rank, or no complete instance)."""
    world = max([t.world_size or 0 for t in traces] + [len(traces)])
    ranks = sorted(int(t.rank) for t in traces)
    comm = any(len(tl.collectives) for tl in timelines)
    if len(traces) < 2:
        why = ("splitting communication into waiting for the last rank and transfer needs the other "
               "ranks' traces too "
               f"(world size {world}): give them all (a directory or several files)")
        return None, None, [Note("cross_rank", "info", why)] if comm and world > 1 else []
    k, texts = kernels(timelines, world)
    if not len(k):
        return None, None, []
    per, more = instances(k)
    texts += more
    if not len(per):
        texts.append(f"no collective was found on every member rank of its group ({len(traces)} "
                     f"of {world} ranks given): the wait/transfer split needs them all")
        return None, None, [Note("cross_rank", "warning", t) for t in texts]
    rank_clocks, more = align(per, {int(t.rank): t.host for t in traces}, ranks)
    texts += more
    steps = sorted({int(s) for tl in timelines for s in tl.steps["step"]}) if timelines else []
    cross = split(per, rank_clocks, steps, world)
    cross["unmatched_records"] = int(len(k) - per["kernels"].sum())
    cross["matched_by"] = sorted(set(per["by"]))
    if cross["unmatched_records"]:
        texts.append(f"{cross['unmatched_records']} communication kernel(s) matched on no other rank "
                     "(their group's other ranks not given, or missing from a trace): not split")
    alignment = clocks.summary(rank_clocks)
    alignment["reference_rank"] = next(r for r, c in rank_clocks.items() if c.method == "reference")
    return cross, alignment, [Note("cross_rank", "info", t) for t in texts]


# The waiting note needs the median rank to wait for at least this share of its time (the
# verdict's "not communication-bound" bound): a few µs of skew on small collectives is no finding.
WAITING_NOTE_MIN_FRACTION = 0.05


def waiting_note(per_rank: pd.DataFrame, stragglers: list[dict], steps: int,
                 wait_fraction: float | None) -> Note | None:
    """When ranks spend more of their communication waiting for the last rank than in transfer,
    and the median rank waits for at least :data:`WAITING_NOTE_MIN_FRACTION` of its time
    (``wait_fraction``, ``kpis.wait_fraction_wall``): say so, with the figures, and that a
    faster network shortens only the transfer."""
    if per_rank is None or not len(per_rank) or (wait_fraction or 0.0) < WAITING_NOTE_MIN_FRACTION:
        return None
    wait, transfer = float(per_rank["wait_ns"].sum()), float(per_rank["transfer_ns"].sum())
    if wait <= transfer or wait <= 0:
        return None
    per = " per step" if steps else ""
    div = max(steps, 1) * 1e6
    med_w, med_t = float(per_rank["wait_ns"].median()) / div, float(per_rank["transfer_ns"].median()) / div
    late = max(stragglers, key=lambda s: s["steps_last"]) if stragglers else None
    top = per_rank.sort_values("last_share").iloc[-1]
    who = (f"rank {int(top['rank'])} arrived last at {top['last_share']:.0%} of the collectives"
           if late is None or not late.get("significant") else
           f"rank {late['rank']} was last in {late['share_of_steps']:.0%} of steps")
    return Note("waiting", "warning",
                f"ranks wait for each other: {wait / (wait + transfer):.0%} of the matched "
                f"communication time is waiting for the last rank to arrive (median rank "
                f"{med_w:.3g} ms waiting, {med_t:.3g} ms transfer{per}); {who}. Load imbalance or "
                "a late rank costs this time, not the network: balance the work before the "
                "collectives; a faster network shortens only the transfer")
