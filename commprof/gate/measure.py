"""What a run measured, in the form gates compare: per-step series and whole-run values.

Three inputs, one result (:class:`Measurements`): a run directory (analysed here), a saved report
(``commprof report -o r.json``) or a baseline (``commprof report --save-baseline b.json``,
schema ``commprof.baseline/1``: the same numbers, compact enough to commit).

Values are the report's KPIs (``kpis``: one number per KPI, the same as every report shows), read
from the typed :class:`~commprof.analysis.result.model.Report`; a baseline's ``op_sizes`` and
``training`` are the report's sections, checked against the same model when the file is read.
Per-step series — the report's ``steps.per_step`` rows, one per measured step — give the spread
for confidence intervals: a bootstrap over steps of the same statistic (a mean, a ratio of sums
for the time-weighted fractions, a median for ``*_median`` metrics).  ``skip_steps`` leaves out
further leading steps; ``"auto"`` takes the report's own warm-up (its measured steps), so the
values equal the report's.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from commprof.analysis.measures import kpi_registry as registry
from commprof.analysis.measures.kpis import DEFAULT_WARMUP
from commprof.analysis.result.model import Assessment, OpSizeRow, Report, Training
from commprof.errors import ReportFileError, UsageError
from commprof.format import typed
from commprof.format.units import parse_size
from commprof.gate.stats import mean, median, ratio_of_sums

BASELINE_SCHEMA = "commprof.baseline/1"
REPORT_PREFIX = "commprof.report/"
# per-step series: name -> field of steps.per_step rows (means or medians over ranks of that step)
SERIES = {"step_time_mean": "duration_mean_s", "comm_s": "comm_s", "exposed_s": "exposed_s",
          "bytes_per_step": "bytes", "step_time_median": "duration_s",
          "comm_fraction_step_median": "comm_fraction",
          "exposed_comm_fraction_step_median": "exposed_comm_fraction"}
# values: gate name -> field of the report's kpis (the report's numbers), from the KPI registry
VALUES = {g.name: g.kpi for g in registry.gate_metrics() if g.kpi}


@dataclass
class Measurements:
    """One side of a comparison."""

    source: str
    kind: str  # "run", "report" or "baseline"
    run: dict  # command, world_size, backend, path, versions, time_basis (a baseline's "run")
    series: dict[str, np.ndarray]
    values: dict[str, float | None]
    op_sizes: list[OpSizeRow] = field(default_factory=list)
    skipped_steps: int = 0
    steps_total: int = 0
    training: Training | None = None  # the report's training section: loss curve, fixes (docs/try.md)
    assessment: Assessment | None = None  # the report's verdict, when the values are the report's
    step_durations: dict[int, float] | None = None  # step -> mean duration over ranks (s)

    def verdict(self):
        """The verdict of these values (:func:`commprof.analysis.outcome.verdict.assess`: the same level
        and words as the report of the same run — the report's own, which rests on the savings
        model's per-step projection and the measured waiting, when the values are its)."""
        from commprof.analysis.outcome.verdict import Verdict, assess
        if self.assessment is not None:
            return Verdict(**{k: getattr(self.assessment, k) for k in Verdict.__dataclass_fields__})
        return assess({"time_basis": self.run.get("time_basis"),
                       "comm_fraction": self.values.get("comm_fraction"),
                       "exposed_comm_fraction": self.values.get("exposed_comm_fraction"),
                       "comm_fraction_wall": self.values.get("comm_fraction_wall"),
                       "exposed_comm_fraction_wall": self.values.get("exposed_comm_fraction_wall")})

    def draws(self, name: str):
        """(per-step arrays, statistic) that a bootstrap over steps resamples for ``name``, or
        None: the statistic of the arrays is the metric's value (docs/ci.md)."""
        s = self.series
        if name in ("comm_fraction", "exposed_comm_fraction"):
            num = s.get("comm_s" if name == "comm_fraction" else "exposed_s")
            den = s.get("step_time_mean")
            if num is None or den is None or len(num) != len(den) or len(num) < 1:
                return None
            return (num, den), ratio_of_sums
        if name in ("step_time", "bytes_per_step"):
            x = s.get("step_time_mean" if name == "step_time" else name)
            return ((x,), mean) if x is not None and len(x) else None
        if name in SERIES and s.get(name) is not None and len(s[name]):
            return (s[name],), median
        return None


def load(path: str | os.PathLike, skip_steps: int | str = "auto") -> Measurements:
    """Measurements of a run directory, profiler traces, a saved report or a baseline file."""
    from commprof.analysis.outcome.sources import summarize_path
    from commprof.analysis.outcome.trace_summary import is_trace_input
    p = Path(path)
    if p.is_dir() or is_trace_input(p):
        from commprof.analysis.outcome.assemble import assemble
        kind = "traces" if is_trace_input(p) else "run"
        return from_document(assemble(summarize_path(str(p), DEFAULT_WARMUP)), str(p), kind, skip_steps)
    if not p.exists():
        raise UsageError(f"{p}: no such run directory, report or baseline")
    from commprof.format import safe_io
    doc = safe_io.read_json(p, error=ReportFileError)  # regular file, bounded, depth and numbers checked
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


def from_document(report: Report, source: str, kind: str, skip_steps: int | str) -> Measurements:
    """The measurements of ``report`` (a run's, traces' or a saved report): its measured steps
    (less ``skip_steps`` more, or none more with ``"auto"``) and its KPIs."""
    rows = sorted(report.steps.per_step or [], key=lambda r: r.step)
    if skip_steps == "auto":
        skip = 0  # the report's measured steps: its warm-up already left out
    else:
        skip = int(skip_steps)
        if skip < 0:
            raise UsageError(f"--skip-steps {skip_steps}: must be >= 0 or 'auto'")
    kept = rows[skip:] if skip < len(rows) else rows[-1:]
    series = {name: _finite([getattr(r, key) for r in kept]) for name, key in SERIES.items()}
    k = report.kpis
    values = {name: getattr(k, key) for name, key in VALUES.items()}
    if skip:  # fewer steps than the report measured: the values of the steps kept
        values.update(_step_values(series))
    job = report.run
    run = {"command": job.command, "world_size": job.world_size, "backend": job.backend,
           "path": job.path, "torch_version": job.torch_version,
           "commprof_version": job.commprof_version, "time_basis": k.time_basis or "host"}
    if run["time_basis"] == "host_launch":  # launch times are not communication time
        series = {n: (x if n in ("step_time_mean", "step_time_median", "bytes_per_step")
                      else np.zeros(0)) for n, x in series.items()}
    warmup = int(report.steps.warmup or 0)
    return Measurements(source, kind, run, series, values, list(report.op_sizes or []),
                        skip + warmup, len(rows) + warmup, report.training,
                        None if skip else report.assessment,
                        {int(s.step): float(s.duration_mean_s) for s in rows
                         if s.duration_mean_s is not None})


def _step_values(series: dict[str, np.ndarray]) -> dict[str, float | None]:
    """The step KPIs of the kept steps (when ``skip_steps`` leaves out more than the report)."""
    t, c, e = series["step_time_mean"], series.get("comm_s"), series.get("exposed_s")
    c, e = (x if x is not None else np.zeros(0) for x in (c, e))
    ok = len(t) and len(t) == len(c) == len(e) and t.sum() > 0
    return {"step_time": float(t.mean()) if len(t) else None,
            "comm_fraction": float(c.sum() / t.sum()) if ok else None,
            "exposed_comm_fraction": float(e.sum() / t.sum()) if ok else None,
            "bytes_per_step": float(series["bytes_per_step"].mean())
            if len(series.get("bytes_per_step", ())) else None}


def _upgrade_series(old: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Series of a baseline saved before the time-weighted KPIs (per-step medians of step time
    and of the fractions): each step's times from its fraction × its step time."""
    t = old["step_time"]
    out = {"step_time_mean": t, "step_time_median": t}
    for frac, part in (("comm_fraction", "comm_s"), ("exposed_comm_fraction", "exposed_s")):
        if frac in old and len(old[frac]) == len(t):
            out[part] = old[frac] * t
            out[f"{frac}_step_median"] = old[frac]
    if "bytes_per_step" in old:
        out["bytes_per_step"] = old["bytes_per_step"]
    return out


def _finite(values) -> np.ndarray:
    x = np.array([np.nan if v is None else v for v in values], float)
    return x[np.isfinite(x)]


def baseline_document(m: Measurements) -> dict:
    """The compact, committable form of ``m`` (``commprof.baseline/1``)."""
    return {"schema": BASELINE_SCHEMA, "created_wall_ns": time.time_ns(), "source": m.source,
            "run": m.run, "skipped_steps": m.skipped_steps, "steps_total": m.steps_total,
            "series": {k: [round(float(v), 9) for v in x] for k, x in m.series.items()},
            "values": m.values, "op_sizes": [r.to_dict() for r in m.op_sizes],
            **({"training": m.training.to_dict()} if m.training is not None else {})}


def from_baseline(doc: dict, source: str) -> Measurements:
    series = doc.get("series")
    if not isinstance(series, dict) or not isinstance(doc.get("values"), dict):
        raise ReportFileError(source, "baseline lacks its 'series' or 'values' object")
    out = {}
    for name, x in series.items():
        if not isinstance(x, list) or not all(isinstance(v, (int, float)) for v in x):
            raise ReportFileError(source, f"series.{name}: expected a list of numbers")
        out[name] = np.array(x, float)
    values = dict(doc["values"])
    if "step_time_mean" not in out and "step_time" in out:  # written before the KPIs were
        out = _upgrade_series(out)                         # time-weighted
        values.update({k: v for k, v in _step_values(out).items() if values.get(k) is None})
    return Measurements(source, "baseline", doc.get("run") or {}, out, values,
                        _baseline_op_sizes(doc.get("op_sizes"), source),
                        int(doc.get("skipped_steps") or 0), int(doc.get("steps_total") or 0),
                        _baseline_training(doc.get("training"), source))


def _baseline_op_sizes(rows, source: str) -> list[OpSizeRow]:
    """A baseline's ``op_sizes`` (the report's rows, saved as they were), checked row by row."""
    if not rows:
        return []
    if not isinstance(rows, list):
        raise ReportFileError(source, f"op_sizes: expected a list, got {typed.describe(rows)}")
    return [typed.parse(OpSizeRow, row, source, f"op_sizes[{i}]") for i, row in enumerate(rows)]


def _baseline_training(section, source: str) -> Training | None:
    """A baseline's ``training`` (the report's section), checked; None when it has none."""
    return typed.parse(Training, section, source, "training") if isinstance(section, dict) else None


def save_baseline(m: Measurements, path: str | os.PathLike) -> None:
    tmp = Path(str(path) + ".tmp")
    try:
        tmp.write_text(json.dumps(baseline_document(m), indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from exc


# -- a metric's value (gate rules and compare) ------------------------------------------------

# busbw:OP[:SIZE+]: the bus bandwidth of one op, over its calls of at least SIZE
BUSBW_METRIC = re.compile(r"^busbw:([a-z_]+)(?::([0-9.]+[A-Za-z]*)\+)?$")


def metric_value(m: Measurements, name: str) -> tuple[float | None, np.ndarray | None]:
    """(value, per-step series or None) of ``name`` in ``m``."""
    b = BUSBW_METRIC.match(name)
    if b:
        op, size = b.group(1), size_in_rule(b.group(2), name) if b.group(2) else 0
        rows = [r for r in m.op_sizes if r.op == op and r.count and r.bytes / r.count >= size]
        t = sum(r.time_s for r in rows)
        return (sum(r.bus_bytes for r in rows) / t / 1e9 if t > 0 else None), None
    draws = m.draws(name)
    value = m.values.get(name)
    if value is None and draws is not None:  # a *_median metric: the median of its series
        value = float(draws[1](*draws[0]))
    return value, draws


def size_in_rule(text: str, rule: str) -> float:
    """A size written in a metric or rule (``1MB``), in bytes; a UsageError naming ``rule``."""
    try:
        return float(parse_size(text))
    except ValueError as exc:
        raise UsageError(f"{rule}: {exc}") from exc
