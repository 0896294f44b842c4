"""``commprof try``'s closing output: the ``--json`` file and the list of fixes tried."""
from __future__ import annotations

import json
from pathlib import Path

from commprof.format.text import printable


def out(text: str = "") -> None:
    """One block of try's output: what came from the job or the user (fix names, reasons, paths)
    shown, never sent as terminal escapes."""
    print(printable(text, keep_newlines=True))


def write_json(path: str, base, sides: list, results: list[dict], verdicts: list, ruled: list,
               best: dict | None, table: list, loss_tolerance: float | None) -> None:
    """``--json FILE``: the ``commprof.try/1`` document (docs/try.md)."""
    Path(path).write_text(json.dumps({
        "schema": "commprof.try/1", "baseline": [str(r) for r in base.runs],
        "loss_tolerance": loss_tolerance, "results": results,
        "verdicts": [{"fix": r["fix"], "verdict": v} for r, v in verdicts],
        "ruled_out": [{"fix": spec, "why": why} for spec, why in ruled],
        "chosen": best["fix"] if best else None,
        "runs": {s.label: [str(r) for r in s.runs] for s in sides},
        **({"search": [{"fix": c.fix, "fate": c.fate, "why": c.why, "short": c.short, "full": c.full}
                       for c in table]} if table else {})}, indent=1, default=str) + "\n")


def print_tried(verdicts: list, best: dict | None, table: list) -> None:
    """The fixes tried (speed-up per step, to the target), and the one to apply, or why none."""
    out("\ntried (speed-up per step, to the target):")
    for r, v in verdicts:
        sp = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        eff = r["judgement"]["time_to_target"]["speedup"]
        out(f"  {r['fix']:<18} {sp:>6} {f'{eff:.2f}x' if eff else '-':>6}  {v}")
    if best is not None:
        out(f"\napply {best['fix']} in your script:\n" + "\n".join("    " + line for line in best["code"].splitlines()))
    elif any(c.fate == "not run: budget" for c in table):
        out("\nno fix chosen: the budget ran out before every candidate was judged "
            "(see above; raise --budget or shorten the runs with --steps)")
    else:
        out("\nno fix is both faster to the target and within the baseline's noise")
