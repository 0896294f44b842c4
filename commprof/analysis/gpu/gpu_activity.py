"""GPU windows of one capture as frames: ``RankData.gpu_activity`` and ``RankData.gpu_windows``.

``gpu_activity``: one row per kernel / memcpy / memset a window recorded (``cpu`` rows only from
the test hook ``COMMPROF_GPU_ACTIVITY=cpu``), times in ns of the capture's clock (the same axis
as every other frame of the rank); ``name`` and ``category`` are categoricals (the capture keeps a
name table, not a string per record); ``launch_ns`` is nullable (NA: no runtime call matched).
``gpu_windows``: one row per window that was due, recorded or not (docs/format.md, "GPU windows").
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from commprof.analysis.gpu import comm_kernels
from commprof.format import comm_ops, schema

COLUMNS = ["start_ns", "end_ns", "name", "category", "stream", "device", "correlation",
           "launch_ns", "step", "window"]
WINDOW_COLUMNS = ["window", "status", "first_step", "steps_ended", "end_reason", "activity",
                  "t_open", "t_close", "records", "clock_offset_ns", "clock_error_ns", "cost_ns",
                  "trace", "why"]
_CATEGORIES = pd.Index(schema.GPU_CATEGORIES, dtype=object)


def names_table(frames: list[dict]) -> list[str]:
    """The process's GPU name table, from its ``gpu_names`` frames (in any order)."""
    table: list[str | None] = []
    for e in frames:
        first, names = e.get("first", 0), e.get("names") or []
        if (type(first) is not int or not 0 <= first <= len(table) + (1 << 20)
                or not isinstance(names, list)):
            continue  # a malformed name frame: its records read "<unknown>"; no huge table
        if len(table) < first + len(names):
            table.extend([None] * (first + len(names) - len(table)))
        table[first:first + len(names)] = [str(n) for n in names]
    return [n if n is not None else f"<name {i}>" for i, n in enumerate(table)]


def activity_frame(arr: np.ndarray | None, name_frames: list[dict]) -> pd.DataFrame:
    """``gpu_activity`` of one process (no rank columns: the loader adds them); ``name_frames``:
    its ``gpu_names`` frames."""
    if arr is None or not len(arr):
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in COLUMNS})
    names = names_table(name_frames)
    codes = arr["name"].astype("int64")
    unknown = codes >= len(names)
    if unknown.any():  # a name frame lost in a torn tail: keep the record, say so in its name
        names = names + ["<unknown>"]
        codes = np.where(unknown, len(names) - 1, codes)
    cat = arr["category"].astype("int64")
    cat = np.where(cat < len(_CATEGORIES), cat, 0)
    launch = arr["launch_ns"].astype("int64")
    launch_ns = pd.array(launch, dtype="Int64")
    launch_ns[launch == schema.NO_LAUNCH] = pd.NA
    return pd.DataFrame({
        "start_ns": arr["start_ns"], "end_ns": arr["end_ns"],
        "name": pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype=object)),
        "category": pd.Categorical.from_codes(cat, categories=_CATEGORIES),
        "stream": arr["stream"], "device": arr["device"].astype("int64"),
        "correlation": arr["correlation"],
        "launch_ns": launch_ns,
        "step": arr["step"].astype("int64"), "window": arr["window"].astype("int64"),
    })


def comm_intervals(activity: pd.DataFrame, rank: int) -> pd.DataFrame:
    """The communication kernels of ``gpu_activity`` as a GPU timing source
    (:data:`commprof.format.comm_ops.COMM_INTERVAL_COLUMNS`): windows record kernels and launches
    only, so the kernel's name decides (:func:`commprof.analysis.gpu.comm_kernels.classify`)."""
    rule, _ = comm_kernels.classify(activity)
    c = activity[rule != ""]
    start, end = c["start_ns"].to_numpy("int64"), c["end_ns"].to_numpy("int64")
    names = c["name"].astype(str).to_numpy()
    return comm_ops.intervals_frame(rank, names, "", start, end, end - start, names, "gpu_window")


def _dtype(col: str):
    return {"name": "category", "category": "category", "launch_ns": "Int64"}.get(col, "int64")


def windows_frame(frames: list[dict]) -> pd.DataFrame:
    """One row per window: recorded (``gpu_window`` frames) or skipped (the job's own profiler;
    ``gpu_window_skipped`` events), from :attr:`~commprof.analysis.host.capture_events.CaptureEvents.
    gpu_windows`."""
    rows = []
    for e in frames:
        if e.get("type") == "gpu_window":
            clock = e.get("clock") or {}
            rows.append({"window": e.get("window"), "status": "recorded",
                         "first_step": e.get("first_step"), "steps_ended": e.get("steps_ended"),
                         "end_reason": e.get("end_reason"), "activity": e.get("activity"),
                         "t_open": e.get("t_open"), "t_close": e.get("t_close"),
                         "records": (e.get("stats") or {}).get("records"),
                         "clock_offset_ns": clock.get("offset_ns"),
                         "clock_error_ns": clock.get("error_ns"),
                         "cost_ns": sum((e.get("cost_ns") or {}).values()), "trace": e.get("trace"),
                         "why": None})
        elif e.get("type") == "event" and e.get("event") == "gpu_window_skipped":
            rows.append({"window": e.get("window"), "status": "skipped",
                         "first_step": e.get("first_step"), "why": e.get("why")})
    df = pd.DataFrame(rows, columns=WINDOW_COLUMNS)
    return df.sort_values("window", kind="stable", ignore_index=True) if len(df) else df


def window_stats(windows: list[dict], yielded: int, off: dict | None) -> dict:
    """The process row's GPU-window figures: counts (``windows`` as :func:`windows_frame` reads
    them; ``yielded``: windows closed for the job's profiler), and why windows were off (``off``:
    the last ``gpu_windows_off`` event, or None)."""
    recorded = sum(1 for e in windows if e.get("type") == "gpu_window")
    return {"gpu_windows_recorded": recorded, "gpu_windows_skipped": len(windows) - recorded,
            "gpu_windows_yielded": yielded, "gpu_windows_off": off.get("why") if off else None}
