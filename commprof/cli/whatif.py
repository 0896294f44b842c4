"""``commprof whatif RUN --bandwidth x2 --bytes /2 --sync-every 4 --overlap --no-straggler``"""
from __future__ import annotations

import json
import re
import sys

from commprof.errors import UsageError


def _factor(text: str | None, flag: str, symbol: str) -> float:
    """``x2`` / ``2`` (bandwidth), ``/2`` / ``2`` (bytes)."""
    if text is None:
        return 1.0
    m = re.fullmatch(rf"\s*{re.escape(symbol)}?\s*([0-9]*\.?[0-9]+)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"{flag} {text!r}: use e.g. {symbol}2 (a positive factor)")
    return float(m.group(1))


def _fix_change(spec: str, run: str, warmup: int) -> dict:
    """The what-if change of ``--fix SPEC`` from the run alone (docs/try.md, "Projections")."""
    from commprof.cli.report import build_report
    from commprof.cli.try_checks import compute_estimates
    from commprof.fixes import parse
    from commprof.fixes.projection import change_for
    from commprof.gate.runfacts import run_facts
    fixes = parse(spec)
    facts = run_facts(run, build_report(run, warmup))
    change = change_for(fixes, facts, compute_estimates(fixes, facts))
    if not change:
        raise UsageError(f"--fix {spec}: cannot project it from {run}: the what-if has no model of it, "
                         "or the run lacks what it needs (the per-op bytes; for PowerSGD its DDP "
                         "model's shapes, recorded by commprof since issue 25)")
    return change


def whatif_command(run: str | None, bandwidth: str | None, bytes_: str | None, sync_every: int,
                   overlap: bool, no_straggler: bool, fmt: str | None, warmup: int,
                   fix: str | None = None) -> int:
    from commprof.cli.report import summarize_run
    from commprof.format.units import fmt_pct, fmt_seconds
    b_factor = _factor(bandwidth, "--bandwidth", "x")
    d_factor = _factor(bytes_, "--bytes", "/")
    if sync_every < 1:
        raise UsageError(f"--sync-every {sync_every}: must be >= 1")
    from commprof.analysis.outcome import whatif
    summary = summarize_run(run, warmup)
    base = summary.baseline
    if base is None and summary.kpis.get("time_basis") == "host_launch":
        raise UsageError(f"{summary.run['path']}: GPU timeline not measured: on NCCL the host sees "
                         "only each collective's launch, so there is no communication time to "
                         "project; record GPU windows (`commprof run --gpu-windows`) or report a "
                         "torch.profiler trace")
    if base is None:
        raise UsageError(f"{summary.run['path']}: no training steps were detected, so there is no step "
                         "time to project (see docs/whatif.md)")
    changes = dict(bandwidth=b_factor, bytes_div=d_factor, sync_every=sync_every, overlap=overlap,
                   no_straggler=no_straggler)
    fix_change = _fix_change(fix, summary.run["path"], warmup) if fix else {}
    for key, value in fix_change.items():
        if key in ("bytes_div", "sync_every"):
            changes[key] = changes[key] * value
        elif key in ("keep_compute", "compute_add_s"):
            changes[key] = value
    result = whatif.project(base, **changes)
    if fmt == "json":
        sys.stdout.write(json.dumps({"changes": changes, "fix": fix, "fix_change": fix_change or None,
                                     "inputs": base.inputs(), **result}, indent=2) + "\n")
        return 0
    desc = ", ".join(p for p in (f"bandwidth x{b_factor:g}" if b_factor != 1 else "",
                                 f"bytes /{d_factor:g}" if d_factor != 1 else "",
                                 f"sync every {sync_every} steps" if sync_every > 1 else "",
                                 "perfect overlap" if overlap else "",
                                 "no straggler" if no_straggler else "",
                                 f"the fix {fix}" if fix else "") if p) or "no change"
    i = base.inputs()
    print(f"measured ({i['steps']} rank-steps, means):  step {fmt_seconds(i['step_s'])}, communication "
          f"in flight {fmt_seconds(i['comm_s_per_step'])}/step, exposed "
          f"{fmt_seconds(i['exposed_s_per_step'])}/step, waiting for late ranks "
          + (f"{fmt_seconds(i['wait_s_per_step'])}/step" if i.get("wait_measured") else "not measured"))
    print(f"projected ({desc}): step {fmt_seconds(result['step_time_s'])} "
          f"({result['speedup']:.2f}x), communication {fmt_pct(result['comm_fraction'])} of the step, "
          f"exposed {fmt_pct(result['exposed_comm_fraction'])}")
    if fix:
        from commprof.cli.try_checks import projection_text
        print(f"the fix {fix}, from this run alone (docs/try.md, \"Projections\"): "
              + projection_text(result["step_time_s"], i["step_s"], fix_change))
    print("model: docs/whatif.md (only transfer shrinks with bandwidth or bytes, its exposed tail "
          "first; waiting for late ranks shrinks only with balance)")
    return 0
