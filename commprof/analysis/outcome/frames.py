"""The public, documented frames of a run: :func:`commprof.load_run` (docs/data.md).

A :class:`Run` reads nothing until a frame is asked for; each frame is built on first access and
cached.  They come from the report's own code: the capture frames of :mod:`analysis.host.load` (the
one reader) and, for ``steps``, ``ranks``, ``ops`` and ``links``, the report's reduction
(:func:`analysis.outcome.summary.summarize`, run once, when the first of those four is asked for).
Columns and dtypes are fixed by the ``*_COLUMNS`` tables below (:data:`SCHEMA` names the version):
a frame always has them, empty or not.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from commprof.analysis.cross import clocks
from commprof.analysis.host import load, steps as steps_mod
from commprof.analysis.measures.collectives import add_sizes
from commprof.analysis.measures.kpis import DEFAULT_WARMUP, RANK_STEP_COLUMNS
from commprof.format import schema

SCHEMA = "commprof.data/1"
FRAMES = ("calls", "waits", "steps", "ranks", "ops", "links", "gpu_kernels", "hang")

# name -> dtype (pandas).  "category" columns hold strings; "Int64"/"boolean" are nullable.
CALLS_COLUMNS = {
    "rank": "int64", "attempt": "int64", "pid": "int64", "id": "int64", "thread": "uint64",
    "group": "category", "gid": "int64", "group_size": "int64", "seq": "int64", "op": "category",
    "bytes": "int64", "bus_bytes": "float64", "in_bytes": "int64", "out_bytes": "int64",
    "dtype": "category", "peer": "int64", "t_issue": "int64", "t_return": "int64",
    "t_done": "float64", "t_end": "float64", "wait_start": "float64", "wait_end": "float64",
    "duration_ns": "float64", "t_issue_r0": "float64", "t_end_r0": "float64",
    "done_source": "category", "blocking": "bool", "in_backward": "bool", "failed": "bool",
    "step": "Int64",
}
WAITS_COLUMNS = {"rank": "int64", "attempt": "int64", "pid": "int64", "thread": "uint64",
                 "t_start": "int64", "t_end": "int64", "source": "category", "call_id": "Int64"}
STEPS_COLUMNS = {"rank": "int64", "step": "int64", "t_start": "float64", "t_end": "float64",
                 "source": "category", "measured": "bool", "duration_s": "float64",
                 "comm_s": "float64", "exposed_s": "float64", "comm_fraction": "float64",
                 "exposed_comm_fraction": "float64", "bytes": "float64", "bus_bytes": "float64",
                 "ops": "float64"}
RANKS_COLUMNS = {"rank": "int64", "host": "object", "attempt": "int64", "ops": "int64",
                 "bytes": "int64", "complete": "bool", "exit_reason": "object",
                 "training_thread": "Int64", "last_record_s": "float64", "wall_s": "float64",
                 "comm_s": "float64", "exposed_comm_s": "float64",
                 "comm_fraction_wall": "float64", "exposed_comm_fraction_wall": "float64",
                 **{c: "float64" for c in RANK_STEP_COLUMNS},
                 "wait_s": "float64", "transfer_s": "float64", "last_share": "float64"}
OPS_COLUMNS = {"op": "object", "group_size": "int64", "count": "float64", "bytes": "float64",
               "in_bytes": "float64", "out_bytes": "float64", "time_s": "float64",
               "p50_s": "float64", "p99_s": "float64", "max_s": "float64",
               "algbw_gbps": "float64", "busbw_gbps": "float64", "bus_factor": "float64",
               "ranks": "int64", "dtype": "object", "gpu_time_s": "float64",
               "gpu_busbw_gbps": "float64", "time_source": "object"}
LINKS_COLUMNS = {"host": "object", "source": "object", "device": "object", "loopback": "bool",
                 **{f"{d}_{m}": "float64" for d in ("tx", "rx")
                    for m in ("bytes", "mean_Bps", "peak_Bps", "comm_Bps")},
                 "logical_bus_bytes": "float64", "wire_to_logical": "float64"}
GPU_KERNELS_COLUMNS = {"rank": "int64", "attempt": "int64", "pid": "int64", "start_ns": "int64",
                       "end_ns": "int64", "name": "category", "category": "category",
                       "stream": "int64", "device": "int64", "correlation": "int64",
                       "launch_ns": "Int64", "step": "int64", "window": "int64"}
HANG_COLUMNS = {"rank": "int64", "host": "object", "pid": "Int64", "exited": "boolean",
                "state": "object", "pending_count": "int64", "last_record_age_s": "float64",
                "last_completed_op": "object", "last_completed_group": "object",
                "last_completed_seq": "Int64", "pending_op": "object", "pending_group": "object",
                "pending_seq": "Int64", "pending_peer": "Int64", "pending_bytes": "Int64",
                "pending_age_s": "float64"}
COLUMNS = {"calls": CALLS_COLUMNS, "waits": WAITS_COLUMNS, "steps": STEPS_COLUMNS,
           "ranks": RANKS_COLUMNS, "ops": OPS_COLUMNS, "links": LINKS_COLUMNS,
           "gpu_kernels": GPU_KERNELS_COLUMNS, "hang": HANG_COLUMNS}
_WAIT_SOURCES = {schema.WAIT_WORK: "work_wait", schema.WAIT_TENSOR: "wait_tensor",
                 schema.WAIT_SYNC_API: "blocking_call"}


def conform(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Exactly ``columns``, in order, with their dtypes (missing ones filled with NA)."""
    out = {}
    for name, dtype in columns.items():
        col = df[name] if name in df else pd.Series([None] * len(df), index=df.index, dtype=object)
        if dtype == "category":  # strings (an empty column: no categories, object)
            col = col if isinstance(col.dtype, pd.CategoricalDtype) else (
                col.astype(object).where(col.notna(), None).astype("category"))
        elif dtype == "object":
            col = col.astype(object).where(col.notna(), None)
        elif dtype == "bool":
            col = col.fillna(False).astype(bool)
        elif dtype in ("Int64", "boolean"):
            col = pd.array(col.astype(object).where(col.notna(), None).tolist(), dtype=dtype)
        else:
            col = pd.to_numeric(col, errors="coerce").astype(dtype) if dtype == "float64" else col.astype(dtype)
        out[name] = pd.Series(col, index=df.index) if not isinstance(col, pd.Series) else col
    return pd.DataFrame(out).reset_index(drop=True)


class Run:
    """One run directory as lazy pandas frames (docs/data.md).  Attributes: ``path``,
    ``manifest``, ``notes`` (what the reader had to say), ``complete`` (False while the job is
    still writing: the frames hold what was flushed), ``warmup`` (steps left out of ``measured``)."""

    def __init__(self, path=None, warmup: int = DEFAULT_WARMUP):
        self._source = load.open_run(path)  # checks the directory now: a bad path fails here
        self.path: Path = self._source.path
        self.manifest: dict = self._source.manifest
        self.warmup = int(warmup)
        self.built: list[str] = []  # the frames built so far, in order (laziness, for the curious)

    def __repr__(self) -> str:
        return f"commprof.Run({str(self.path)!r}, built={self.built})"

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") != "running"

    @property
    def notes(self) -> list[str]:
        """The reader's notes (once the captures are read: damaged files too)."""
        return list(self.__dict__["_data"].notes if "_data" in self.__dict__ else self._source.notes)

    @cached_property
    def _data(self) -> load.Run:
        """Every capture, read once (the report's reader), for the capture-level frames."""
        return load.load_run(self._source.dirs if len(self._source.dirs) > 1 else self.path)

    @cached_property
    def _summary(self):
        """The report's reduction of the run (steps, ranks, ops, links)."""
        from commprof.analysis.outcome.summary import summarize
        return summarize(self._data, warmup=self.warmup)

    def _built(self, name: str, df: pd.DataFrame) -> pd.DataFrame:
        self.built.append(name)
        return conform(df, COLUMNS[name])

    def frame(self, name: str) -> pd.DataFrame:
        if name not in FRAMES:
            raise KeyError(f"{name}: no such frame (frames: {', '.join(FRAMES)})")
        return getattr(self, name)

    @cached_property
    def calls(self) -> pd.DataFrame:
        return self._built("calls", build_calls(self._data))

    @cached_property
    def waits(self) -> pd.DataFrame:
        w = self._data.waits.copy()
        w["source"] = w["source"].map(_WAIT_SOURCES).fillna("other") if len(w) else w["source"]
        w["call_id"] = w["id"].where(w["id"] >= 0) if len(w) else w["id"]
        return self._built("waits", w)

    @cached_property
    def steps(self) -> pd.DataFrame:
        s = self._summary.steps.copy()
        meas = steps_mod.measured(s, self.warmup)
        s["measured"] = s.index.isin(meas.index) if len(s) else pd.Series(dtype=bool)
        return self._built("steps", s)

    @cached_property
    def ranks(self) -> pd.DataFrame:
        return self._built("ranks", self._summary.ranks)

    @cached_property
    def ops(self) -> pd.DataFrame:
        return self._built("ops", self._summary.ops)

    @cached_property
    def links(self) -> pd.DataFrame:
        rows = (self._summary.links or {}).get("interfaces", [])
        return self._built("links", pd.DataFrame(rows))

    @cached_property
    def gpu_kernels(self) -> pd.DataFrame:
        g = self._data.gpu_activity
        if g is None:
            g = pd.DataFrame()
        elif len(g):
            g = g[g["category"].astype(str) != "cpu"]
        return self._built("gpu_kernels", g)

    @cached_property
    def hang(self) -> pd.DataFrame:
        return self._built("hang", hang_frame(self._source.hang))


def build_calls(data: load.Run) -> pd.DataFrame:
    """One row per collective / P2P call of every rank (see :data:`CALLS_COLUMNS`)."""
    c = add_sizes(data.collectives)
    c = c.rename(columns={"group": "gid"})
    c["bytes"] = c["size_bytes"]
    c["peer"] = c["peer_global"]
    c["blocking"] = ~c["async_op"].astype(bool)
    names = {(int(r), int(g)): str(n) for r, g, n in
             zip(data.groups["rank"], data.groups["gid"], data.groups["name"])}
    key = (c["rank"].to_numpy().astype("int64") << 32) | c["gid"].to_numpy().astype("int64")
    uniq, inverse = np.unique(key, return_inverse=True)
    label = np.array([names.get((int(k >> 32), int(k & 0xFFFFFFFF)), str(int(k & 0xFFFFFFFF)))
                      for k in uniq], dtype=object)
    c["group"] = pd.Categorical(label[inverse]) if len(c) else pd.Categorical([])
    c["step"] = _step_of_calls(c, steps_mod.step_windows(data.marks, data.spans))
    c["t_issue_r0"], c["t_end_r0"] = _on_rank0_clock(c, data)
    return c


def _step_of_calls(c: pd.DataFrame, windows: pd.DataFrame) -> pd.array:
    """The step whose (t_start, t_end] holds each call's issue (the report's rule), else NA."""
    out = np.full(len(c), -1, dtype="int64")
    for rank, w in windows.groupby("rank"):
        rows = np.flatnonzero(c["rank"].to_numpy() == rank)
        a, b = w["t_start"].to_numpy("float64"), w["t_end"].to_numpy("float64")
        issue = c["t_issue"].to_numpy("float64")[rows]
        idx = np.searchsorted(b, issue, side="left")
        inside = (idx < len(b)) & (issue > a[np.minimum(idx, len(b) - 1)])
        out[rows[inside]] = w["step"].to_numpy("int64")[idx[inside]]
    step = pd.array(out, dtype="Int64")
    step[out < 0] = pd.NA
    return step


def _on_rank0_clock(c: pd.DataFrame, data: load.Run) -> tuple[np.ndarray, np.ndarray]:
    """t_issue and t_end moved onto rank 0's clock (the report's alignment: docs/kpis.md)."""
    issue = c["t_issue"].to_numpy("float64").copy()
    end = c["t_end"].to_numpy("float64").copy()
    if not len(c) or data.processes["rank"].nunique() < 2:
        return issue, end
    rank_clocks = clocks.align(clocks.sync_marks(data.marks), data.processes)
    ranks = c["rank"].to_numpy()
    for rank, clock in rank_clocks.items():
        rows = ranks == rank
        issue[rows] = clock.to_reference(issue[rows])
        end[rows] = clock.to_reference(end[rows])
    return issue, end


def hang_frame(hang: dict | None) -> pd.DataFrame:
    """One row per rank of ``hang.json`` (none when no hang was seen)."""
    if not hang:
        return pd.DataFrame()
    state: dict[int, str] = {}
    for entry in hang.get("blocked", []):
        for key, name in (("not_captured", "not_captured"), ("never_arrived", "never_arrived"),
                          ("waiting_ranks", "waiting")):
            for r in entry.get(key, []):
                state.setdefault(int(r), name)
    rows = []
    for r in hang.get("ranks", []):
        last = r.get("last_completed") or {}
        pend = (r.get("pending") or [{}])[0] or {}
        rows.append({"rank": r["rank"], "host": r.get("host"), "pid": r.get("pid"),
                     "exited": r.get("exited"), "state": state.get(int(r["rank"]), "idle"),
                     "pending_count": r.get("pending_count", 0),
                     "last_record_age_s": r.get("last_record_age_s"),
                     "last_completed_op": last.get("op"), "last_completed_group": last.get("group"),
                     "last_completed_seq": last.get("seq"), "pending_op": pend.get("op"),
                     "pending_group": pend.get("group"), "pending_seq": pend.get("seq"),
                     "pending_peer": pend.get("peer"), "pending_bytes": pend.get("bytes"),
                     "pending_age_s": pend.get("age_s")})
    return pd.DataFrame(rows)

