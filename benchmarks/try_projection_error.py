"""How far is each fix's projection from reruns?  (docs/try.md, "Projections against reruns")

Reads the runs of one ``commprof try … --repeat K --out DIR --json DIR.json`` and prints, per
fix, the step time the what-if projected from the first baseline run (the number ``try``
prints) and each rerun's measured step time (the report's mean step over its measured steps,
warm-up and the fix's warm-up left out), with the error measured ÷ projected − 1.  The row
"baseline rerun" is the second baseline run against the first: the run-to-run noise the errors
sit in.

    commprof try "bf16-compress/fp16-compress/powersgd:1,bucket-cap:100/local-sgd:4" --repeat 2 \\
        --fix-warmup 3 --out /tmp/tf_nl --json /tmp/tf_nl.json -- \\
        python3 tests/netlab/pair.py --rate 200 -- commprof/examples/demo_train.py --steps 30 --width 512
    python benchmarks/try_projection_error.py /tmp/tf_nl.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def step_time(run: str, warmup: int) -> float | None:
    from commprof.cli.report import build_document
    return build_document(run, warmup)["kpis"].get("step_time_s")


def compute_time(run: str, warmup: int) -> float | None:
    """Mean step minus its exposed communication: what the what-if holds constant."""
    from commprof.cli.report import build_document
    k = build_document(run, warmup)["kpis"]
    t, e = k.get("step_time_s"), k.get("exposed_comm_s_per_step")
    return t - e if t is not None and e is not None else None


def _ms(values) -> str:
    return ", ".join("-" if v is None else f"{v * 1e3:.1f}" for v in values) + " ms"


def main(path: str, warmup: int = 3) -> int:
    doc = json.loads(Path(path).read_text())
    base = [step_time(r, warmup) for r in doc["baseline"]]
    print(f"baseline runs: {', '.join(f'{t * 1e3:.1f} ms' for t in base)}")
    print("| fix | projected | reruns (measured) | error per rerun | mean error | compute per step (step − exposed) |")
    print("|---|---|---|---|---|---|")
    if len(base) > 1:
        errs = [t / base[0] - 1 for t in base[1:]]
        print(f"| baseline rerun (no change) | {base[0] * 1e3:.1f} ms | {_ms(base[1:])} | "
              f"{', '.join(f'{e:+.1%}' for e in errs)} | {sum(errs) / len(errs):+.1%} | "
              f"{_ms(compute_time(r, warmup) for r in doc['baseline'])} |")
    for r in doc["results"]:
        projected = r.get("projected_step_time")
        runs = [step_time(x, warmup) for x in doc["runs"][r["fix"]]]
        compute = _ms(compute_time(x, warmup) for x in doc["runs"][r["fix"]])
        if projected is None:
            print(f"| {r['fix']} | none | {_ms(runs)} | - | - | {compute} |")
            continue
        errs = [t / projected - 1 for t in runs]
        print(f"| {r['fix']} | {projected * 1e3:.1f} ms | {_ms(runs)} | "
              f"{', '.join(f'{e:+.1%}' for e in errs)} | {sum(errs) / len(errs):+.1%} | {compute} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3))
