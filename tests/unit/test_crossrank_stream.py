"""The streamed cross-rank matching (analysis/cross/crossrank.py) against an independent, naive
computation of the definitions in docs/kpis.md ("Wait vs transfer, and stragglers"): every call of
every rank in one pandas frame, grouped by (group name, seq).  Runs with the calls in memory and
spilled to disk, with several groups, incomplete instances, pending calls, drifting clocks and a
rank seen in two processes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from commprof.analysis.cross import crossrank
from commprof.analysis.cross.clocks import RankClock

WORLD = 6
STEP_NS = 10_000_000.0


def _processes(rng: np.random.Generator):
    """(rank, coll frame, groups frame) per process, and the clocks that map them to rank 0."""
    groups = {"world": list(range(WORLD)), "even": [0, 2, 4], "odd": [1, 3, 5]}
    calls = {r: [] for r in range(WORLD)}
    seqs = {name: 0 for name in groups}
    for step in range(30):
        for j in range(12):
            name = ["world", "even", "odd"][j % 3]
            seq = seqs[name]
            seqs[name] += 1
            t = step * STEP_NS + 1e5 + j * 7e5
            for r in groups[name]:
                late = 2e6 if (r == 3 and name != "even") else 0.0  # rank 3 straggles
                a = t + late + rng.uniform(0, 1e5)
                calls[r].append({"gname": name, "size": len(groups[name]), "seq": seq,
                                 "t_issue": a, "t_end": t + 5e5 + rng.uniform(0, 2e5), "op": "all_reduce",
                                 "failed": False})
    calls[5] = [c for c in calls[5] if not (c["gname"] == "odd" and c["seq"] in (4, 9))]  # incomplete
    for c in calls[2][-5:]:
        c["t_end"] = np.nan  # pending at the end of the capture
    calls[1].append({"gname": "world", "size": WORLD, "seq": 0, "t_issue": 1.0, "t_end": 2.0,
                     "op": "send", "failed": False})  # P2P: never matched
    calls[4][7]["failed"] = True  # a failed call is not an arrival
    clocks = {r: RankClock(r, "barrier", (0.0, 3e8), (r * 1e6, r * 1e6 + r * 50.0), 1e3)
              for r in range(WORLD)}
    clocks[0] = RankClock(0, "reference", (0.0,), (0.0,), 0.0)
    procs = []
    for r in range(WORLD):
        rows = pd.DataFrame(calls[r])
        local = {name: i + 10 * r for i, name in enumerate(sorted(set(rows["gname"])))}  # gids differ
        rows["group"] = rows["gname"].map(local)
        rows["group_size"] = rows["size"]
        # each rank's own clock: the reference time minus its offset (inverse of to_reference)
        for col in ("t_issue", "t_end"):
            ref = rows[col].to_numpy("float64")
            c = clocks[r]
            if len(c.offset_ns) == 2:
                slope = (c.offset_ns[1] - c.offset_ns[0]) / (c.t_ref[1] - c.t_ref[0])
                rows[col] = (ref - c.offset_ns[0] + slope * c.t_ref[0]) / (1 + slope)
        g = pd.DataFrame({"gid": list(local.values()), "name": list(local.keys())})
        if r == 4:  # rank 4 restarted: its calls are split across two processes
            half = len(rows) // 2
            procs += [(r, rows.iloc[:half], g), (r, rows.iloc[half:], g)]
        else:
            procs.append((r, rows, g))
    steps0 = pd.DataFrame({"step": np.arange(30), "t_start": np.arange(30) * STEP_NS,
                           "t_end": (np.arange(30) + 1) * STEP_NS})
    return procs, clocks, steps0


def _naive(procs, clocks, steps0, measured):
    """Every definition computed directly on one frame of all calls (reference clock)."""
    rows = []
    for r, coll, _ in procs:
        keep = (coll["op"] != "send") & ~coll["failed"]
        c = coll[keep]
        for t_i, t_e, name, size, seq in zip(c["t_issue"], c["t_end"], c["gname"], c["size"], c["seq"]):
            rows.append({"rank": r, "name": name, "size": size, "seq": seq,
                         "a": float(clocks[r].to_reference(t_i)), "e": float(clocks[r].to_reference(t_e))})
    df = pd.DataFrame(rows)
    n_rows = len(df)
    df["n"] = df.groupby(["name", "seq"])["rank"].transform("size")
    df = df[df["n"] == df["size"]].copy()
    g = df.groupby(["name", "seq"])
    df["L"] = g["a"].transform("max")
    df["wait"] = df["L"] - df["a"]
    inst = g.agg(L=("a", "max"), first_end=("e", "min"), n=("rank", "size"), wait=("a", lambda s: 0.0))
    inst["wait"] = df.groupby(["name", "seq"])["wait"].sum()
    inst["last"] = df.loc[g["a"].idxmax(), ["name", "seq", "rank"]].set_index(["name", "seq"])["rank"]
    inst["transfer"] = np.where(np.isfinite(inst["first_end"]), (inst["first_end"] - inst["L"]).clip(lower=0), 0.0)
    inst["per_other"] = inst["wait"] / (inst["n"] - 1).clip(lower=1)
    inst["margin"] = inst["L"] - df[df["a"] < df["L"]].groupby(["name", "seq"])["a"].max()
    i = np.searchsorted(steps0["t_end"].to_numpy(), inst["L"].to_numpy())
    inst["step"] = steps0["step"].to_numpy()[i]
    df = df.join(inst[["transfer", "step"]], on=["name", "seq"])
    per_rank = df.groupby("rank").agg(wait_ns=("wait", "sum"), transfer_ns=("transfer", "sum"),
                                      instances=("wait", "size"))
    per_rank["last_share"] = inst["last"].value_counts().reindex(per_rank.index, fill_value=0) / len(inst)
    m = df[df["step"].isin(measured)]
    matrix = m.pivot_table(index="step", columns="rank", values="wait", aggfunc="sum").reindex(
        index=sorted(measured), columns=per_rank.index).fillna(0.0)
    caused = inst[inst["step"].isin(measured)].groupby(["step", "last"])["per_other"].sum().unstack(fill_value=0)
    margin = inst.loc[(inst["last"] == 3) & inst["step"].isin(measured), "margin"].median()
    return per_rank, matrix, caused.idxmax(axis=1), len(inst), n_rows - len(df), margin


@pytest.mark.parametrize("budget", [crossrank.SPILL_BUDGET_BYTES, 0], ids=["in-memory", "spilled"])
def test_streamed_matching_equals_the_definitions(budget):
    procs, clocks, steps0 = _processes(np.random.default_rng(7))
    measured = set(range(3, 30))
    calls = crossrank.Calls(budget_bytes=budget)
    for r, coll, groups in procs:
        calls.add(r, coll, groups)
    assert (calls.spilled_bytes > 0) == (budget == 0)
    out = crossrank.analyze(calls, clocks, steps0, measured, WORLD)
    per_rank, matrix, straggler, n_inst, unmatched, margin = _naive(procs, clocks, steps0, measured)
    assert out["instances"] == n_inst and out["unmatched_records"] == unmatched
    got = out["per_rank"].set_index("rank")
    assert got.index.tolist() == per_rank.index.tolist()
    for col in ("wait_ns", "transfer_ns", "last_share"):
        np.testing.assert_allclose(got[col], per_rank[col], rtol=1e-9, atol=1e-3, err_msg=col)
    assert got["instances"].tolist() == per_rank["instances"].tolist()
    for row in out["per_step"]:
        np.testing.assert_allclose(np.array(row["wait_s"]) * 1e9, matrix.loc[row["step"]].to_numpy(),
                                   atol=1e3)  # the report rounds to the µs
        assert row["straggler"] == straggler[row["step"]]
    top = out["stragglers"][0]
    assert top["rank"] == 3 and top["steps_last"] == len(measured) and top["significant"]
    assert top["median_margin_s"] == pytest.approx(margin / 1e9, rel=1e-9)
    assert not calls.parts and calls._spill is None  # consumed, spill removed


def test_a_tie_at_the_last_arrival_has_no_margin():
    clk = {r: RankClock(r, "reference", (0.0,), (0.0,), 0.0) for r in range(2)}
    calls = crossrank.Calls()
    groups = pd.DataFrame({"gid": [0], "name": ["0"]})
    for r in range(2):
        calls.add(r, pd.DataFrame({"op": ["all_reduce"], "group": [0], "group_size": [2], "seq": [0],
                                   "t_issue": [5.0], "t_end": [9.0]}), groups)
    out = crossrank.analyze(calls, clk, pd.DataFrame({"step": [0], "t_start": [0.0], "t_end": [10.0]}),
                            {0}, 2)
    assert out["per_rank"]["wait_ns"].tolist() == [0.0, 0.0]
    assert out["per_rank"]["transfer_ns"].tolist() == [4.0, 4.0]
    assert out["stragglers"] == []  # nobody waited: no straggler
