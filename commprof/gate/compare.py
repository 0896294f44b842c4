"""KPI-by-KPI comparison of two runs or two sides of several runs (``commprof compare A B``,
``commprof compare --baseline A1 --baseline A2 B1 B2``): values, spreads, deltas, and a verdict per
KPI — better, worse or within noise (the interval of the change holds 0).  With several runs the
interval is the run-to-run one (gate/runs.py), else a bootstrap over the steps."""
from __future__ import annotations

from commprof.gate import runs as runs_mod, stats
from commprof.gate.measure import Measurements
from commprof.gate.measure import metric_value
from commprof.gate.rules import METRICS

ORDER = list(METRICS)  # the KPI registry's gate metrics, in their order (analysis/measures/kpi_registry.py)


def _op_metrics(a: Measurements, b: Measurements) -> list[str]:
    ops = sorted({r.op for m in (a, b) for r in m.op_sizes if r.bus_bytes})
    return [f"busbw:{op}" for op in ops]


def compare(a: Measurements, b: Measurements, confidence: float = 0.95,
            a_runs: list[Measurements] | None = None, b_runs: list[Measurements] | None = None
            ) -> list[dict]:
    """One row per KPI present in either run (B relative to A).  ``a``/``b``: each side's runs
    merged (:func:`commprof.gate.runs.merge`); ``a_runs``/``b_runs``: the runs themselves, whose
    run-to-run spread decides when there are three or more in all (``basis`` says which)."""
    rows = []
    a_runs, b_runs = a_runs or [a], b_runs or [b]
    for name in ORDER + _op_metrics(a, b):
        unit, lower_better = METRICS.get(name, ("GB/s", False))
        va, sa = metric_value(a, name)
        vb, sb = metric_value(b, name)
        if va is None and vb is None:
            continue
        row = {"metric": name, "unit": unit, "lower_is_better": lower_better, "a": va, "b": vb,
               "a_iqr": stats.stat_ci(sa), "b_iqr": stats.stat_ci(sb),
               "delta": None, "relative": None, "ci": None, "verdict": "n/a"}
        if va is not None and vb is not None:
            row["delta"] = vb - va
            row["relative"] = vb / va - 1 if va else None
            ci = stats.stat_diff_ci(sa, sb, False, confidence)
            ra, rb = runs_mod.run_values(a_runs, name), runs_mod.run_values(b_runs, name)
            run_ci = runs_mod.runs_interval(ra, rb, False, confidence)
            row.update(a_runs=ra, b_runs=rb, step_ci=ci, basis="runs" if run_ci else "steps")
            if run_ci is not None:
                ci = run_ci
            row["ci"] = ci
            if ci is not None:
                if ci[0] <= 0 <= ci[1]:
                    verdict = "within noise"
                else:
                    verdict = "worse" if (ci[0] > 0) == lower_better else "better"
            elif va == vb:
                verdict = "same"
            else:
                worse = (vb > va) == lower_better
                verdict = ("worse" if worse else "better") + " (no spread)"
            row["verdict"] = verdict
        rows.append(row)
    return rows
