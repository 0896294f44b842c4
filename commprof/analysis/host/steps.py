"""Step windows of each rank, from the marks the capture recorded.

Boundaries, in order of preference (per rank): explicit ``commprof.step()`` marks (with
``commprof.step_scope()``, the step starts where the block was entered); else the
end of each ``step()`` of the first optimizer that stepped; else the end of each autograd
backward call; else none (whole-run KPIs only).  Step k spans (boundary k-1, boundary k]; the
first step starts at process-group init (or capture start when there is none).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from commprof.format import schema

STEP_SOURCES = ("explicit", "optimizer", "backward", "none")


def step_windows(marks: pd.DataFrame, spans: pd.DataFrame) -> pd.DataFrame:
    """Columns: rank, step, t_start, t_end, source (one row per step and rank)."""
    rows = []
    for rank, m in marks.groupby("rank", sort=True):
        ends, source = _boundaries(m, spans[spans["rank"] == rank])
        if not len(ends):
            continue
        origin = _origin(m, ends[0])
        starts = np.concatenate(([origin], ends[:-1]))
        if source == "explicit":
            starts = _explicit_starts(m, starts, ends)
        rows.append(pd.DataFrame({"rank": rank, "step": np.arange(len(ends)), "t_start": starts,
                                  "t_end": ends, "source": source}))
    if not rows:
        return pd.DataFrame(columns=["rank", "step", "t_start", "t_end", "source"])
    return pd.concat(rows, ignore_index=True)


def _boundaries(m: pd.DataFrame, spans: pd.DataFrame) -> tuple[np.ndarray, str]:
    explicit = m.loc[m["kind"] == schema.MARK_STEP_EXPLICIT, "t"].to_numpy()
    if len(explicit):
        return np.sort(explicit), "explicit"
    opt = m.loc[(m["kind"] == schema.MARK_STEP_OPTIMIZER) & (m["value"] == 0), "t"].to_numpy()
    if len(opt):
        return np.sort(opt), "optimizer"
    bw = spans.loc[spans["kind"] == schema.SPAN_BACKWARD, "t_end"].to_numpy()
    if len(bw):
        return np.sort(bw), "backward"
    return np.zeros(0, dtype="int64"), "none"


def _explicit_starts(m: pd.DataFrame, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A ``step_scope`` begin mark inside (previous end, end] starts that step there instead."""
    begins = np.sort(m.loc[m["kind"] == schema.MARK_STEP_BEGIN, "t"].to_numpy())
    if not len(begins):
        return starts
    starts = starts.astype("float64").copy()
    i = np.searchsorted(begins, ends, side="right") - 1  # last begin at or before each end
    ok = (i >= 0) & (begins[np.maximum(i, 0)] >= starts)
    starts[ok] = begins[i[ok]]
    return starts


def _origin(m: pd.DataFrame, first_end) -> float:
    for kind in (schema.MARK_PG_INIT, schema.MARK_START):
        t = m.loc[(m["kind"] == kind) & (m["t"] < first_end), "t"]
        if len(t):
            return float(t.min())
    return float(first_end)


def measured(steps: pd.DataFrame, warmup: int) -> pd.DataFrame:
    """Steps after warm-up: drop each rank's first ``warmup`` steps, keeping at least one."""
    if not len(steps):
        return steps
    n = steps.groupby("rank")["step"].transform("size")
    skip = np.minimum(warmup, np.maximum(n - 1, 0))
    return steps[steps["step"] >= skip]


def wall_window(marks: pd.DataFrame, coll: pd.DataFrame) -> pd.DataFrame:
    """Per rank: the whole-run window, process-group init → teardown (or exit / last record)."""
    rows = []
    for rank in sorted(set(marks["rank"].unique()) | set(coll["rank"].unique())):
        m = marks[marks["rank"] == rank]
        c = coll[coll["rank"] == rank]
        if not len(m) and not len(c):
            continue
        init = m.loc[m["kind"] == schema.MARK_PG_INIT, "t"]
        start = init.min() if len(init) else (c["t_issue"].min() if len(c) else m["t"].min())
        destroy = m.loc[(m["kind"] == schema.MARK_PG_DESTROY) & (m["value"] == 0), "t"]
        exit_ = m.loc[m["kind"] == schema.MARK_EXIT, "t"]
        last = max(m["t"].max() if len(m) else -np.inf, c["t_end"].max() if len(c) else -np.inf)
        end = destroy.max() if len(destroy) else (exit_.max() if len(exit_) else last)
        rows.append({"rank": rank, "t_start": float(start), "t_end": float(max(end, start)),
                     "start_source": "process_group_init" if len(init) else "first_event",
                     "end_source": "destroy_process_group" if len(destroy) else
                     ("exit" if len(exit_) else "last_record")})
    return pd.DataFrame(rows, columns=["rank", "t_start", "t_end", "start_source", "end_source"])
