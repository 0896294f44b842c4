"""``commprof try``'s checks around each fix (docs/try.md): rule a fix out before running it
when the baseline lacks its target, check its bytes per op, project it through the what-if, and
local SGD's loss spread across ranks and last averaging step.  The pure logic is
:mod:`commprof.fixes.checks`; the run's facts come from :mod:`commprof.gate.runfacts`.
"""
from __future__ import annotations

from pathlib import Path

_FACTS: dict[tuple, dict | None] = {}


def facts_of(run: Path, document: dict) -> dict | None:
    """:func:`commprof.gate.runfacts.run_facts`, once per run and measured steps."""
    from commprof.gate.runfacts import run_facts
    key = (str(Path(run).resolve()), tuple(r.get("step") for r in document["steps"].get("per_step") or []))
    if key not in _FACTS:
        _FACTS[key] = run_facts(run, document)
    return _FACTS[key]


def merged_facts(runs, docs) -> dict | None:
    """The facts of one side's runs: per-op bytes averaged over its runs, the rest of the first."""
    facts = [f for f in (facts_of(r, d) for r, d in zip(runs, docs)) if f]
    if not facts:
        return None
    out = dict(facts[0])
    ops = sorted({op for f in facts for op in f["ops"]})
    out["ops"] = {op: {k: sum(f["ops"].get(op, {}).get(k, 0.0) for f in facts) / len(facts)
                       for k in ("bytes", "backward")} for op in ops}
    out["fixes"] = [e for f in facts for e in f.get("fixes") or []]
    return out


def rule_out(specs: list[str], base_run: Path, base_doc: dict, fix_warmup: int, say
             ) -> tuple[list[str], list[tuple[str, str]]]:
    """(the specs to run, [(spec, why not)] for those the baseline cannot take)."""
    from commprof.fixes import parse
    from commprof.fixes.checks import applicable
    facts = facts_of(base_run, base_doc)
    kept, ruled = [], []
    for spec in specs:
        ok, why = applicable(parse(spec, fix_warmup), base_doc, facts)
        if ok:
            kept.append(spec)
        else:
            ruled.append((spec, why))
            say(f"not running {spec}: {why}")
    return kept, ruled


def fix_checks(base, side, fixes, projector) -> dict:
    """Per-op bytes rows, whether they hold, the projected step time (``projector(**whatif)``:
    the what-if on the baseline's first run) and local SGD's checks."""
    from commprof.fixes.checks import bytes_checks, bytes_ok, local_sgd_checks, projected_bytes_div
    bf = merged_facts(base.runs, base.docs)
    ff = merged_facts(side.runs, side.docs)
    rows = bytes_checks(fixes, bf, ff)
    change: dict = {}
    if any(f.whatif().get("sync_every") for f in fixes):
        for f in fixes:
            for k, v in f.whatif().items():
                change[k] = change.get(k, 1) * v
    else:
        div = projected_bytes_div(rows)
        if div is not None:
            change = {"bytes_div": div}
    projected = projector(**change) if change else None
    return {"bytes_ops": rows, "bytes_ok": bytes_ok(rows), "projection": change or None,
            "projected_step_time": projected, "local_sgd": local_sgd_checks(fixes, bf, ff)}


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
