"""The versioned report document (``commprof.report/1``) that every renderer formats.

Contract (docs/report-schema.md): keys may be added, never renamed or removed.  Sizes are bytes,
times seconds, bandwidths GB/s (1e9 bytes/s), fractions in [0, 1]; unknown values are null.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from commprof.analysis.summary import Summary

SCHEMA = "commprof.report/1"

_OP_KEYS = ["op", "group_size", "count", "bytes", "in_bytes", "out_bytes", "time_s", "p50_s",
            "p99_s", "max_s", "algbw_gbps", "busbw_gbps", "bus_factor", "ranks", "dtype"]
_RANK_KEYS = ["rank", "host", "attempt", "ops", "bytes", "comm_s", "exposed_comm_s",
              "comm_fraction", "exposed_comm_fraction", "comm_fraction_wall",
              "exposed_comm_fraction_wall", "wall_s", "steps", "steps_total", "step_median_s",
              "bytes_per_step", "comm_s_per_step", "exposed_comm_s_per_step", "complete",
              "exit_reason", "last_record_s"]


def build(summary: Summary) -> dict:
    """The JSON-ready report document of ``summary``."""
    steps = dict(summary.step_info)
    return _clean({
        "schema": SCHEMA,
        "run": summary.run,
        "steps": steps,
        "kpis": summary.kpis,
        "ops": _records(summary.ops, _OP_KEYS),
        "ranks": _records(summary.ranks, _RANK_KEYS),
        "overhead": summary.overhead,
        "verdict": summary.verdict,
        "hang": summary.hang,
        "notes": summary.notes,
        "degraded": _records(summary.degraded, ["rank", "where", "count", "error"])
        if summary.degraded is not None else [],
    })


def _records(df: pd.DataFrame, keys: list[str]) -> list[dict]:
    if df is None or not len(df):
        return []
    cols = [k for k in keys if k in df.columns]
    return df[cols].to_dict("records")


def _clean(obj):
    """Plain JSON types: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj
