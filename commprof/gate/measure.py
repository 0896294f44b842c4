"""What a run measured, in the form gates compare: per-step series and whole-run values.

Three inputs, one result (:class:`Measurements`): a run directory (analysed here), a saved report
(``commprof report -o r.json``) or a baseline (``commprof report --save-baseline b.json``,
schema ``commprof.baseline/1``: the same numbers, compact enough to commit).

Per-step series are the report's ``steps.per_step`` rows — for each measured step, the median over
ranks — after skipping warm-up steps: ``skip_steps`` given, or detected (``"auto"``: leading steps
slower than median + 3·MAD, at most a quarter of them).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from commprof.errors import ReportFileError, UsageError
from commprof.gate.stats import detect_warmup

BASELINE_SCHEMA = "commprof.baseline/1"
REPORT_PREFIX = "commprof.report/"
# per-step series: name -> key of steps.per_step rows
SERIES = {"step_time": "duration_s", "comm_fraction": "comm_fraction",
          "exposed_comm_fraction": "exposed_comm_fraction", "bytes_per_step": "bytes"}
# whole-run values: name -> key of the report's kpis
VALUES = {"comm_fraction_wall": "comm_fraction_wall",
          "exposed_comm_fraction_wall": "exposed_comm_fraction_wall",
          "bus_bytes_per_step": "bus_bytes_per_step", "algbw": "algbw_gbps", "busbw": "busbw_gbps"}


@dataclass
class Measurements:
    """One side of a comparison."""

    source: str
    kind: str  # "run", "report" or "baseline"
    run: dict
    series: dict[str, np.ndarray]
    values: dict[str, float | None]
    op_sizes: list[dict] = field(default_factory=list)
    skipped_steps: int = 0
    steps_total: int = 0

    def median(self, name: str) -> float | None:
        x = self.series.get(name)
        if x is not None and len(x):
            return float(np.median(x))
        return self.values.get(name)


def load(path: str | os.PathLike, skip_steps: int | str = "auto") -> Measurements:
    """Measurements of a run directory, a saved report or a baseline file."""
    p = Path(path)
    if p.is_dir():
        from commprof.cli.report import build_document
        return from_document(build_document(str(p), warmup=0), str(p), "run", skip_steps)
    if not p.exists():
        raise UsageError(f"{p}: no such run directory, report or baseline")
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportFileError(p, f"not readable as JSON: {exc}") from exc
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema == BASELINE_SCHEMA:
        return from_baseline(doc, str(p))
    if isinstance(schema, str) and schema.startswith(REPORT_PREFIX):
        from commprof.report.document import load as load_document
        return from_document(load_document(p), str(p), "report", skip_steps)
    if isinstance(schema, str) and schema.startswith("commprof.baseline/"):
        raise ReportFileError(p, f"baseline schema {schema!r} is not {BASELINE_SCHEMA!r} "
                                 "(written by another commprof version): save it again")
    raise ReportFileError(p, f"neither a commprof report nor a baseline (schema {schema!r})")


def from_document(doc: dict, source: str, kind: str, skip_steps: int | str) -> Measurements:
    rows = sorted(doc["steps"].get("per_step") or [], key=lambda r: r.get("step", 0))
    durations = np.array([r.get("duration_s") or np.nan for r in rows], float)
    if skip_steps == "auto":
        skip = detect_warmup(durations[np.isfinite(durations)])
    else:
        skip = int(skip_steps)
        if skip < 0:
            raise UsageError(f"--skip-steps {skip_steps}: must be >= 0 or 'auto'")
    kept = rows[skip:] if skip < len(rows) else rows[-1:]
    series = {name: _finite([r.get(key) for r in kept]) for name, key in SERIES.items()}
    k = doc.get("kpis", {})
    values = {name: k.get(key) for name, key in VALUES.items()}
    run = {key: doc["run"].get(key) for key in ("command", "world_size", "backend", "path",
                                                 "torch_version", "commprof_version")}
    return Measurements(source, kind, run, series, values, list(doc.get("op_sizes") or []),
                        skip + int(doc["steps"].get("warmup") or 0), len(rows) + int(doc["steps"].get("warmup") or 0))


def _finite(values) -> np.ndarray:
    x = np.array([np.nan if v is None else v for v in values], float)
    return x[np.isfinite(x)]


def baseline_document(m: Measurements) -> dict:
    """The compact, committable form of ``m`` (``commprof.baseline/1``)."""
    return {"schema": BASELINE_SCHEMA, "created_wall_ns": time.time_ns(), "source": m.source,
            "run": m.run, "skipped_steps": m.skipped_steps, "steps_total": m.steps_total,
            "series": {k: [round(float(v), 9) for v in x] for k, x in m.series.items()},
            "values": m.values, "op_sizes": m.op_sizes}


def from_baseline(doc: dict, source: str) -> Measurements:
    series = doc.get("series")
    if not isinstance(series, dict) or not isinstance(doc.get("values"), dict):
        raise ReportFileError(source, "baseline lacks its 'series' or 'values' object")
    out = {}
    for name, x in series.items():
        if not isinstance(x, list) or not all(isinstance(v, (int, float)) for v in x):
            raise ReportFileError(source, f"series.{name}: expected a list of numbers")
        out[name] = np.array(x, float)
    return Measurements(source, "baseline", doc.get("run") or {}, out, doc["values"],
                        list(doc.get("op_sizes") or []), int(doc.get("skipped_steps") or 0),
                        int(doc.get("steps_total") or 0))


def save_baseline(m: Measurements, path: str | os.PathLike) -> None:
    tmp = Path(str(path) + ".tmp")
    try:
        tmp.write_text(json.dumps(baseline_document(m), indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from exc
