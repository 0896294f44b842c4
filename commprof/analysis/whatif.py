"""What-if projections: the measured step under a faster network, fewer bytes, rarer syncs, perfect
overlap or no straggler — and recommendations ranked by projected saving (docs/whatif.md).

Inputs (every rank's measured steps, from the analysis): step time ``T``,
communication in flight ``C``, exposed ``E``, the wait a significant straggler costs each other
rank per step ``W`` (0 without one), and a per-step latency floor ``A`` (calls per step × the
probe's small-message latency; 0 without a probe).  Model, in one line each:

* exposed communication splits into waiting for a late rank (``W``: does not scale with the
  network) and waiting for transfers (``E_t = E − W``); in-flight transfer time is ``C_t = C − W``;
* bandwidth × b and bytes ÷ d scale transfer time beyond the latency floor:
  ``C_t' = A + (C_t − A) / (b·d)``; the time saved ``Δ = C_t − C_t'`` comes off the exposed tail
  first: ``E_t' = max(0, E_t − Δ)`` (communication that was hidden stays hidden);
* perfect overlap: ``E' = 0``; removing the straggler: ``W' = 0``;
* a synchronizing step takes ``T_s = max((T − E) + E_t' + W', C_t' + W')`` — communication cannot
  hide in less compute than it takes;
* synchronizing every k steps (gradient accumulation): one step in k synchronizes, the others
  take ``T − C`` (no communication at all — on CPU backends hidden communication also slows
  compute, so the compute of a non-synchronizing step is the step minus *all* communication):
  ``T' = (T_s + (k − 1)(T − C)) / k`` per step; fractions are ``(C_t' + W')/k ÷ T'`` and
  ``(E_t' + W')/k ÷ T'``.

Every measured step is projected on its own and the mean over steps is reported: time-weighted,
like the KPIs, so "no change" reproduces ``step_time_s`` and the fractions exactly, and no
scenario beats the verdict's bound ``1/(1 − comm_fraction)`` (every projected step is at least
``T − C``).

Known limits: compute time is assumed unchanged (compression hooks add a cast, accumulation adds
nothing), gloo's CPU-side reduction is counted as transfer, and latency is modelled only with a
probe.  Pure functions of the document; no printing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Baseline:
    """The measured steps a projection starts from: every rank's measured steps (one row each:
    its time, the communication in flight and exposed in it), plus the straggler wait and the
    latency floor per step.  Projections are time-weighted like the KPIs: a scenario's step time
    is the mean of the projected rows, so with no change it is the report's ``step_time_s``."""

    step_s: object
    comm_s: object
    exposed_s: object
    straggler_wait_s: object = 0.0  # a float, or one value per row (traces: the rank's measured wait)
    latency_floor_s: float = 0.0

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.atleast_1d(np.asarray(self.step_s, dtype="float64"))
        e = np.minimum(np.atleast_1d(np.asarray(self.exposed_s, dtype="float64")), t)
        c = np.clip(np.atleast_1d(np.asarray(self.comm_s, dtype="float64")), e, t)
        return t, c, e

    @property
    def mean_step_s(self) -> float:
        return float(np.mean(self.arrays()[0]))

    def inputs(self) -> dict:
        """What a projection starts from, as means over the measured steps (the KPIs')."""
        t, c, e = self.arrays()
        return {"steps": int(len(t)), "step_s": float(np.mean(t)),
                "comm_s_per_step": float(np.mean(c)), "exposed_s_per_step": float(np.mean(e)),
                "straggler_wait_s_per_step": float(np.mean(self.straggler_wait_s)),
                "latency_floor_s_per_step": self.latency_floor_s}

    @classmethod
    def from_steps(cls, meas, stragglers: list[dict], probe: dict | None,
                   calls_per_step: float) -> "Baseline | None":
        """From the measured rank-steps frame (``duration_s``, ``comm_s``, ``exposed_s``), the
        cross-rank stragglers and the probe result (its small-message all_reduce latency)."""
        if meas is None or not len(meas):
            return None
        wait = max((s["wait_cost_per_step_s"] for s in stragglers or [] if s.get("significant")),
                   default=0.0)
        lat = ((probe or {}).get("latency_us") or {}).get("all_reduce")
        floor = calls_per_step * lat / 1e6 if lat else 0.0
        return cls(meas["duration_s"].to_numpy("float64"), meas["comm_s"].to_numpy("float64"),
                   meas["exposed_s"].to_numpy("float64"), float(wait), float(floor))


def project(b: Baseline, bandwidth: float = 1.0, bytes_div: float = 1.0, sync_every: int = 1,
            overlap: bool = False, no_straggler: bool = False) -> dict:
    """Projected step time and communication fractions under one combination of changes: each
    measured step is projected, and the time-weighted result reported (means over steps)."""
    if bandwidth <= 0 or bytes_div <= 0 or sync_every < 1:
        raise ValueError("bandwidth and bytes factors must be > 0, sync_every >= 1")
    t, c, e = b.arrays()
    w0 = np.minimum(b.straggler_wait_s, e)
    wait = np.zeros_like(e) if no_straggler else w0
    e_t = np.maximum(e - w0, 0.0)
    c_t = np.maximum(c - w0, e_t)
    floor = np.minimum(b.latency_floor_s, c_t)
    c_t2 = floor + (c_t - floor) / (bandwidth * bytes_div)
    e_t2 = np.maximum(0.0, e_t - (c_t - c_t2))
    if overlap:
        e_t2, wait = np.zeros_like(e_t2), np.zeros_like(wait)
    compute = t - e
    # a synchronizing step: communication cannot hide in less compute than it takes
    step_sync = np.maximum(compute + e_t2 + wait, c_t2 + wait)
    # a step that does not synchronize: all communication gone, hidden included (on CPU backends
    # hidden communication competes with compute for the cores)
    step_local = np.maximum(t - c, 0.0)
    steps2 = (step_sync + (sync_every - 1) * step_local) / sync_every
    step2 = float(np.mean(steps2))
    exposed2 = float(np.mean((e_t2 + wait) / sync_every))
    comm2 = float(np.mean((c_t2 + wait) / sync_every))
    base = b.mean_step_s
    return {"step_time_s": step2, "speedup": base / step2 if step2 > 0 else None,
            "saving": 1 - step2 / base if base > 0 else None,
            "comm_fraction": comm2 / step2 if step2 > 0 else None,
            "exposed_comm_fraction": exposed2 / step2 if step2 > 0 else None}


SCENARIOS = [
    ("bandwidth x2", dict(bandwidth=2), "link bandwidth doubled (infrastructure): transfer time beyond "
     "the latency floor halves, waiting for late ranks does not"),
    ("bandwidth x4", dict(bandwidth=4), "link bandwidth ×4: transfer time beyond the latency floor ÷4"),
    ("bytes /2", dict(bytes_div=2), "half the bytes (fp16/bf16 gradient compression hook): transfer "
     "time beyond the latency floor halves, compute unchanged"),
    ("bytes /10", dict(bytes_div=10), "a tenth of the bytes (PowerSGD, top-k): transfer time ÷10, "
     "compression compute ignored"),
    ("sync every 4 steps", dict(sync_every=4), "gradient accumulation over 4 micro-steps (DDP "
     "no_sync): one step in 4 synchronizes, the other 3 take the step time minus all communication "
     "(time per micro-step shown)"),
    ("perfect overlap", dict(overlap=True), "all communication hidden behind compute: the upper "
     "bound of scheduling fixes (bucketing, prefetch, async)"),
    ("no straggler", dict(no_straggler=True), "the significant straggler arrives on time: its cost "
     "to the other ranks per step disappears"),
]


def scenarios(b: Baseline | None) -> list[dict]:
    """The document's ``whatif`` list (empty when the run has no step KPIs)."""
    if b is None:
        return []
    inputs = b.inputs()
    out = []
    for name, kwargs, model in SCENARIOS:
        if name == "no straggler" and not np.any(b.straggler_wait_s):
            continue
        out.append({"name": name, "model": model, "inputs": inputs, "changes": kwargs,
                    **project(b, **kwargs)})
    return out


def recommendations(doc: dict, whatif: list[dict]) -> list[dict]:
    """Software and infrastructure options ranked by projected saving, each with its evidence."""
    by = {w["name"]: w for w in whatif}
    if not by:
        return []
    k = doc["kpis"]
    step = k.get("step_time_s") or 0.0
    exposed_pct = (k.get("exposed_comm_fraction") or 0) * 100
    ops = {o["op"]: o for o in doc.get("ops", [])}
    ar = ops.get("all_reduce") or {}
    dtype = ar.get("dtype") or "?"
    recs = []

    def add(scenario: str, kind: str, action: str, evidence: str):
        w = by.get(scenario)
        if w and (w["saving"] or 0) > 0.005:
            recs.append({"scenario": scenario, "kind": kind, "action": action, "evidence": evidence,
                         "projected_saving": w["saving"], "projected_step_time_s": w["step_time_s"]})

    comp = ("a bf16 compression hook: `ddp.register_comm_hook(None, "
            "default_hooks.bf16_compress_hook)`" if "float32" in dtype else
            "halving the bytes synchronized (a lower-precision or compressed gradient format)")
    sized = k.get("bytes_per_step") is not None
    add("bytes /2", "software", comp,
        f"gradients are synchronized as {dtype} and {exposed_pct:.0f}% of step time is exposed "
        f"communication ({k['bytes_per_step'] / 1e6:.2f} MB per step per rank)" if sized else
        f"{exposed_pct:.0f}% of step time is exposed communication; the bytes synchronized and their "
        "dtype cannot be computed (the source carries no message sizes)")
    add("sync every 4 steps", "software", "gradient accumulation over 4 micro-batches with DDP `no_sync()`",
        f"{exposed_pct:.0f}% of each step is exposed communication, paid every step")
    add("perfect overlap", "software", "better overlap (DDP bucket_cap_mb, FSDP prefetch, async collectives)",
        f"{exposed_pct:.0f}% of step time ({(k.get('exposed_comm_s_per_step') or 0) * 1e3:.1f} ms of "
        f"{step * 1e3:.1f} ms) is communication nothing overlaps: the most any scheduling fix can save")
    strag = [s for s in doc.get("stragglers") or [] if s.get("significant")]
    if strag:
        s = strag[0]
        add("no straggler", "software", f"find out why rank {s['rank']} is late (data loading, a "
            "slower device, host contention)", f"rank {s['rank']} was last in {s['share_of_steps']:.0%} of "
            f"steps, costing each other rank {s['wait_cost_per_step_s'] * 1e3:.1f} ms/step")
    add("bandwidth x2", "infrastructure", "a 2× faster network",
        f"transfer is {(k.get('comm_s_per_step') or 0) * 1e3:.1f} ms in flight per step; only its "
        "exposed part shortens the step")
    return sorted(recs, key=lambda r: -r["projected_saving"])
