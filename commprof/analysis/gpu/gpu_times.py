"""GPU-side durations of collectives (NCCL with CUDA-event timing), matched to commprof's records.

Flight Recorder entries (capture/flight_recorder.py) carry the process group's name, the op's
profiling name (``nccl:all_reduce``), the wall-clock time the op was created and, with
``TORCH_NCCL_ENABLE_TIMING=1``, ``duration_ms`` measured by CUDA events on the collective's stream.
Each commprof record is matched to the entry of the same group and op whose creation time is
nearest its issue time (converted to wall clock through the capture's anchor), within
``TOLERANCE_NS``; sequence numbers are not used because Flight Recorder also counts ops commprof
leaves out of the job's records (its own clock probes).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from commprof.format import comm_ops

TOLERANCE_NS = 20_000_000
FR_COLUMNS = ["group", "op", "t_created_wall", "gpu_duration_ns", "seq", "is_p2p", "name"]


def fr_frame(frames: list[dict]) -> tuple[pd.DataFrame, dict]:
    """(entries with GPU timing, {"seen", "lost"}) from a capture's ``fr`` JSON frames."""
    rows, stats = [], {"seen": 0, "lost": 0, "version": None}
    for ev in frames:
        stats.update(seen=ev.get("seen", 0), lost=ev.get("lost", 0), version=ev.get("version"))
        for e in ev.get("entries", []):
            if e.get("duration_ms") is None:
                continue
            pg = e.get("process_group") or [None, None]
            name = str(e.get("profiling_name") or "")
            rows.append({"group": str(pg[0]), "op": comm_ops.canonical_op(name),
                         "t_created_wall": float(e.get("time_created_ns") or np.nan),
                         "gpu_duration_ns": float(e["duration_ms"]) * 1e6,
                         "seq": e.get("collective_seq_id"), "is_p2p": bool(e.get("is_p2p")), "name": name})
    return pd.DataFrame(rows, columns=FR_COLUMNS), stats


def comm_intervals(fr: pd.DataFrame, rank: int) -> pd.DataFrame:
    """Flight Recorder's timed entries as a GPU timing source (:data:`commprof.format.comm_ops.
    COMM_INTERVAL_COLUMNS`): durations only, so ``start_ns``/``end_ns`` are NA."""
    return comm_ops.intervals_frame(rank, fr["op"], fr["group"], None, None, fr["gpu_duration_ns"],
                                    fr["name"], "flight_recorder")


def attach(coll: pd.DataFrame, fr: pd.DataFrame, group_names: dict, wall_minus_mono: float | None
           ) -> pd.Series:
    """GPU duration (ns) of each record of ``coll`` (NaN where no entry matched)."""
    out = pd.Series(np.nan, index=coll.index, dtype="float64")
    if not len(fr) or not len(coll) or wall_minus_mono is None:
        return out
    c = pd.DataFrame({"idx": coll.index, "group": [group_names.get(g, f"gid{g}") for g in coll["group"]],
                      "op": coll["op"].astype(str).str.replace("_coalesced", "", regex=False),
                      "t": coll["t_issue"].to_numpy("float64") + wall_minus_mono})
    f = fr.assign(op=fr["op"].str.replace("_coalesced", "", regex=False))
    for (group, op), mine in c.groupby(["group", "op"]):
        theirs = f[(f["group"] == group) & (f["op"] == op)].sort_values("t_created_wall")
        if not len(theirs):
            continue
        m = pd.merge_asof(mine.sort_values("t"), theirs[["t_created_wall", "gpu_duration_ns"]],
                          left_on="t", right_on="t_created_wall", direction="nearest",
                          tolerance=TOLERANCE_NS)
        out.loc[m["idx"].to_numpy()] = m["gpu_duration_ns"].to_numpy()
    return out
