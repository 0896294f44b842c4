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


def main(path: str, warmup: int = 3) -> int:
    doc = json.loads(Path(path).read_text())
    base = [step_time(r, warmup) for r in doc["baseline"]]
    print(f"baseline runs: {', '.join(f'{t * 1e3:.1f} ms' for t in base)}")
    print("| fix | projected | reruns (measured) | error per rerun | mean error |")
    print("|---|---|---|---|---|")
    if len(base) > 1:
        errs = [t / base[0] - 1 for t in base[1:]]
        print(f"| baseline rerun (no change) | {base[0] * 1e3:.1f} ms | "
              f"{', '.join(f'{t * 1e3:.1f}' for t in base[1:])} ms | "
              f"{', '.join(f'{e:+.1%}' for e in errs)} | {sum(errs) / len(errs):+.1%} |")
    for r in doc["results"]:
        projected = r.get("projected_step_time")
        runs = [step_time(x, warmup) for x in doc["runs"][r["fix"]]]
        if projected is None:
            print(f"| {r['fix']} | none | {', '.join(f'{t * 1e3:.1f}' for t in runs)} ms | - | - |")
            continue
        errs = [t / projected - 1 for t in runs]
        print(f"| {r['fix']} | {projected * 1e3:.1f} ms | {', '.join(f'{t * 1e3:.1f}' for t in runs)} ms | "
              f"{', '.join(f'{e:+.1%}' for e in errs)} | {sum(errs) / len(errs):+.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3))
