"""Load a run directory into per-rank pandas DataFrames (the analyses' only input).

:func:`load_run` reads every capture file through :mod:`commprof.format.reader` and returns a
:class:`Run` whose frames carry a ``rank`` column (and ``attempt`` for torchrun restarts).
Times stay in integer nanoseconds of each process's monotonic clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from commprof.errors import RunDirError
from commprof.format import reader, schema
from commprof.launch.rundir import latest_run


@dataclass
class Run:
    """One run directory, loaded."""

    path: Path
    manifest: dict
    processes: pd.DataFrame  # one row per captured process (rank, attempt, host, pid, ...)
    collectives: pd.DataFrame  # one row per collective / P2P call, with completion merged in
    waits: pd.DataFrame  # rank, thread, t_start, t_end, source, id
    marks: pd.DataFrame  # rank, kind, t, value
    spans: pd.DataFrame  # rank, kind, thread, t_start, t_end
    groups: pd.DataFrame  # rank, gid, name, desc, size, backend, ranks
    degraded: pd.DataFrame  # rank, where, count, error
    notes: list[str] = field(default_factory=list)  # damaged files, bootstrap failures, ...


_PROC_KEYS = ["rank", "attempt", "pid"]


def load_run(path: str | Path | None = None) -> Run:
    """Load ``path`` (default: the latest run under ./commprof-runs)."""
    run_dir = Path(path) if path is not None else latest_run()
    if not run_dir.exists():
        raise RunDirError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a directory")
    manifest = reader.read_manifest(run_dir)
    paths = reader.capture_paths(run_dir)
    if not paths:
        errs = sorted((run_dir / "ranks").glob("bootstrap-*.err"))
        why = (f"; {errs[0].name}: {errs[0].read_text().strip()}" if errs else
               " (see docs/troubleshooting.md: python -I/-E, a job that never imports torch, ...)")
        raise RunDirError(f"{run_dir / 'ranks'}: no capture files: no process of the job was "
                          f"captured, or none initialised a process group, called a collective or "
                          f"stepped an optimizer{why}")
    caps = [reader.read_capture(p) for p in paths]
    notes = [f"{c.path.name}: {c.damage}; records before it were kept" for c in caps if c.damage]
    if manifest.get("status") == "running":
        notes.append("the run has not finished, or its `commprof run` was killed: this covers what "
                     "the workers had flushed so far")
    missing = sorted({m for c in caps for m in c.header.get("missing_ops", [])})
    if missing:
        notes.append("this torch has no " + ", ".join(missing) + " operator(s): such calls are not "
                     "captured")
    for err in sorted((run_dir / "ranks").glob("bootstrap-*.err")):
        notes.append(f"{err.name}: {err.read_text().strip()}")
    caps = _latest_attempts(caps)
    procs, colls, waits, marks, spans, groups, degraded = [], [], [], [], [], [], []
    for cap in caps:
        h = cap.header
        key = {"rank": cap.rank, "attempt": int(h.get("restart", 0)), "pid": int(h.get("pid", -1))}
        a = cap.arrays
        procs.append(dict(key, host=h.get("host"), world_size=h.get("world_size"),
                          local_rank=h.get("local_rank"), complete=cap.complete,
                          exit_reason=(cap.trailer or {}).get("reason"), damage=cap.damage,
                          torch_version=h.get("torch_version"), file=cap.path.name,
                          clock_wall_ns=h.get("clock", {}).get("wall_ns"),
                          clock_mono_ns=h.get("clock", {}).get("mono_ns"),
                          missing_ops=",".join(h.get("missing_ops", []))))
        colls.append(_with_key(_collectives(a["coll"], a["done"], a["wait"]), key))
        waits.append(_with_key(pd.DataFrame(a["wait"]), key))
        marks.append(_with_key(pd.DataFrame(a["mark"]), key))
        spans.append(_with_key(pd.DataFrame(a["span"]), key))
        for g in cap.groups:
            groups.append(dict(key, gid=g["id"], name=g.get("name"), desc=g.get("desc"),
                               size=g.get("size"), group_rank=g.get("rank"),
                               backend=g.get("backend"), ranks=g.get("ranks")))
        for e in cap.events:
            if e.get("type") == "degraded":
                degraded.append(dict(key, where=e["where"], count=e["count"], error=e["error"]))
    empty_groups = pd.DataFrame(columns=_PROC_KEYS + ["gid", "name", "desc", "size", "group_rank",
                                                      "backend", "ranks"])
    groups_df = pd.DataFrame(groups) if groups else empty_groups
    if degraded:
        degraded_df = (pd.DataFrame(degraded).groupby(_PROC_KEYS + ["where"], as_index=False)
                       .agg(count=("count", "max"), error=("error", "first")))
    else:
        degraded_df = pd.DataFrame(columns=_PROC_KEYS + ["where", "count", "error"])
    coll_df = _concat(colls, _collectives(*(np.empty(0, reader.DTYPES[k]) for k in (
        schema.KIND_COLL, schema.KIND_DONE, schema.KIND_WAIT))))
    coll_df = _attach_groups(coll_df, groups_df)
    return Run(
        path=run_dir.resolve(), manifest=manifest,
        processes=pd.DataFrame(procs, columns=_PROC_KEYS + ["host", "world_size", "local_rank",
                                                            "complete", "exit_reason", "damage",
                                                            "torch_version", "file",
                                                            "clock_wall_ns", "clock_mono_ns",
                                                            "missing_ops"]),
        collectives=coll_df,
        waits=_concat(waits, pd.DataFrame(np.empty(0, reader.DTYPES[schema.KIND_WAIT]))),
        marks=_concat(marks, pd.DataFrame(np.empty(0, reader.DTYPES[schema.KIND_MARK]))),
        spans=_concat(spans, pd.DataFrame(np.empty(0, reader.DTYPES[schema.KIND_SPAN]))),
        groups=groups_df, degraded=degraded_df, notes=notes)


def _latest_attempts(caps: list[reader.RankCapture]) -> list[reader.RankCapture]:
    """Keep each rank's last torchrun attempt (earlier attempts are not mixed into the KPIs)."""
    def attempt(cap):
        return int(cap.header.get("restart", 0) or 0)
    last: dict[int, int] = {}
    for cap in caps:
        last[cap.rank] = max(last.get(cap.rank, -1), attempt(cap))
    return [cap for cap in caps if attempt(cap) == last[cap.rank]]


def _with_key(df: pd.DataFrame, key: dict) -> pd.DataFrame:
    for name, value in key.items():
        if name not in df:
            df.insert(0, name, value)
    return df


def _concat(frames: list[pd.DataFrame], empty: pd.DataFrame) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return _with_key(empty, {"rank": 0, "attempt": 0, "pid": 0}).iloc[0:0]
    return pd.concat(frames, ignore_index=True)


def _collectives(coll: np.ndarray, done: np.ndarray, wait: np.ndarray) -> pd.DataFrame:
    """COLL records joined with their completion and their first matched Python wait."""
    df = pd.DataFrame(coll)
    df["op"] = np.asarray(schema.OPS, dtype=object)[df["op"].to_numpy()] if len(df) else []
    df["dtype"] = np.asarray(schema.DTYPES, dtype=object)[df["dtype"].to_numpy()] if len(df) else []
    flags = df["flags"].to_numpy() if len(df) else np.zeros(0, np.uint8)
    df["in_backward"] = (flags & schema.FLAG_IN_BACKWARD) != 0
    df["failed"] = (flags & schema.FLAG_FAILED) != 0
    d = pd.DataFrame(done)
    fut = d[d["source"] == schema.DONE_FUTURE].groupby("id")["t_done"].min()
    matched = pd.DataFrame(wait)
    matched = matched[matched["id"] >= 0]
    w = matched.groupby("id").agg(wait_start=("t_start", "min"), wait_end=("t_end", "max"))
    df = df.join(fut.rename("t_future"), on="id").join(w, on="id")
    # Completion: the future callback if any, else the end of a Python wait on the Work.
    df["t_done"] = df["t_future"].fillna(df["wait_end"])
    df["done_source"] = np.where(df["t_future"].notna(), "future",
                                 np.where(df["wait_end"].notna(), "wait", "unknown"))
    # Synchronous: torch.distributed's own blocking call waited on the Work (async_op=False).
    sync = matched.loc[matched["source"] == schema.WAIT_SYNC_API, "id"].unique()
    df["async_op"] = ~df["id"].isin(sync)
    # End of the in-flight interval: completion, or the call's return when it was not seen.
    # (Waits are added to the in-flight union separately: see analysis/exposure.py.)
    df["t_end"] = np.fmax(df["t_done"].to_numpy(dtype="float64"),
                          df["t_return"].to_numpy(dtype="float64"))
    return df


def _attach_groups(coll: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    if not len(coll):
        for col in ("group_name", "group_desc", "group_size", "backend"):
            coll[col] = pd.Series(dtype=object)
        return coll
    g = groups.rename(columns={"gid": "group", "name": "group_name", "desc": "group_desc",
                               "size": "group_size"})[_PROC_KEYS + ["group", "group_name",
                                                                   "group_desc", "group_size",
                                                                   "backend"]]
    out = coll.merge(g, on=_PROC_KEYS + ["group"], how="left")
    out["group_size"] = out["group_size"].fillna(1).astype("int64")
    ranks = groups.set_index(_PROC_KEYS + ["gid"])["ranks"].to_dict()
    keys = zip(out["rank"], out["attempt"], out["pid"], out["group"], out["peer"])
    out["peer_global"] = [_global_peer(ranks.get((r, a, p, g)), peer) for r, a, p, g, peer in keys]
    return out


def _global_peer(group_ranks, peer: int) -> int:
    """Global rank of a group-local peer/root (-1 when none or unknown)."""
    if peer < 0:
        return -1
    if isinstance(group_ranks, list) and peer < len(group_ranks):
        return int(group_ranks[peer])
    return int(peer)
