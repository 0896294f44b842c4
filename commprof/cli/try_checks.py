"""``commprof try``'s checks around each fix (docs/try.md): rule a fix out before running it
when the baseline lacks its target, check its bytes per op, project it through the what-if, and
local SGD's loss spread across ranks and last averaging step.  The pure logic is
:mod:`commprof.fixes.checks`; the run's facts come from :mod:`commprof.gate.runfacts`.
"""
from __future__ import annotations

from pathlib import Path

from commprof.analysis.result.model import Report

_FACTS: dict[tuple, dict | None] = {}


def facts_of(run: Path, report: Report) -> dict | None:
    """:func:`commprof.gate.runfacts.run_facts`, once per run and measured steps."""
    from commprof.gate.runfacts import run_facts
    key = (str(Path(run).resolve()), tuple(r.step for r in report.steps.per_step))
    if key not in _FACTS:
        _FACTS[key] = run_facts(run, report)
    return _FACTS[key]


def merged_facts(runs, reports: list[Report]) -> dict | None:
    """The facts of one side's runs: per-op bytes averaged over its runs, the rest of the first."""
    facts = [f for f in (facts_of(r, d) for r, d in zip(runs, reports)) if f]
    if not facts:
        return None
    out = dict(facts[0])
    ops = sorted({op for f in facts for op in f["ops"]})
    out["ops"] = {op: {k: sum(f["ops"].get(op, {}).get(k, 0.0) for f in facts) / len(facts)
                       for k in ("bytes", "backward")} for op in ops}
    out["fixes"] = [e for f in facts for e in f.get("fixes") or []]
    return out


def applicable_input(report: Report) -> dict:
    """What :func:`commprof.fixes.checks.applicable` reads of the baseline's report, as the plain
    dict it works on (commprof/fixes works on plain dicts): the run's backend and the ops' names."""
    return {"run": {"backend": report.run.backend}, "ops": [{"op": o.op} for o in report.ops]}


def rule_out(specs: list[str], base_run: Path, base_report: Report, fix_warmup: int, say
             ) -> tuple[list[str], list[tuple[str, str]]]:
    """(the specs to run, [(spec, why not)] for those the baseline cannot take)."""
    from commprof.fixes import parse
    from commprof.fixes.checks import applicable
    facts = facts_of(base_run, base_report)
    kept, ruled = [], []
    for spec in specs:
        ok, why = applicable(parse(spec, fix_warmup), applicable_input(base_report), facts)
        if ok:
            kept.append(spec)
        else:
            ruled.append((spec, why))
            say(f"not running {spec}: {why}")
    return kept, ruled


_COMPUTE: dict[tuple, float | None] = {}


def compute_estimates(fixes, base_facts: dict | None) -> dict:
    """Fix spec -> seconds of compute it adds per step, estimated on this CPU from the
    baseline's DDP model (PowerSGD: :func:`commprof.fixes.projection.time_powersgd`, once per
    model and rank); fixes that add none are left out."""
    from commprof.fixes.catalog import PowerSGD
    from commprof.fixes.projection import time_powersgd
    model = (base_facts or {}).get("ddp_model")
    out = {}
    for f in fixes:
        if isinstance(f, PowerSGD):
            key = (repr(model), f.rank)
            if key not in _COMPUTE:
                _COMPUTE[key] = time_powersgd(model, f.rank)
            out[f.spec] = _COMPUTE[key]
    return out


def measured_compute(report: Report) -> float | None:
    """A run's compute per step: its mean step minus its exposed communication."""
    t, e = report.kpis.step_time_s, report.kpis.exposed_comm_s_per_step
    return t - e if t is not None and e is not None else None


def fix_checks(base, side, fixes, projector) -> dict:
    """Per-op bytes rows, whether they hold, the projection (``projector(**whatif)``: the
    what-if on the baseline's first run) from the baseline alone
    (:func:`commprof.fixes.projection.change_for`, its compute estimated), the projection with
    the compute change the fix's first run measured (``calibrated``: against its later runs),
    and local SGD's checks."""
    from commprof.fixes.checks import bytes_checks, bytes_ok, local_sgd_checks, projected_bytes_div
    from commprof.fixes.projection import change_for, whatif_keywords
    bf = merged_facts(base.runs, base.docs)
    ff = merged_facts(side.runs, side.docs)
    rows = bytes_checks(fixes, bf, ff)
    change = change_for(fixes, bf, compute_estimates(fixes, bf))
    if not change.get("bytes_div") and not change.get("sync_every"):
        div = projected_bytes_div(rows)  # a baseline without its model's shapes: the fix's own word
        change = dict(change, bytes_div=div) if div is not None else {}
    projected = projector(**whatif_keywords(change)) if change else None
    return {"bytes_ops": rows, "bytes_ok": bytes_ok(rows), "projection": change or None,
            "projected_step_time": projected, "calibrated": calibrated(base, side, change, projector),
            "local_sgd": local_sgd_checks(fixes, bf, ff)}


def calibrated(base, side, change: dict, projector) -> dict | None:
    """The projection with the compute change the fix's first run measured (its compute per
    step minus the baseline's first run's) in place of the estimate, against the mean step of
    the fix's later runs; None with one run or unknown compute."""
    from commprof.fixes.projection import whatif_keywords
    if not change or len(side.docs) < 2 or not base.docs:
        return None
    cf, cb = measured_compute(side.docs[0]), measured_compute(base.docs[0])
    later = [d.kpis.step_time_s for d in side.docs[1:] if d.kpis.step_time_s]
    if cf is None or cb is None or not later:
        return None
    projected = projector(**whatif_keywords(dict(change, compute_add_s=cf - cb)))
    measured = sum(later) / len(later)
    return {"compute_add_s": cf - cb, "projected_step_time": projected, "later_runs_step_time": measured,
            "measured_vs_projected": measured / projected if projected else None}


def projection_lines(a: dict) -> list[str]:
    """The what-if's projection of a fix and, with several runs, its calibrated projection."""
    from commprof.format.units import fmt_seconds
    if a.get("projected_step_time") is None:
        return []
    change = a.get("projection") or {}
    parts = []
    if change.get("bytes_ratio") is not None:
        parts.append(f"PowerSGD's bytes x{change['bytes_ratio']:.3g} from the model's shapes")
    if change.get("compute_known") is True:
        parts.append(f"its compression +{fmt_seconds(change['compute_add_s'])}/step timed on this CPU")
    elif change.get("compute_known") is False:
        parts.append("its compression compute not estimated (gradients not on the CPU): bytes only")
    out = [f"what-if projected {fmt_seconds(a['projected_step_time'])}"
           + (f" ({'; '.join(parts)})" if parts else "")
           + f": measured/projected {a['measured_vs_projected']:.3f}"]
    cal = a.get("calibrated")
    if cal and cal["projected_step_time"]:
        sign = "+" if cal["compute_add_s"] >= 0 else "-"
        out.append(f"with run 1's measured compute ({sign}{fmt_seconds(abs(cal['compute_add_s']))}/step against "
                   f"the baseline's): projected {fmt_seconds(cal['projected_step_time'])}; the later runs "
                   f"measured {fmt_seconds(cal['later_runs_step_time'])}: {cal['measured_vs_projected']:.3f}")
    return out


def check_lines(a: dict) -> list[str]:
    """The per-op bytes line and local SGD's lines of one fix's result."""
    from commprof.fixes.checks import check_text, local_sgd_lines
    out = []
    if a.get("bytes_ops"):
        out.append("bytes per op: " + "; ".join(check_text(r) for r in a["bytes_ops"]))
    return out + local_sgd_lines(a.get("local_sgd"))


def print_ruled(ruled: list[tuple[str, str]]) -> None:
    """One line per fix ruled out before running, with why."""
    from commprof.format.text import printable
    for spec, why in ruled:
        print(printable(f"commprof try: not running {spec}: {why}"))


def baseline_projections(specs: list[str], run: Path, report: Report, fix_warmup: int) -> dict:
    """Spec -> (projected step time in seconds, the change) of each fix from the baseline's
    first run alone, before any fix runs (docs/try.md, "Projections"); fixes the what-if has no
    model of are left out."""
    from commprof.analysis.outcome import whatif
    from commprof.cli.report import summarize_run
    from commprof.fixes import parse
    from commprof.fixes.projection import change_for, whatif_keywords
    b = summarize_run(str(run), 2).baseline
    facts = facts_of(run, report)
    out = {}
    for spec in specs:
        fixes = parse(spec, fix_warmup)
        change = change_for(fixes, facts, compute_estimates(fixes, facts))
        if change and b is not None:
            out[spec] = (whatif.project(b, **whatif_keywords(change))["step_time_s"], change)
    return out


def projection_text(step_s: float, base_s: float | None, change: dict) -> str:
    """``powersgd:4 20.8 ms (6.04x; bytes x0.023 from the shapes, compression +1.9 ms/step)``."""
    from commprof.format.units import fmt_seconds
    notes = [f"{base_s / step_s:.2f}x"] if base_s and step_s else []
    if change.get("bytes_ratio") is not None:
        notes.append(f"bytes x{change['bytes_ratio']:.2g} from the shapes")
    if change.get("compute_known") is True:
        notes.append(f"compression +{fmt_seconds(change['compute_add_s'])}/step")
    elif change.get("compute_known") is False:
        notes.append("compression compute not estimated")
    if change.get("keep_compute"):
        notes.append("unsynchronized steps keep their compute")
    return f"{fmt_seconds(step_s)} ({'; '.join(notes)})"


def say_projections(specs: list[str], run: Path, report: Report, fix_warmup: int, say) -> None:
    """One line: each candidate's projection from the baseline alone (``try auto``)."""
    proj = baseline_projections(specs, run, report, fix_warmup)
    if proj:
        base_s = report.kpis.step_time_s
        say("projected from the baseline alone (docs/try.md): "
            + ", ".join(f"{s} {projection_text(t, base_s, c)}" for s, (t, c) in proj.items()))
