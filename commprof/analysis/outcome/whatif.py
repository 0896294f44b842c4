"""What-if projections — the one savings model of runs and traces (docs/whatif.md): the measured
step under a faster network, fewer bytes, rarer syncs, perfect overlap or balanced ranks.  The
verdict's bounds (:mod:`commprof.analysis.outcome.verdict`) are this model's limits, so no row exceeds them.

Inputs per measured rank-step (the analysis'): step time ``T``, communication in flight ``C``,
exposed ``E``; ``W``, the time the rank waited for late ranks in it (the cross-rank analysis'
measured wait, ``ranks[].wait_s``, as a share of the rank's communication time — every run or
trace that has it, not only significant stragglers); ``A``, a latency floor (calls per step × the
probe's small-message latency; 0 without a probe); ``ε``, the link's share of in-flight time
(probed: the job's bus bytes ÷ the probed busbw at its sizes ÷ its call time; unknown without a
probe); ``κ``, the share of transfer a step that does not synchronize gradients still pays (FSDP's
all-gathers).  Model, one line each:

* waiting is exposed first: ``W ← min(W, E)``; exposed transfer ``E_t = E − W``, transfer in
  flight ``C_t = max(C − W, E_t)`` — only ``C_t`` shrinks with bandwidth or bytes;
* the link-bound part of the transfer is ``ℓ = min(C_t − A, ε·C)`` (``C_t − A`` without a probe);
  bandwidth × b shortens ``ℓ`` only, bytes ÷ d everything beyond the floor:
  ``C_t' = A + ((C_t − A − ℓ) + ℓ/b)/d``; the time saved comes off the exposed tail first:
  ``E_t' = max(0, E_t − (C_t − C_t'))``;
* perfect overlap: ``E_t' = 0`` (waiting stays); balanced ranks: ``W' = 0``;
* a synchronizing step takes ``T_s = max((T − E) + E_t' + W', C_t' + W')``;
* a step that does not synchronize (every k): ``T_l = T − (1 − κ)·C_t`` on host clocks (hidden
  communication competes with compute for the cores), ``T − (1 − κ)·E_t`` on a GPU timeline
  (removing communication removes its exposed part only); waiting stays (a systematic imbalance
  is paid at the next sync); ``T' = (T_s + (k − 1)·T_l)/k``.

Every projected step is at least ``T − C`` (host) or ``T − E`` (GPU timeline): the verdict's
bound.  Projections are time-weighted like the KPIs (means over rank-steps), so no change
reproduces ``step_time_s``.  Pure functions; no printing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Baseline:
    """The measured steps a projection starts from: every rank's measured steps (one row each:
    its time, the communication in flight and exposed in it), the waiting for late ranks in each
    (a scalar or one per row; ``straggler_wait_s`` keeps its first name), and the model's caps
    (module docstring).  With no change a projection reproduces the report's ``step_time_s``."""

    step_s: object
    comm_s: object
    exposed_s: object
    straggler_wait_s: object = 0.0
    latency_floor_s: float = 0.0
    link_share: float | None = None  # ε: the link's share of in-flight time, from a probe
    kept_share: float = 0.0  # κ: share of transfer a non-synchronizing step keeps
    exposed_only: bool = False  # GPU timeline: removing communication removes the exposed part
    single_node: bool = False  # every rank on one host: no network between them
    wait_measured: bool = False  # W is the cross-rank analysis' measured wait (not a default)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.atleast_1d(np.asarray(self.step_s, dtype="float64"))
        e = np.minimum(np.atleast_1d(np.asarray(self.exposed_s, dtype="float64")), t)
        c = np.clip(np.atleast_1d(np.asarray(self.comm_s, dtype="float64")), e, t)
        return t, c, e

    def wait(self) -> np.ndarray:
        """Waiting for late ranks per row, exposed first: ``min(W, E)``."""
        t, _, e = self.arrays()
        w = np.broadcast_to(np.asarray(self.straggler_wait_s, dtype="float64"), t.shape)
        return np.clip(np.nan_to_num(w), 0.0, e)

    @property
    def mean_step_s(self) -> float:
        return float(np.mean(self.arrays()[0]))

    def floor_steps(self) -> np.ndarray:
        """Each row with its communication removed: ``T − C`` on host clocks, ``T − E`` on a GPU
        timeline (the compute under it stays) — no projection goes below it."""
        t, c, e = self.arrays()
        return t - (e if self.exposed_only else c)

    def inputs(self) -> dict:
        """What a projection starts from, as means over the measured steps (the KPIs')."""
        t, c, e = self.arrays()
        w = self.wait()
        return {"steps": int(len(t)), "step_s": float(np.mean(t)),
                "comm_s_per_step": float(np.mean(c)), "exposed_s_per_step": float(np.mean(e)),
                "straggler_wait_s_per_step": float(np.mean(w)),
                "wait_s_per_step": float(np.mean(w)),
                "transfer_s_per_step": float(np.mean(np.maximum(c - w, e - w))),
                "latency_floor_s_per_step": self.latency_floor_s,
                "link_share": self.link_share, "kept_share": self.kept_share,
                "exposed_only": self.exposed_only, "single_node": self.single_node,
                "wait_measured": self.wait_measured}

    @classmethod
    def from_steps(cls, meas, stragglers: list[dict], probe: dict | None, calls_per_step: float,
                   *, ranks: pd.DataFrame | None = None, step_wait: pd.DataFrame | None = None,
                   link_share: float | None = None,
                   kept_share: float = 0.0, exposed_only: bool = False,
                   single_node: bool = False) -> "Baseline | None":
        """From the measured rank-steps frame (``rank``, ``duration_s``, ``comm_s``,
        ``exposed_s``), the cross-rank analysis' measured wait whenever it exists — each
        rank-step's (``step_wait``: rank, step, wait_s), else each rank's share
        (``ranks``: ``wait_s``, ``comm_s``) —, the stragglers (their wait only without either),
        and the probe result (its small-message all_reduce latency)."""
        if meas is None or not len(meas):
            return None
        comm = meas["comm_s"].to_numpy("float64")
        wait = rank_wait(meas, ranks, step_wait)
        lat = ((probe or {}).get("latency_us") or {}).get("all_reduce")
        floor = calls_per_step * lat / 1e6 if lat else 0.0
        measured = wait is not None
        if wait is None:
            wait = max((s["wait_cost_per_step_s"] for s in stragglers or [] if s.get("significant")),
                       default=0.0)
        return cls(meas["duration_s"].to_numpy("float64"), comm,
                   meas["exposed_s"].to_numpy("float64"), wait, float(floor), link_share,
                   float(kept_share), bool(exposed_only), bool(single_node), measured)


def build(meas: pd.DataFrame, ranks: pd.DataFrame | None, kpis: dict, run: dict, ops, *,
          cross: dict | None = None, probe: dict | None = None,
          op_sizes: pd.DataFrame | None = None) -> Baseline | None:
    """The baseline of a run or of traces, from what their summaries hold: the measured
    rank-steps, ranks[] (its measured ``wait_s`` where the cross-rank analysis gave one), the
    KPIs (their time basis), ``run`` (world size, nodes), ``cross`` (the cross-rank analysis:
    per-step waits, stragglers), the op table (what a step without
    gradient sync keeps), and the probe with the size buckets (the link's share).  None on
    ``host_launch`` (no communication time) and without steps."""
    if kpis.get("time_basis") == "host_launch" or meas is None or not len(meas):
        return None
    from commprof.analysis.outcome.parallelism import kept_share
    rows = ops.to_dict("records") if isinstance(ops, pd.DataFrame) else list(ops or [])
    calls = float(meas["ops"].mean()) if "ops" in meas else 0.0
    return Baseline.from_steps(
        meas, (cross or {}).get("stragglers") or [], probe, calls, ranks=ranks,
        step_wait=step_waits(cross), link_share=link_share(op_sizes, probe),
        kept_share=kept_share(rows, run.get("world_size")),
        exposed_only=kpis.get("time_basis") in ("gpu_trace", "gpu_windows"),
        single_node=run.get("nodes") == 1)


def rank_wait(meas: pd.DataFrame, ranks: pd.DataFrame | None,
              step_wait: pd.DataFrame | None = None) -> np.ndarray | None:
    """Each rank-step's waiting: the cross-rank analysis' wait in that step where it has one
    (``step_wait``), else its in-flight time × the rank's measured wait share
    (``ranks[].wait_s ÷ ranks[].comm_s``, at most 1); None when no wait was measured."""
    if "rank" not in meas:
        return None
    out = None
    if ranks is not None and len(ranks) and "wait_s" in ranks and "comm_s" in ranks:
        r = ranks[["rank", "wait_s", "comm_s"]].dropna()
        r = r[r["comm_s"].astype("float64") > 0]
        if len(r):
            share = (r["wait_s"].astype("float64") / r["comm_s"].astype("float64")).clip(0.0, 1.0)
            by_rank = pd.Series(share.to_numpy(), index=r["rank"].astype("int64").to_numpy())
            s = by_rank.reindex(meas["rank"].astype("int64").to_numpy()).fillna(0.0)
            out = s.to_numpy("float64") * meas["comm_s"].to_numpy("float64")
    if step_wait is not None and len(step_wait) and "step" in meas:
        keys = meas[["rank", "step"]].astype("int64").reset_index(drop=True)
        w = keys.merge(step_wait.astype({"rank": "int64", "step": "int64"}), on=["rank", "step"],
                       how="left")["wait_s"].to_numpy("float64")
        base = out if out is not None else np.zeros(len(keys))
        out = np.where(np.isfinite(w), w, base)
    return out


def step_waits(cross: dict | None) -> pd.DataFrame | None:
    """(rank, step, wait_s) from the cross-rank analysis' ``per_step`` rows, None without."""
    rows = [(r, s["step"], w) for s in (cross or {}).get("per_step") or []
            for r, w in zip(s.get("ranks") or [], s.get("wait_s") or []) if w is not None]
    return pd.DataFrame(rows, columns=["rank", "step", "wait_s"]) if rows else None


def step_components(b: "Baseline | None", kpis: dict) -> dict:
    """The parts a mean step is made of, named for what they are and adding up:
    ``step_time_s = no_comm_s_per_step + hidden_comm_s_per_step + exposed_transfer_s_per_step +
    wait_s_per_step`` (waiting counted exposed first).  ``no_comm_s_per_step`` is time with no
    communication in flight — compute, and on a GPU timeline idle too (``idle_s_per_step``,
    profiler traces: the GPU ran nothing).  Waiting and transfer are null where no cross-rank
    wait was measured."""
    out = {k: None for k in ("no_comm_s_per_step", "wait_s_per_step", "transfer_s_per_step",
                             "exposed_transfer_s_per_step", "idle_s_per_step")}
    if b is None:
        return out
    t, c, e = b.arrays()
    out["no_comm_s_per_step"] = float(np.mean(t - c))
    if b.wait_measured:
        w = b.wait()
        out["wait_s_per_step"] = float(np.mean(w))
        out["transfer_s_per_step"] = float(np.mean(c - w))
        out["exposed_transfer_s_per_step"] = float(np.mean(e - w))
    idle, step = kpis.get("gpu_idle_fraction"), kpis.get("step_time_s")
    if kpis.get("time_basis") == "gpu_trace" and idle is not None and step is not None:
        out["idle_s_per_step"] = float(idle * step)
    return out


def link_share(op_sizes: pd.DataFrame | None, probe: dict | None) -> float | None:
    """ε: the time the job's traffic would take at the probed bus bandwidth (Σ bus bytes ÷ the
    probe's busbw at each op and size) ÷ the time its calls took, over the size buckets the probe
    covers; None without a probe, or when it covers under half the bus bytes."""
    if probe is None or op_sizes is None or not len(op_sizes):
        return None
    from commprof.analysis.host.links import probe_busbw
    link_ns = call_ns = covered = 0.0
    total = float(op_sizes["bus_bytes"].sum())
    for r in op_sizes.itertuples():
        if r.count <= 0 or r.time_ns <= 0 or r.bus_bytes <= 0:
            continue
        ref = probe_busbw(probe, r.op, r.bytes / r.count)
        if not ref:
            continue
        link_ns += r.bus_bytes / ref  # bytes ÷ (bytes/ns)
        call_ns += r.time_ns
        covered += r.bus_bytes
    if total <= 0 or covered < 0.5 * total or call_ns <= 0:
        return None
    return float(min(1.0, link_ns / call_ns))


def project(b: Baseline, bandwidth: float = 1.0, bytes_div: float = 1.0, sync_every: int = 1,
            overlap: bool = False, no_straggler: bool = False, compute_add_s: float = 0.0,
            keep_compute: bool = False) -> dict:
    """Projected step time and communication fractions under one combination of changes: each
    measured step is projected, and the time-weighted result reported (means over steps).

    Two changes of a fix's own (``commprof try``'s projections, docs/try.md): ``compute_add_s``,
    compute the fix adds to every step, serially (PowerSGD's compression between its
    all-reduces; negative: compute it removes); ``keep_compute``: a step that does not
    synchronize drops only its exposed transfer, on host clocks too (local SGD: the ranks'
    compute stays whole, only the waits go)."""
    if bandwidth <= 0 or bytes_div <= 0 or sync_every < 1:
        raise ValueError("bandwidth and bytes factors must be > 0, sync_every >= 1")
    t, c, e = b.arrays()
    w0 = b.wait()
    wait = np.zeros_like(e) if no_straggler else w0
    e_t = np.maximum(e - w0, 0.0)
    c_t = np.maximum(c - w0, e_t)
    floor = np.minimum(b.latency_floor_s, c_t)
    beyond = c_t - floor
    link = beyond if b.link_share is None else np.minimum(beyond, b.link_share * c)
    c_t2 = floor + (beyond - link + link / bandwidth) / bytes_div
    e_t2 = np.zeros_like(e_t) if overlap else np.maximum(0.0, e_t - (c_t - c_t2))
    compute = t - e
    # a synchronizing step: communication cannot hide in less compute than it takes
    step_sync = np.maximum(compute + e_t2 + wait, c_t2 + wait)
    # a step that does not synchronize gradients keeps what is not a gradient reduction (κ);
    # host clocks: hidden communication competes with compute, so all of it goes; GPU: the
    # exposed part only.  Waiting for a systematically late rank is paid at the next sync.
    gone = (1.0 - b.kept_share) * (e_t if b.exposed_only or keep_compute else c_t)
    step_local = np.maximum(t - gone - (w0 - wait), b.floor_steps())
    k = sync_every
    steps2 = np.maximum((step_sync + (k - 1) * step_local) / k + compute_add_s, 0.0)
    step2 = float(np.mean(steps2))
    kept_c, kept_e = b.kept_share * c_t, b.kept_share * e_t
    exposed2 = float(np.mean((e_t2 + wait + (k - 1) * (kept_e + wait)) / k))
    comm2 = float(np.mean((c_t2 + wait + (k - 1) * (kept_c + wait)) / k))
    base = b.mean_step_s
    return {"step_time_s": step2, "speedup": base / step2 if step2 > 0 else None,
            "saving": 1 - step2 / base if base > 0 else None,
            "comm_fraction": comm2 / step2 if step2 > 0 else None,
            "exposed_comm_fraction": exposed2 / step2 if step2 > 0 else None}


def bounds(b: Baseline | None) -> tuple[float | None, float | None]:
    """(speed-up of perfect overlap, speed-up with communication removed): the verdict's figures,
    the model's own limits (module docstring)."""
    if b is None:
        return None, None
    floor = float(np.mean(b.floor_steps()))
    return project(b, overlap=True)["speedup"], (b.mean_step_s / floor if floor > 0 else float("inf"))


SCENARIOS = [
    ("bandwidth x2", dict(bandwidth=2), "link bandwidth doubled (infrastructure): the link-bound "
     "part of the transfer halves (all of it beyond the latency floor without a probe); waiting "
     "for late ranks does not"),
    ("bandwidth x4", dict(bandwidth=4), "link bandwidth ×4: the link-bound part of the transfer ÷4"),
    ("bytes /2", dict(bytes_div=2), "half the bytes (lower-precision or compressed traffic): "
     "transfer time beyond the latency floor halves, waiting and compute unchanged"),
    ("bytes /10", dict(bytes_div=10), "a tenth of the bytes (PowerSGD, top-k): transfer time ÷10, "
     "compression compute ignored"),
    ("sync every 4 steps", dict(sync_every=4), "gradient accumulation over 4 micro-steps: one step "
     "in 4 synchronizes; the other 3 drop the gradient reductions' transfer (all of it on host "
     "clocks, its exposed part on a GPU timeline) and keep other traffic (FSDP's all-gathers, "
     "all_to_all) and the waiting (time per micro-step shown)"),
    ("perfect overlap", dict(overlap=True), "all transfer hidden behind compute: steps no shorter "
     "than max(compute, transfer) — the upper bound of scheduling fixes (bucketing, prefetch, async)"),
    ("no straggler", dict(no_straggler=True), "the ranks arrive together (balanced load, no "
     "straggler, no input skew): the measured waiting for late ranks disappears"),
]
WAIT_SHOWN = 0.005  # "no straggler" is shown when waiting is over 0.5 % of the step


def scenarios(b: Baseline | None) -> list[dict]:
    """The document's ``whatif`` list (empty when the run has no step KPIs)."""
    if b is None:
        return []
    inputs = b.inputs()
    out = []
    for name, kwargs, model in SCENARIOS:
        if name == "no straggler" and inputs["wait_s_per_step"] <= WAIT_SHOWN * inputs["step_s"]:
            continue
        if name.startswith("bandwidth") and b.single_node:
            model += " — one node: its ranks' traffic crosses no network (loopback, shared memory, NVLink)"
        out.append({"name": name, "model": model, "inputs": inputs, "changes": kwargs,
                    **project(b, **kwargs)})
    return out
