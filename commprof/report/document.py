"""The versioned report document (``commprof.report/1``) that every renderer formats.

Contract (docs/report-schema.md): keys may be added, never renamed or removed.  Sizes are bytes,
times seconds, bandwidths GB/s (1e9 bytes/s), fractions in [0, 1]; unknown values are null.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from commprof.analysis.outcome.summary import Summary
from commprof.errors import ReportFileError
from commprof.format import safe_io

SCHEMA = "commprof.report/1"

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


def build(summary: Summary) -> dict:
    """The JSON-ready report document of ``summary``."""
    from commprof.analysis.outcome import advice, whatif
    doc = _build(summary)
    doc["whatif"] = _clean(whatif.scenarios(summary.baseline))
    doc["recommendations"] = _clean(advice.recommendations(doc, doc["whatif"]))
    return doc


def _build(summary: Summary) -> dict:
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


def load(path: str | os.PathLike) -> dict:
    """A report document saved as JSON (``commprof report -o r.json``), checked key by key
    against the whole model (:class:`commprof.report.model.Report`), returned as the plain dict.

    Raises :class:`~commprof.errors.ReportFileError` naming the file and the first bad key.
    """
    from commprof.report.model import Report
    try:
        doc = safe_io.read_json(path, error=ReportFileError)
    except FileNotFoundError as exc:
        raise ReportFileError(path, "no such file") from exc
    if not isinstance(doc, dict):
        raise ReportFileError(path, f"expected a JSON object, got {type(doc).__name__ if not isinstance(doc, list) else 'a list'}")
    schema = doc.get("schema")
    if not isinstance(schema, str) or not schema.startswith("commprof.report/"):
        raise ReportFileError(path, f"not a commprof report (schema {schema!r}, expected {SCHEMA!r})")
    if schema != SCHEMA:
        raise ReportFileError(path, f"report schema {schema!r} is not {SCHEMA!r} "
                                    "(written by another commprof version)")
    Report.from_dict(doc, path)  # every key, recursively; renderers read the plain dict
    return doc
