"""``commprof try``'s decision for one fix: quality within the baseline's measured noise, time
to target, run-to-run spread and machine load (docs/try.md, "How a fix is judged").

The statistics are :mod:`commprof.analysis.outcome.convergence`'s; this module reads them off the runs'
typed reports (one per run: run *i* of every side ran with seed offset *i*, so the sides are
paired by seed) and words the verdict.
"""
from __future__ import annotations

import numpy as np

from commprof.analysis.outcome import convergence as cv
from commprof.analysis.result.model import MetricSeries, Report

LOAD_TOLERANCE = 0.15  # compute time per step: a change beyond this that no fix explains = load
ADDS_COMPUTE = ("bf16-compress", "fp16-compress", "powersgd")  # casts, matrix products


def _warmup(report: Report) -> int:
    return int(report.steps.warmup or 0)


def loss_curve(report: Report, start: int) -> cv.Curve | None:
    """The run's loss per step from step ``start``, with each step's mean duration over ranks."""
    loss = report.training.loss if report.training else None
    if not loss:
        return None
    durations = {int(r.step): float(r.duration_mean_s) for r in report.steps.per_step
                 if r.duration_mean_s is not None}
    return cv.Curve.of(loss.steps, loss.values, start, durations)


def _metrics(report: Report) -> list[MetricSeries]:
    return (report.training.metrics if report.training else None) or []


def metric_of(report: Report, name: str) -> MetricSeries | None:
    return next((m for m in _metrics(report) if m.name == name), None)


def common_metric(reports: list[Report], wanted: str | None = None) -> str | None:
    """The metric every run reported (``wanted`` if given, else the first name in order)."""
    names = None
    for d in reports:
        mine = [m.name for m in _metrics(d)]
        names = mine if names is None else [n for n in names if n in mine]
    if wanted is not None:
        return wanted if names and wanted in names else None
    return names[0] if names else None


def _metric_stat(m: MetricSeries) -> cv.Stat:
    """A metric's statistic: its mean over the last quarter of its reports (one report: itself)."""
    values = np.asarray(m.values, dtype=np.float64)
    k = max(1, int(np.ceil(cv.TAIL_FRACTION * len(values)))) if len(values) >= 4 else 1
    tail = values[-k:]
    return cv.Stat(float(np.mean(tail)), float(np.std(tail, ddof=1) / np.sqrt(k)) if k > 1 else None, k)


def _spread(values: list[float]) -> float | None:
    """(max − min) ÷ mean of per-run values; None with one run."""
    vals = [v for v in values if v is not None]
    return (max(vals) - min(vals)) / float(np.mean(vals)) if len(vals) > 1 and np.mean(vals) else None


def _run_means(reports: list[Report], key: str) -> list[float | None]:
    return [getattr(d.kpis, key) for d in reports]


def diverged(base: list[cv.Curve], fix: list[cv.Curve]) -> str | None:
    """Why the fix's training diverged: its runs lack the finite loss of more than a tenth of the
    steps the baseline has one for (the report's curve leaves out NaN and inf), or a run's tail
    mean (:func:`convergence.statistic`) is above the highest loss any baseline run had after the
    warm-up (the loss grew instead of falling); or None."""
    if not base:
        return None
    want = min(len(c.values) for c in base)
    have = min((len(c.values) for c in fix), default=0)
    if want and have < 0.9 * want:
        return f"diverged: a finite loss on {have} of the baseline's {want} steps"
    ceiling = max(float(np.max(c.values)) for c in base if len(c.values))
    tails = [s.value for s in (cv.statistic(c) for c in fix) if s is not None]
    if tails and max(tails) > ceiling:
        return (f"diverged: its loss over the last steps ({max(tails):.4g}) is above any the baseline "
                f"had after the warm-up ({ceiling:.4g})")
    return None


def machine_load(base_reports: list[Report], fix_reports: list[Report], fix: str) -> str | None:
    """Why the timings are unreliable (a change in compute time per step the fix cannot
    explain), or None."""
    b, f = _run_means(base_reports, "compute_s_per_step"), _run_means(fix_reports, "compute_s_per_step")
    spread = _spread(b)
    if spread is not None and spread > LOAD_TOLERANCE:
        return (f"the baseline's compute time per step differs {spread:.0%} between its runs "
                "(machine load: no fix ran there)")
    bm = [x for x in b if x is not None]
    fm = [x for x in f if x is not None]
    if not bm or not fm:
        return None
    change = float(np.mean(fm)) / float(np.mean(bm)) - 1
    if change < -LOAD_TOLERANCE:
        return f"compute time per step fell {-change:.0%} with {fix}, which no fix does (machine load)"
    if change > LOAD_TOLERANCE and not any(fix.startswith(p) or f",{p}" in fix for p in ADDS_COMPUTE):
        return f"compute time per step rose {change:.0%} with {fix}, which adds no compute (machine load)"
    return None


def decide(base_reports: list[Report], fix_reports: list[Report], fix: str, warmup: int,
           metric: str | None = None) -> dict:
    """The judgement of ``fix_reports`` against ``base_reports`` (see the module docstring).
    ``warmup``: the steps left out at the start of every run (the comparison's warm-up)."""
    name = common_metric(base_reports + fix_reports, metric)
    start = max([warmup] + [_warmup(d) for d in base_reports + fix_reports])
    base_curves = [c for c in (loss_curve(r, start) for r in base_reports) if c is not None and len(c.values)]
    fix_curves = [c for c in (loss_curve(r, start) for r in fix_reports) if c is not None and len(c.values)]
    loss_base = [cv.statistic(c) for c in base_curves]
    if name:
        higher = bool(metric_of(base_reports[0], name).higher_is_better)
        quality = cv.judge([_metric_stat(metric_of(d, name)) for d in base_reports],
                           [_metric_stat(metric_of(d, name)) for d in fix_reports], higher)
        basis = f"{name} (the job's metric, {'higher' if higher else 'lower'} is better)"
    else:
        quality = cv.judge(loss_base, [cv.statistic(c) for c in fix_curves])
        basis = "training loss alone (the job reports no metric: commprof.metric, docs/try.md)"
    short = cv.too_short(base_curves, cv.noise_band(loss_base), start) if base_curves else {
        "too_short": False, "why": "no loss recorded: the run's length is not checked", "steps_needed": None}
    speed = cv.effective_speedup(base_curves, fix_curves)
    t_base, t_fix = _run_means(base_reports, "step_time_s"), _run_means(fix_reports, "step_time_s")
    lost = diverged(base_curves, fix_curves)
    if lost:
        quality = dict(quality, verdict="worse", diverged=lost)
    verdict = quality["verdict"]
    if short["too_short"] and verdict != "worse":
        verdict = "too short"
    return {"basis": basis, "metric": name, **quality, "quality_verdict": quality["verdict"],
            "verdict": verdict, "short": short,
            "time_to_target": speed, "runs": len(fix_reports), "baseline_runs": len(base_reports),
            "step_times_base": t_base, "step_times": t_fix,
            "spread_base": _spread(t_base), "spread": _spread(t_fix),
            "machine_load": machine_load(base_reports, fix_reports, fix)}


def verdict_line(d: dict) -> str:
    """E.g. "val_acc: −0.3 % (noise ±1.1 %): ok" (:func:`commprof.gate.output.quality_line`)."""
    from commprof.gate.output import quality_line
    return quality_line(d, "one baseline run")


def lines(d: dict, fix: str) -> list[str]:
    """The judgement's lines under a fix's comparison."""
    from commprof.format.units import fmt_seconds
    out = [verdict_line(d), f"judged on: {d['basis']}"
           + ("" if d["paired"] else " (runs not paired by seed)")]
    from commprof.gate.output import time_to_target_line
    if d["time_to_target"]["target"] is not None:
        out.append(time_to_target_line(d["time_to_target"]))

    def runs(xs):
        return ", ".join(fmt_seconds(x) for x in xs if x is not None)

    spread = [f"baseline {runs(d['step_times_base'])}", f"{fix} {runs(d['step_times'])}"]
    sp = ", ".join(f"{k} {v * 100:.1f} %" for k, v in (("baseline", d["spread_base"]), (fix, d["spread"]))
                   if v is not None)
    out.append(f"step time per run: {'; '.join(spread)}"
               + (f" (run-to-run spread: {sp})" if sp else " (one run per side: no run-to-run spread)"))
    if d["machine_load"]:
        out.append(f"timing unreliable: {d['machine_load']}")
    return out


def choose(results: list[dict], tolerance: float | None = None) -> tuple[dict | None, list[tuple[dict, str]]]:
    """The fix to apply: among those that applied, changed the bytes as they say, were judged
    ``ok`` on a run long enough, and reach the baseline's final loss sooner than it (effective
    speed-up > 1; the step-time speed-up when no loss was recorded) — the one with the largest
    effective speed-up.  ``tolerance``: also reject a fix worse by more than this fraction.
    Returns it (or None) and why each was chosen or rejected."""
    verdicts, ok = [], []
    for r in results:
        j = r["judgement"]
        gain = _gain(r)
        if not r["applied"]:
            why = f"rejected: did not apply ({r['why'] or ', '.join(r['status'])})"
        elif r["bytes_ok"] is False:
            why = "rejected: bytes did not change as the fix says"
        elif j["verdict"] == "worse":
            why = f"rejected: {verdict_line(j)}"
        elif j["verdict"] == "too short":
            why = f"no verdict: {verdict_line(j)}"
        elif j["verdict"] != "ok":
            why = f"rejected: not shown to be within noise ({verdict_line(j)})"
        elif tolerance is not None and (j["worse_by"] or 0) > tolerance:
            why = f"rejected: {j['metric'] or 'loss'} {j['worse_by']:.1%} worse (> --loss-tolerance {tolerance:.1%})"
        elif j["time_to_target"]["target"] is not None and not j["time_to_target"]["reached"]:
            why = ("rejected: does not reach the baseline's final loss within twice the baseline's steps "
                   "(its run, extrapolated by a fit of its curve)")
        elif not gain or gain <= 1:
            why = "rejected: not faster to the target than the baseline"
        else:
            ok.append(r)
            why = "candidate"
        if r["judgement"]["machine_load"] and why == "candidate":
            why = f"candidate, timing unreliable ({r['judgement']['machine_load']})"
        verdicts.append((r, why))
    best = max(ok, key=_gain) if ok else None
    chosen = "chosen: fastest to the target within the noise"
    if best is not None and best["judgement"]["machine_load"]:
        chosen += f"; timing unreliable ({best['judgement']['machine_load']})"
    verdicts = [(r, chosen if r is best else v) for r, v in verdicts]
    return best, verdicts


def _gain(r: dict) -> float | None:
    """The effective speed-up (time to target), else the step-time one when no loss was recorded."""
    t = r["judgement"]["time_to_target"]
    return t["speedup"] if t["target"] is not None else r["speedup"]
