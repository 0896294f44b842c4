"""What ``commprof try`` checks around a fix, on plain dicts (docs/try.md):

* :func:`applicable` — before running it: does the baseline have the fix's target (a DDP model,
  ``fully_shard``, a single bucket for PowerSGD on gloo)?  A fix is ruled out only when the
  baseline shows the target is absent; when it cannot tell, the fix runs.
* :func:`bytes_checks` — after: each op's bytes per step against what the fix says it does to
  that op (``Fix.op_bytes``), so bf16-reduce on FSDP2 reads "reduce_scatter x0.50 as expected,
  all_gather x1.00 as expected", not one total.
* :func:`projected_bytes_div` — the bytes divisor the what-if projects the step time with.
* :func:`local_sgd_checks` — the ranks' loss spread and whether the run ended on an averaging step.

``facts`` are :func:`commprof.gate.runfacts.run_facts` dicts (None: only the report document is
known); ``document`` is a report document (``commprof.report/1``).
"""
from __future__ import annotations

from commprof.fixes.catalog import BucketCap, Fix, LocalSGD, PowerSGD

BYTES_TOLERANCE = 0.02  # measured ratio vs the fix's arithmetic, absolute
MB = 1024 * 1024  # DDP's bucket_cap_mb unit


def _fmt_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def _ops_text(facts: dict | None, document: dict) -> str:
    if facts and facts.get("ops"):
        parts = [f"{op} {_fmt_bytes(v['bytes'])}/step" for op, v in sorted(facts["ops"].items())]
    else:
        parts = sorted({str(r.get("op")) for r in document.get("ops") or []})
    return ", ".join(parts) or "none"


def applicable(fix: Fix | list[Fix], document: dict, facts: dict | None = None) -> tuple[bool, str]:
    """(True, "") when the baseline (``document``, ``facts``) may have ``fix``'s target; else
    (False, why).  ``fix``: one fix or the fixes applied together on one side."""
    fixes = fix if isinstance(fix, list) else [fix]
    doc_ops = {str(r.get("op")) for r in document.get("ops") or []}
    known = facts is not None and facts.get("ddp") is not None
    collectives = f"(its collectives: {_ops_text(facts, document)})"
    if any(f.target == "ddp" for f in fixes):
        if (known and facts.get("ddp") is False) or (not known and doc_ops and "all_reduce" not in doc_ops):
            return False, ("the baseline has no DistributedDataParallel model: no gradient all_reduce "
                           f"{'in backward ' if known else ''}{collectives}")
    if any(f.target == "fsdp" for f in fixes):
        has = (facts["fsdp"] or bool(set(facts["ops"]) & {"reduce_scatter", "all_gather"}) if known
               else (not doc_ops or bool(doc_ops & {"reduce_scatter", "all_gather"})))
        if not has:
            return False, f"the baseline never calls fully_shard: no reduce_scatter or all_gather {collectives}"
    for f in fixes:
        if isinstance(f, PowerSGD):
            ok, why = _powersgd_buckets(fixes, document, facts if known else None)
            if not ok:
                return False, why
    return True, ""


def _powersgd_buckets(fixes: list[Fix], document: dict, facts: dict | None) -> tuple[bool, str]:
    """PowerSGD on a backend other than NCCL needs one DDP bucket (catalog.PowerSGD.refuse)."""
    backend = (facts or {}).get("backend") or str((document.get("run") or {}).get("backend") or "")
    if not backend or "nccl" in backend.lower() or facts is None:
        return True, ""
    grads = facts.get("gradient_bytes")
    caps = [f for f in fixes if isinstance(f, BucketCap)]
    if caps:
        cap = float(caps[0].arg) * MB
        if grads is not None and grads >= cap:
            return False, (f"PowerSGD on {backend} needs a single DDP bucket: {_fmt_bytes(grads)} of "
                           f"gradients per step do not fit in {caps[0].spec} ({_fmt_bytes(cap)}); "
                           f"use bucket-cap:{int(grads / MB) + 1} or more")
        return True, ""
    buckets = facts.get("ddp_buckets")
    if buckets is not None and buckets > 1:
        need = int((grads or 0) / MB) + 1
        return False, (f"PowerSGD on {backend} needs a single DDP bucket (its chained all-reduces run "
                       f"from {backend}'s callbacks and interleave across buckets); the baseline "
                       f"reduced its gradients in {buckets} buckets per step: try "
                       f"powersgd:R,bucket-cap:{need} (the gradients are {_fmt_bytes(grads or 0)}), or NCCL")
    return True, ""


def op_factors(fixes: list[Fix], op: str, steps: int | None, reported: dict) -> tuple | None:
    """The product of the fixes' (lowest, highest) factors on ``op``; None: unknown."""
    lo = hi = 1.0
    for f in fixes:
        change = f.op_bytes(steps, reported.get(f.spec))
        if op in change:
            if change[op] is None:
                return None
            lo, hi = lo * change[op][0], hi * change[op][1]
    return lo, hi


def reported_details(facts: dict | None) -> dict:
    """Fix spec -> its ``applied`` event (the first rank's), from a fix run's facts."""
    out: dict = {}
    for e in sorted((facts or {}).get("fixes") or [], key=lambda e: e.get("rank", 0)):
        if e.get("status") == "applied":
            out.setdefault(e.get("fix"), e)
    return out


def bytes_checks(fixes: list[Fix], base: dict | None, fixed: dict | None) -> list[dict]:
    """One row per op: bytes per step before and after, the ratio, the expected range and
    whether it holds.  Empty when either side's per-op bytes are unknown."""
    if not base or not fixed or not base.get("ops") and not fixed.get("ops"):
        return []
    reported = reported_details(fixed)
    steps = fixed.get("measured_steps")
    rows = []
    for op in sorted(set(base["ops"]) | set(fixed["ops"])):
        b = base["ops"].get(op, {"bytes": 0.0, "backward": 0.0})
        after = fixed["ops"].get(op, {"bytes": 0.0})["bytes"]
        if not b["bytes"] and not after:
            continue
        factor = op_factors(fixes, op, steps, reported)
        touched = any(op in f.op_bytes(steps, reported.get(f.spec)) for f in fixes)
        row = {"op": op, "base": b["bytes"], "fix": after,
               "ratio": after / b["bytes"] if b["bytes"] else None,
               "expected": None, "ok": None, "unchanged": not touched}
        if factor is not None and b["bytes"]:
            ddp_only = all(f.target == "ddp" for f in fixes if op in f.op_bytes(steps, reported.get(f.spec)))
            share = b["backward"] if ddp_only and touched else b["bytes"]
            rest = b["bytes"] - share
            row["expected"] = [(rest + share * factor[0]) / b["bytes"], (rest + share * factor[1]) / b["bytes"]]
            row["ok"] = (row["expected"][0] - BYTES_TOLERANCE <= row["ratio"]
                         <= row["expected"][1] + BYTES_TOLERANCE)
        rows.append(row)
    return rows


def bytes_ok(rows: list[dict]) -> bool | None:
    """All per-op checks held (None: none could be made)."""
    known = [r["ok"] for r in rows if r["ok"] is not None]
    return all(known) if known else None


def _x(v: float) -> str:
    return f"x{v:.2f}" if v >= 0.1 or v == 0 else f"x{v:.2g}"


def check_text(row: dict) -> str:
    """``reduce_scatter x0.50 as expected`` / ``all_reduce x0.83 NOT as expected (the fix says x0.50)``."""
    ratio = "new" if row["ratio"] is None else _x(row["ratio"])
    if row["expected"] is None:
        return f"{row['op']} {ratio} (expected: unknown)"
    lo, hi = row["expected"]
    says = _x(lo) if abs(hi - lo) < 1e-9 else f"{_x(lo)}..{_x(hi)}"
    if row["unchanged"]:
        says = "unchanged"
    return f"{row['op']} {ratio} " + ("as expected" if row["ok"] else f"NOT as expected (the fix says {says})")


def projected_bytes_div(rows: list[dict]) -> float | None:
    """Σ bytes before ÷ Σ bytes the fix says after (the middle of each op's range): the what-if's
    ``bytes_div`` for this fix; None when a factor is unknown or the bytes do not change."""
    if not rows or any(r["expected"] is None for r in rows if r["base"]):
        return None
    before = sum(r["base"] for r in rows)
    after = sum(r["base"] * (r["expected"][0] + r["expected"][1]) / 2 for r in rows if r["base"])
    if not after or abs(before / after - 1) < 1e-6:
        return None
    return before / after


def local_sgd_checks(fixes: list[Fix], base: dict | None, fixed: dict | None) -> dict | None:
    """Local SGD's risks, measured: each rank's loss over the last steps and their spread (the
    baseline's spread beside it: there the ranks share one model, only their data differ), and
    whether the last step averaged the models (if not, every rank has its own model)."""
    local = [f for f in fixes if isinstance(f, LocalSGD)]
    if not local:
        return None
    f = local[0]

    def spread(facts):
        by = (facts or {}).get("loss_by_rank") or {}
        vals = list(by.values())
        if len(vals) < 2:
            return None
        mean = sum(vals) / len(vals)
        return (max(vals) - min(vals)) / abs(mean) if mean else None

    last = (fixed or {}).get("last_step")
    cut = bool((fixed or {}).get("max_steps_exit"))
    return {"loss_by_rank": (fixed or {}).get("loss_by_rank"), "spread": spread(fixed),
            "spread_base": spread(base), "last_step": last, "max_steps_exit": cut,
            "ends_averaged": (f.averaging_step(last) and not cut) if last is not None else None,
            "period": f.period}


def local_sgd_lines(check: dict | None) -> list[str]:
    """The lines ``commprof try`` prints for :func:`local_sgd_checks`."""
    if not check:
        return []
    out = []
    if check["spread"] is not None:
        base = f" (baseline {check['spread_base']:.1%})" if check["spread_base"] is not None else ""
        by = ", ".join(f"rank {r} {v:.4g}" for r, v in sorted(check["loss_by_rank"].items()))
        out.append(f"loss across ranks, last steps: {by}; spread {check['spread']:.1%}{base}")
    if check["ends_averaged"] is False:
        why = ("--max-steps ended it before that step's averaging" if check.get("max_steps_exit")
               else f"not an averaging step (every {check['period']})")
        out.append(f"warning: the run ended on step {check['last_step']}, {why}: each rank ends "
                   "with its own model; average them before evaluating or saving (the snippet's "
                   "last lines)")
    return out
