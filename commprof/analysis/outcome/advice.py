"""Recommendations from the savings model (docs/whatif.md, "Recommendations"): the options ranked
by the saving :mod:`commprof.analysis.outcome.whatif` projects, worded for the job's parallelism
(:mod:`commprof.analysis.outcome.parallelism`), with the notes that say what bounds the job when a
faster network cannot help (one node; a probe showing the link is not the bottleneck).

Rules: waiting for late ranks shrinks only with balance, so when most communication time is
waiting the balance fix comes first and "a faster network" after every fix that addresses it;
a run on one node is never told to buy a network; a library's API is named only to the
parallelism that uses it (no DDP API to a job without DDP-style gradient all-reduces).
"""
from __future__ import annotations

from commprof.analysis.outcome import parallelism
from commprof.analysis.outcome.verdict import Note
from commprof.analysis.result.model import Kpis, OpRow, Report

MIN_SAVING = 0.005
WAIT_DOMINATES = 0.5  # waiting's share of communication time above which balance comes first
NOT_LINK_BOUND = 0.5  # link share (ε) below which a job is not bandwidth-bound

_BYTES = {
    "ddp": ("a bf16 compression hook: `ddp.register_comm_hook(None, default_hooks.bf16_compress_hook)`",
            "halving the gradient bytes (a lower-precision or compressed gradient format)"),
    "fsdp": ("FSDP mixed precision: `MixedPrecisionPolicy(param_dtype=torch.bfloat16, "
             "reduce_dtype=torch.bfloat16)` (FSDP2 `fully_shard(..., mp_policy=...)`)",
             "fewer bytes per all-gather and reduce-scatter (a lower `param_dtype`/`reduce_dtype` "
             "in FSDP's `MixedPrecisionPolicy`)"),
    "allreduce": ("halving the gradient bytes: all-reduce them in bf16 (cast before `dist.all_reduce`, "
                  "back after)", "halving the gradient bytes (a lower-precision or compressed format)"),
    "expert": ("halving the all_to_all payload (bf16/fp8 token dispatch, a lower capacity factor)",) * 2,
    "pipeline": ("halving the activations sent between stages (bf16/fp8 activations)",) * 2,
    "tensor": ("halving the bytes of the tensor-parallel all-reduces (bf16/fp8 activations)",) * 2,
}
_SYNC = {
    "ddp": "gradient accumulation over 4 micro-batches with DDP `no_sync()`",
    "allreduce": "gradient accumulation over 4 micro-batches (all-reduce the gradients on every 4th)",
    "fsdp": "gradient accumulation over 4 micro-batches without reduce-scatter "
            "(FSDP2 `model.set_requires_gradient_sync(False)` on 3 of 4): the all-gathers stay; "
            "`reshard_after_forward=False` also keeps parameters gathered between micro-batches, "
            "at a memory cost",
}
_OVERLAP = {
    "ddp": "better overlap (DDP `bucket_cap_mb`, so that gradient all-reduces start earlier in backward)",
    "allreduce": "better overlap (all-reduce each layer's gradients asynchronously, `async_op=True`, "
                 "as backward produces them; wait before the optimizer step)",
    "fsdp": "better overlap: FSDP prefetch (FSDP2 `set_modules_to_forward_prefetch` / "
            "`set_modules_to_backward_prefetch`, FSDP1 `forward_prefetch=True`), "
            "`reshard_after_forward=False` on the last units",
    "expert": "overlapping the all_to_all dispatch/combine with expert compute (split the batch "
              "into chunks whose dispatch runs under the previous chunk's experts)",
    "pipeline": "an interleaved or zero-bubble pipeline schedule (more micro-batches) to hide send/recv",
    "tensor": "asynchronous tensor parallelism (collective matmul / micro-pipelined TP) to hide its "
              "all-reduces",
}


def _ms(x) -> str:
    return "unknown" if x is None else f"{x * 1e3:.1f} ms"


def _dtype(ops: list[OpRow], fams: tuple[str, ...]) -> str | None:
    for o in ops:
        if parallelism.FAMILY.get(str(o.op)) in fams and o.dtype:
            return str(o.dtype)
    return None


def _bytes_text(k: Kpis) -> str:
    b = k.bytes_per_step
    return (f"{b / 1e6:.2f} MB per step per rank" if isinstance(b, (int, float)) and b > 0
            else "the bytes per step cannot be computed (the source carries no message sizes)")


def _late_rank(report: Report) -> str:
    strag = [s for s in report.stragglers if s.significant]
    if strag:
        s = strag[0]
        return (f"find out why rank {s.rank} is late (data loading, input skew, a slower device, "
                f"host contention): it was last in {s.share_of_steps:.0%} of steps")
    shares = [(r.last_share, r.rank) for r in report.ranks if isinstance(r.last_share, (int, float))]
    late = max(shares)[1] if shares else None
    who = f"; rank {late} arrived last most often" if late is not None else ""
    return ("balance the work across ranks (load imbalance, input skew — uneven batches or "
            f"sequence lengths —, a straggler){who}")


def _op_shares(ops: list[OpRow]) -> list[dict]:
    """The op rows as :mod:`parallelism` weighs them (by bytes, else by time)."""
    return [{"op": o.op, "group_size": o.group_size, "bytes": o.bytes, "time_s": o.time_s} for o in ops]


def recommendations(report: Report) -> list[dict]:
    """Software and infrastructure options ranked by the saving ``report.whatif`` projects, each
    with its evidence; when waiting dominates, balance first and a faster network after every
    other fix."""
    by = {w.name: w for w in report.whatif or []}
    if not by:
        return []
    k, ops = report.kpis, report.ops
    par = parallelism.detect(_op_shares(ops), report.run.world_size)
    kind = par["kind"]
    inputs = next(iter(by.values())).inputs
    comm = inputs.comm_s_per_step or 0.0
    wait = inputs.wait_s_per_step or 0.0
    transfer = (inputs.transfer_s_per_step if inputs.has("transfer_s_per_step")
                else comm - wait)
    wait_share = wait / comm if comm > 0 else 0.0
    exposed_pct = (k.exposed_comm_fraction or 0) * 100
    step = k.step_time_s or 0.0
    recs = []

    def add(scenario: str, kind_: str, action: str, evidence: str):
        w = by.get(scenario)
        if w and (w.saving or 0) > MIN_SAVING:
            recs.append({"scenario": scenario, "kind": kind_, "action": action, "evidence": evidence,
                         "projected_saving": w.saving, "projected_step_time_s": w.step_time_s})

    add("no straggler", "software", _late_rank(report),
        f"{wait_share:.0%} of communication time ({_ms(wait)} of {_ms(comm)} per step) is waiting "
        "for late ranks; bandwidth and fewer bytes do not shorten it")
    fams = {"ddp": ("all_reduce",), "allreduce": ("all_reduce",), "fsdp": ("all_gather", "reduce_scatter"),
            "expert": ("all_to_all",), "pipeline": ("p2p",)}.get(kind, tuple(parallelism.FAMILY.values()))
    dtype = _dtype(ops, fams)
    fp32, other = _BYTES.get(kind, ("halving the bytes communicated (a lower-precision or "
                                    "compressed format for the largest traffic)",) * 2)
    add("bytes /2", "software", fp32 if dtype and "float32" in dtype else other,
        f"{par['described']}, {dtype or 'dtype unknown'}: {_bytes_text(k)}; halving them halves "
        f"the {_ms(transfer)} of transfer per step, not the waiting")
    if kind in ("ddp", "allreduce", "fsdp", "mixed", "tensor"):  # without an op table: what it drops is unknown
        kept = inputs.kept_share or 0.0
        add("sync every 4 steps", "software", _SYNC.get(kind, "gradient accumulation over 4 "
            "micro-batches (synchronize gradients on every 4th)"),
            f"{exposed_pct:.0f}% of each step is exposed communication, paid every step"
            + (f"; {kept:.0%} of it is not a gradient reduction and stays" if kept > 0.005 else ""))
    add("perfect overlap", "software", _OVERLAP.get(kind, "better overlap (issue collectives "
        "asynchronously and wait for them as late as possible)"),
        f"{exposed_pct:.0f}% of step time ({_ms(k.exposed_comm_s_per_step)} of {_ms(step)}) "
        "is communication nothing overlaps; hidden, steps are still no shorter than "
        "max(compute, transfer)")
    if not inputs.single_node:
        share = inputs.link_share
        add("bandwidth x2", "infrastructure", "a 2× faster network",
            (f"transfer is {_ms(transfer)} per step (waiting for late ranks, {_ms(wait)}, excluded)"
             if inputs.wait_measured else f"{_ms(comm)} per step in flight, all taken as "
             "transfer (waiting for late ranks not measured: it needs every rank)")
            + (f"; the probe puts the link at {share:.0%} of it" if share is not None else
               "; without a probe all of it is taken as bandwidth-bound (`commprof run --probe`)"))
    recs.sort(key=lambda r: -r["projected_saving"])
    if wait_share >= WAIT_DOMINATES:  # balance first, a faster network after every other fix
        recs.sort(key=lambda r: (r["scenario"] != "no straggler", r["kind"] == "infrastructure"))
    return recs


def notes(baseline, run: dict, probe: dict | None) -> list[Note]:
    """What bounds the job when a faster network cannot help: one node, or a probe showing the
    link is not the bottleneck (latency, the CPU or the library instead)."""
    out = []
    if baseline is None:
        return out
    hosts = run.get("hosts") or []
    if baseline.single_node and (run.get("ranks_captured") or 0) > 1:
        out.append(Note("single_node", "info",
                        f"all {run.get('ranks_captured')} ranks ran on one host "
                        f"({hosts[0] if hosts else 'one node'}): their traffic crosses no network "
                        "(loopback, shared memory or NVLink), so no network purchase can help a "
                        "single node; fewer bytes, better overlap or balanced ranks can"))
    eps = baseline.link_share
    if eps is not None and eps < NOT_LINK_BOUND:
        i = baseline.inputs()
        floor, transfer = i["latency_floor_s_per_step"], i["transfer_s_per_step"]
        if transfer > 0 and floor >= 0.5 * transfer:
            what = (f"per-call latency ({_ms(floor)} of the {_ms(transfer)} of transfer per step "
                    "is the probe's small-message latency × calls per step: fewer, larger calls help)")
        elif "gloo" in str(run.get("backend", "")):
            what = "the CPU (gloo reduces and copies on the host's cores)"
        else:
            what = "the library and the GPU's copies and kernels, not the link"
        out.append(Note("not_bandwidth_bound", "info",
                        f"the job's collectives reached {eps:.0%} of the bus bandwidth the probe "
                        f"measured at their sizes: not bandwidth-bound — a faster link can shorten "
                        f"at most that share of the transfer; the rest is bound by {what}"))
    return out
