"""One assembler: a run's or profiler traces' :class:`Summary` into the typed :class:`Report`
(``commprof.report/1``, docs/report-schema.md) that renderers, ``gate`` and ``try`` read.

Contract: keys may be added, never renamed or removed.  Sizes are bytes, times seconds, bandwidths
GB/s (1e9 bytes/s), fractions in [0, 1]; unknown values are null.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from commprof.analysis.outcome import advice, whatif
from commprof.analysis.outcome.summary import Summary
from commprof.analysis.result.model import SCHEMA, Recommendation, Report
from commprof.format import typed

__all__ = ["assemble", "SCHEMA"]
SOURCE = "<analysis>"  # what a ReportFileError names when the analysis itself produced a bad value

_OP_KEYS = ["op", "group_size", "count", "bytes", "in_bytes", "out_bytes", "time_s", "p50_s",
            "p99_s", "max_s", "algbw_gbps", "busbw_gbps", "bus_factor", "ranks", "dtype",
            "gpu_time_s", "gpu_busbw_gbps", "time_source", "bytes_per_step", "calls_per_step"]
_RANK_KEYS = ["rank", "host", "attempt", "ops", "bytes", "comm_s", "exposed_comm_s",
              "comm_fraction", "exposed_comm_fraction", "comm_fraction_step_median",
              "exposed_comm_fraction_step_median", "comm_fraction_wall",
              "exposed_comm_fraction_wall", "wall_s", "steps", "steps_total", "step_median_s", "step_mean_s",
              "bytes_per_step", "comm_s_per_step", "exposed_comm_s_per_step", "complete",
              "exit_reason", "last_record_s", "last_collective", "wait_s", "transfer_s", "last_share",
              "gpu"]


def assemble(summary: Summary) -> Report:
    """The report of ``summary`` (a run's or profiler traces'): one typed :class:`Report`, the
    object every renderer, ``gate`` and ``try`` read.  ``report.to_dict()`` is the JSON document
    ``commprof.report/1``.

    Every value is checked against the model as it is assembled: a wrong type is a bug of the
    analysis and raises :class:`~commprof.errors.ReportFileError` naming the key (``<analysis>``).
    """
    plain = _plain(summary)
    plain["whatif"] = _clean(whatif.scenarios(summary.baseline))
    plain["recommendations"] = []  # read from the typed what-if rows just below
    report = Report.from_dict(plain, SOURCE)
    report.recommendations = [typed.parse(Recommendation, r, SOURCE, f"recommendations[{i}]")
                              for i, r in enumerate(_clean(advice.recommendations(report)))]
    return report


def _plain(summary: Summary) -> dict:
    """The document's sections as JSON values, in the contract's key order."""
    steps = dict(summary.step_info)
    return _clean({
        "schema": SCHEMA,
        "run": summary.run,
        "steps": steps,
        "kpis": summary.kpis,
        "ops": _records(summary.ops, _OP_KEYS),
        "ranks": _records(summary.ranks, _RANK_KEYS),
        "overhead": summary.overhead,
        "verdict": summary.verdict.sentence,
        "assessment": summary.verdict.to_dict(),
        "hang": summary.hang,
        "links": summary.links,
        "op_sizes": _op_sizes(summary.op_sizes),
        "op_groups": _records(summary.op_groups, ["group", "group_desc", "op", "group_size", "ranks",
                                                  "count", "bytes", "calls_per_step", "bytes_per_step"]),
        "stragglers": (summary.cross_rank or {}).get("stragglers", []),
        "clock_alignment": summary.clock_alignment,
        "cross_rank": None if summary.cross_rank is None else {
            "instances": summary.cross_rank["instances"],
            "unmatched_records": summary.cross_rank["unmatched_records"],
            "per_step": summary.cross_rank["per_step"]},
        "notes": [n.text for n in summary.notes],
        "note_items": [n.to_dict() for n in summary.notes],
        "degraded": _records(summary.degraded, ["rank", "where", "count", "error"])
        if summary.degraded is not None else [],
        **({"training": summary.training} if summary.training else {}),
        **({"gpu_comm": summary.gpu_comm} if summary.gpu_comm else {}),
    })


def _op_sizes(df: pd.DataFrame | None) -> list[dict]:
    """Calls per (op, group size, size bucket [2^bucket, 2^(bucket+1)) bytes), all ranks summed."""
    if df is None or not len(df):
        return []
    out = df.assign(time_s=df["time_ns"] / 1e9).drop(columns=["time_ns"])
    return _records(out, ["op", "group_size", "bucket", "count", "bytes", "bus_bytes", "time_s"])


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
