"""How far is each fix's projection from reruns?  (docs/try.md, "Projections against reruns")

Reads the runs of one ``commprof try … --repeat K --out DIR --json DIR.json`` and, with the
code as it is now, projects every fix from the first baseline run alone (what ``commprof try``
prints), three ways:

* **bytes only** — the what-if with the fix's bytes (PowerSGD's from the model's shapes) and
  "sync every K", compute held at the baseline's (the projection before issue 25's item 2);
* **estimated compute** — plus what the fix adds to or removes from compute per step, before it
  runs: PowerSGD's compression timed on this CPU for the model's shapes, local SGD's
  non-synchronizing steps keeping their compute (only the waits go);
* **calibrated** — with the compute change the fix's *first* run measured (its step − exposed
  minus the baseline's), against its *later* runs only (out of sample).

Each is compared with every rerun's measured step time (the report's mean step over its measured
steps): error = measured ÷ projected − 1.  The row "baseline rerun" is the second baseline run
against the first: the run-to-run noise the errors sit in.

    commprof try "bf16-compress/fp16-compress/powersgd:1,bucket-cap:100/powersgd:4,bucket-cap:100/local-sgd:4/local-sgd:8" \\
        --repeat 2 --fix-warmup 3 --out /tmp/tf_nl --json /tmp/tf_nl.json -- \\
        python3 tests/netlab/pair.py --rate 200 -- commprof/examples/demo_train.py --steps 30 --width 512
    python benchmarks/try_projection_error.py /tmp/tf_nl.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _ms(values) -> str:
    return ", ".join("-" if v is None else f"{v * 1e3:.1f}" for v in values) + " ms"


def _errs(measured: list, projected: float | None) -> str:
    if not projected:
        return "-"
    return ", ".join(f"{t / projected - 1:+.0%}" for t in measured if t is not None)


def main(path: str, warmup: int = 3) -> int:
    from commprof.analysis.outcome import whatif
    from commprof.cli.report import summarize_run
    from commprof.cli.try_ import Side, _report
    from commprof.cli.try_checks import fix_checks, measured_compute
    from commprof.fixes import parse
    from commprof.fixes.projection import whatif_keywords
    doc = json.loads(Path(path).read_text())
    base = Side("baseline", [Path(r) for r in doc["baseline"]])
    base.docs = [_report(r, warmup) for r in base.runs]
    b = summarize_run(str(base.runs[0]), 2).baseline

    def projector(**change):
        return whatif.project(b, **change)["step_time_s"]
    times = [d.kpis.step_time_s for d in base.docs]
    print(f"baseline runs: {_ms(times)}; compute per step (step − exposed): "
          f"{_ms(measured_compute(d) for d in base.docs)}")
    print("| fix | bytes only | estimated compute | reruns measured | error: bytes only | error: estimated "
          "| calibrated on run 1 → later runs | compute per step (step − exposed) |")
    print("|---|---|---|---|---|---|---|---|")
    if len(times) > 1:
        print(f"| baseline rerun (no change) | {times[0] * 1e3:.1f} ms | | {_ms(times[1:])} | "
              f"{_errs(times[1:], times[0])} | | | |")
    for r in doc["results"]:
        side = Side(r["fix"], [Path(x) for x in doc["runs"][r["fix"]]])
        side.docs = [_report(x, warmup) for x in side.runs]
        checks = fix_checks(base, side, parse(r["fix"], warmup), projector)
        change = checks["projection"] or {}
        measured = [d.kpis.step_time_s for d in side.docs]
        plain = {k: v for k, v in whatif_keywords(change).items() if k not in ("compute_add_s", "keep_compute")}
        only = projector(**plain) if plain else None
        est = checks["projected_step_time"]
        cal = checks["calibrated"]
        cal_text = (f"{cal['projected_step_time'] * 1e3:.1f} ms ({cal['compute_add_s'] * 1e3:+.1f} ms) → "
                    f"{cal['measured_vs_projected'] - 1:+.0%}" if cal and cal["projected_step_time"] else "-")
        add = change.get("compute_add_s")
        est_text = "-" if est is None else f"{est * 1e3:.1f} ms" + (
            f" (+{add * 1e3:.1f} ms)" if add else " (keeps compute)" if change.get("keep_compute") else "")
        print(f"| {r['fix']} | {'-' if only is None else f'{only * 1e3:.1f} ms'} | {est_text} | {_ms(measured)} | "
              f"{_errs(measured, only)} | {_errs(measured, est)} | {cal_text} | "
              f"{_ms(measured_compute(d) for d in side.docs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3))
