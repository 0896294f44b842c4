"""Which parallelism a job's communication shows, from the ops and groups it used (docs/whatif.md,
"Recommendations follow the parallelism").

The recommendations name a library's knobs only for the parallelism the traffic shows: DDP's
comm hooks and ``no_sync()`` to gradient all-reduces over the whole world with DDP's
broadcast of the module state (a job's own all-reduces without it get no DDP API), FSDP's mixed
precision, prefetch and ``reshard_after_forward`` to all-gathers with reduce-scatters, the
all_to_all payload to expert parallelism, schedules to pipelines' send/recv.  Weights are each
op family's bytes — not its time, which a run's first collectives inflate with the ranks'
start-up skew (DDP's one-off all_gather of parameter shapes) — and its time where no size is
known (profiler traces without message sizes).
"""
from __future__ import annotations

FAMILY = {"all_reduce": "all_reduce", "all_reduce_coalesced": "all_reduce", "reduce": "all_reduce",
          "all_gather": "all_gather", "all_gather_coalesced": "all_gather",
          "reduce_scatter": "reduce_scatter", "reduce_scatter_coalesced": "reduce_scatter",
          "all_to_all": "all_to_all", "send": "p2p", "recv": "p2p", "broadcast": "broadcast"}
GRADIENT_REDUCTIONS = ("all_reduce", "reduce_scatter")  # what skipping a gradient sync removes
KINDS = ("ddp", "allreduce", "fsdp", "expert", "pipeline", "tensor", "mixed", "none")
DESCRIBED = {"ddp": "data parallel (DDP: gradient all_reduce over every rank, state broadcast)",
             "allreduce": "data parallel, the job's own gradient all_reduce (no module-state broadcast)",
             "fsdp": "fully sharded data parallel (all_gather + reduce_scatter, FSDP/FSDP2)",
             "expert": "expert parallel (all_to_all token dispatch)",
             "pipeline": "pipeline parallel (send/recv between stages)",
             "tensor": "tensor parallel (all_reduce within groups smaller than the world)",
             "mixed": "mixed (no op family dominates)",
             "none": "parallelism unknown (no op table to read it from)"}


def _weight(row: dict, by_time: bool) -> float:
    v = row.get("time_s") if by_time else row.get("bytes")
    return float(v) if isinstance(v, (int, float)) and v > 0 else 0.0


def family_shares(ops: list[dict], world: int | None = None) -> dict:
    """Each op family's share of the job's communication (bytes, else time), with the share of
    all_reduce in groups smaller than the world apart (``all_reduce_subgroup``)."""
    by_time = not any(_weight(r, False) > 0 for r in ops)
    total: dict[str, float] = {}
    for r in ops:
        fam = FAMILY.get(str(r.get("op")), "other")
        if fam == "all_reduce" and world and (r.get("group_size") or world) < world:
            fam = "all_reduce_subgroup"
        total[fam] = total.get(fam, 0.0) + _weight(r, by_time)
    whole = sum(total.values())
    return {k: v / whole for k, v in total.items()} if whole > 0 else {}


def detect(ops: list[dict], world: int | None = None) -> dict:
    """``{"kind", "described", "shares"}``: ``kind`` one of :data:`KINDS`."""
    s = family_shares(ops, world)
    ag, rs = s.get("all_gather", 0.0), s.get("reduce_scatter", 0.0)
    if not s:
        kind = "none"
    elif ag > 0 and rs > 0 and ag + rs >= 0.5:
        kind = "fsdp"
    elif s.get("all_to_all", 0.0) >= 0.3:
        kind = "expert"
    elif s.get("p2p", 0.0) >= 0.3:
        kind = "pipeline"
    elif s.get("all_reduce", 0.0) >= 0.5:
        # DDP broadcasts the module's state at construction (and its buffers every forward by
        # default): without a broadcast the all-reduces are the job's own, not a DDP model's
        kind = "ddp" if "broadcast" in s else "allreduce"
    elif s.get("all_reduce_subgroup", 0.0) >= 0.5:
        kind = "tensor"
    else:
        kind = "mixed"
    return {"kind": kind, "described": DESCRIBED[kind], "shares": s}


def kept_share(ops: list[dict], world: int | None = None) -> float:
    """κ: the share of communication a step that skips its gradient sync still pays — everything
    but the gradient reductions over the whole world (FSDP's all-gathers, all_to_all, send/recv,
    tensor-parallel all-reduces); 0 when the job has no op table."""
    s = family_shares(ops, world)
    return 1.0 - sum(s.get(f, 0.0) for f in GRADIENT_REDUCTIONS) if s else 0.0
