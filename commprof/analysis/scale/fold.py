"""Folding each process's reduction into a run's state as it arrives (:func:`summary.summarize`):
what can be merged is merged at once, and per-process frames are compacted, so the state of a run
of 10,000 processes stays small (docs/scaling.md, "Bounded state")."""
from __future__ import annotations

import numpy as np
import pandas as pd

from commprof.analysis.cross import crossrank
from commprof.analysis.host.rank import RankResult
from commprof.analysis.measures import intervals, latency

STEP_CHUNK = 256  # per-process step frames concatenated this many at a time


class Fold:
    """The run so far: its parts (steps, sketches and in-flight windows taken out), the
    cross-rank matching columns, the clock probes, merged latency sketches and step rows."""

    def __init__(self, sampled: bool, warmup: int = 0):
        self.sampled = sampled
        self.warmup = warmup
        self.parts: list = []
        self.calls = crossrank.Calls()
        self.syncs: list[pd.DataFrame] = []
        self.latency: dict = {}  # (op, group size) -> the ranks' sketches merged
        self.windows: dict[str, tuple] = {}  # host -> in-flight union of its ranks (when sampled)
        self._step_chunks: list[pd.DataFrame] = []
        self._steps: list[pd.DataFrame] = []
        self._empty: dict[str, pd.DataFrame] = {}

    def add(self, res: RankResult) -> None:
        """Fold one process in."""
        part = res.part
        self.calls.add_columns(res.rank, res.match_names, res.match_rows)
        if len(res.sync) or not self.syncs:
            self.syncs.append(res.sync)
        for key, lat in part.latency.items():
            old = self.latency.get(key)
            self.latency[key] = lat if old is None else latency.merge([old, lat])
        part.latency = {}
        if self.sampled and part.inflight is not None and len(part.inflight[0]):
            host = str(part.row["host"])
            old = self.windows.get(host, (np.zeros(0), np.zeros(0)))
            self.windows[host] = intervals.union(np.concatenate([old[0], part.inflight[0]]),
                                                 np.concatenate([old[1], part.inflight[1]]))
        part.inflight = None
        part.step_ops = measured_op_bytes(part.step_ops, part.steps, self.warmup)
        if len(part.steps):
            self._steps.append(part.steps)
            if len(self._steps) >= STEP_CHUNK:
                self._step_chunks.append(pd.concat(self._steps, ignore_index=True))
                self._steps = []
        part.steps = None  # in step_rows() now
        for name in ("degraded", "losses", "buckets"):  # one shared empty frame, not one each
            frame = getattr(part, name)
            if isinstance(frame, pd.DataFrame) and not len(frame):
                shared = self._empty.setdefault(name, frame)
                if shared is not frame and shared.dtypes.equals(frame.dtypes):
                    setattr(part, name, shared)
        self.parts.append(part)

    def step_rows(self) -> list[pd.DataFrame]:
        """Every process's step rows, in arrival order (for :func:`kpis.finish_steps`)."""
        return self._step_chunks + self._steps


def measured_op_bytes(step_ops: pd.DataFrame | None, steps: pd.DataFrame | None, warmup: int
                      ) -> pd.DataFrame | None:
    """One process's per (process group, op, group size): S and calls over its measured steps
    (``bytes``, ``count``: the first ``warmup`` steps left out, at least one kept, as
    :func:`commprof.analysis.host.steps.measured`) and over the whole run (``bytes_run``,
    ``count_run``), with ``steps`` the number of measured steps (0 without steps)."""
    if step_ops is None:
        return None
    n = int(len(steps)) if steps is not None else 0
    skip = min(warmup, max(n - 1, 0))
    first = int(np.sort(steps["step"].to_numpy("int64"))[skip]) if n else None
    keys = ["group", "group_desc", "op", "group_size"]
    meas = step_ops["step"] >= first if first is not None else np.zeros(len(step_ops), bool)
    out = step_ops.assign(b=step_ops["bytes"].where(meas, 0.0), k=step_ops["count"].where(meas, 0))
    out = out.groupby(keys, as_index=False).agg(bytes=("b", "sum"), count=("k", "sum"),
                                                 bytes_run=("bytes", "sum"), count_run=("count", "sum"))
    return out.assign(steps=n - skip)
