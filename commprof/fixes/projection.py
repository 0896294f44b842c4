"""A fix's projection from the baseline alone, before it runs (docs/try.md, "Projections"): the
what-if change (``commprof.analysis.outcome.whatif.project`` keywords) of the fixes applied together,
with what each adds to or removes from compute per step.

* **Bytes**: each op's bytes after = rest + the share the fix acts on × its factor (the middle
  of a range); ``bytes_div`` = Σ before ÷ Σ after.  PowerSGD's factor comes from the DDP
  model's gradient shapes the baseline recorded (its ``ddp_model`` event,
  :mod:`commprof.fixes.model_shapes`), by :func:`commprof.fixes.sizes.powersgd_elements`.
* **Synchronization**: local SGD synchronizes one step in K (``sync_every``) and its other steps
  keep their compute whole (``keep_compute``): only the waits go.
* **Compute**: PowerSGD adds, per step and per compressed n×m gradient with rank r, the products
  P = M·Q (n×m by m×r), Q = Mᵀ·P, the approximation P·Qᵀ, the orthogonalization of P (QR of
  n×r) and the error feedback's subtraction — timed on this CPU by :func:`time_powersgd`
  (``compute_add_s``) when the model's gradients are on the CPU; on a GPU it is not estimated
  (None: the projection counts bytes only, and says so).
"""
from __future__ import annotations

import time

from commprof.fixes.catalog import Fix, LocalSGD, PowerSGD
from commprof.fixes.checks import op_factors
from commprof.fixes.sizes import powersgd_elements

TIMING_REPEATS = 3  # the compression's timing: the fastest of this many passes


def powersgd_bytes_ratio(model: dict | None, rank: int) -> float | None:
    """Gradient bytes PowerSGD all-reduces per step after its warm-up ÷ a plain all-reduce's,
    from a ``ddp_model`` event's parameter rows; None without them."""
    rows = (model or {}).get("params") or []
    full = sum(_numel(r["shape"]) * r["element_size"] * r["count"] for r in rows)
    after = sum(powersgd_elements(tuple(r["shape"]), rank)[1] * r["element_size"] * r["count"] for r in rows)
    return after / full if full else None


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def compressed_matrices(model: dict | None, rank: int) -> list[tuple[int, int, int, int]]:
    """(n, m, r, count) of every gradient PowerSGD compresses (the rest travel whole)."""
    out = []
    for row in (model or {}).get("params") or []:
        shape = tuple(row["shape"])
        numel = _numel(shape)
        if shape and numel and powersgd_elements(shape, rank)[1] < numel:
            n = int(shape[0])
            out.append((n, numel // n, min(n, numel // n, rank), int(row["count"])))
    return out


def time_powersgd(model: dict | None, rank: int, torch_module=None) -> float | None:
    """Seconds per step of PowerSGD's compression compute on this CPU for ``model``'s shapes
    (module docstring), one thread (torchrun's default for CPU workers); the fastest of
    :data:`TIMING_REPEATS` passes.  None when the gradients are not on the CPU or unknown."""
    if not model or model.get("device") != "cpu":
        return None
    mats = compressed_matrices(model, rank)
    if torch_module is None:
        import torch as torch_module
    threads = torch_module.get_num_threads()
    torch_module.set_num_threads(1)
    try:
        total = 0.0
        for n, m, r, count in mats:
            grad = torch_module.randn(n, m)
            q = torch_module.randn(m, r)
            best = float("inf")
            for _ in range(TIMING_REPEATS):
                t0 = time.perf_counter()
                p = grad @ q
                p = torch_module.linalg.qr(p).Q
                q2 = grad.t() @ p
                grad.sub_(p @ q2.t())
                best = min(best, time.perf_counter() - t0)
            total += best * count
        return total
    finally:
        torch_module.set_num_threads(threads)


def expected_after(fixes: list[Fix], base: dict, reported: dict, steps: int | None = None) -> dict | None:
    """Op -> bytes per step the fixes say it will send (the middle of each range), from the
    baseline's facts (``ops``: bytes, backward); None when a factor is unknown."""
    out = {}
    for op, b in (base.get("ops") or {}).items():
        factors = op_factors(fixes, op, steps, reported)
        if factors is None:
            return None
        lo, hi = factors
        touched = [f for f in fixes if op in f.op_bytes(steps, reported.get(f.spec))]
        share = b["backward"] if touched and all(f.target == "ddp" for f in touched) else b["bytes"]
        out[op] = b["bytes"] - share + share * (lo + hi) / 2
    return out


def change_for(fixes: list[Fix], base: dict | None, compute_s: dict | None = None) -> dict:
    """The what-if change of ``fixes`` applied together, from the baseline's facts
    (:func:`commprof.gate.runfacts.run_facts`) alone; {} when nothing can be projected.
    ``compute_s``: fix spec -> seconds of compute it adds per step (:func:`time_powersgd`), None
    or missing where unknown.  Keys beyond the what-if's: ``compute_known`` (False when a fix
    adds compute that is not estimated) and ``bytes_ratio`` (PowerSGD's, from the shapes)."""
    if not base:
        return {}
    change: dict = {}
    reported = {}
    for f in fixes:
        if isinstance(f, PowerSGD):
            ratio = powersgd_bytes_ratio(base.get("ddp_model"), f.rank)
            if ratio is not None:
                reported[f.spec] = {"bytes_ratio": ratio}
                change["bytes_ratio"] = ratio
    if any(f.whatif().get("sync_every") for f in fixes):
        for f in fixes:
            for k, v in f.whatif().items():
                change[k] = change.get(k, 1) * v
        change["keep_compute"] = any(isinstance(f, LocalSGD) for f in fixes)
    else:
        after = expected_after(fixes, base, reported)
        before = sum(b["bytes"] for b in (base.get("ops") or {}).values())
        if after and sum(after.values()) and abs(before / sum(after.values()) - 1) > 1e-6:
            change["bytes_div"] = before / sum(after.values())
    adds = [f for f in fixes if isinstance(f, PowerSGD)]
    if adds:
        known = [(compute_s or {}).get(f.spec) for f in adds]
        change["compute_known"] = None not in known
        change["compute_add_s"] = sum(k for k in known if k is not None)
    if not {"bytes_div", "sync_every"} & set(change):
        return {}
    return change


def whatif_keywords(change: dict) -> dict:
    """``change`` without the keys :func:`commprof.analysis.outcome.whatif.project` does not take."""
    return {k: v for k, v in change.items() if k not in ("compute_known", "bytes_ratio")}
