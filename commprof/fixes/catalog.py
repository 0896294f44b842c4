"""The software fixes ``commprof try`` can apply to an unmodified job (docs/try.md).

Each fix is a small class behind one interface (:class:`Fix`): what it targets (DDP or FSDP2),
the constructor options it sets, or the DDP comm hook it registers, what it changes numerically,
the what-if projection of the same change, and the line a user adds to apply it in code.  Pure
definitions: :mod:`commprof.fixes.install` applies them inside a worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from commprof.errors import UsageError
from commprof.fixes.sizes import bucket_count, powersgd_elements

DEFAULT_WARMUP = 5  # steps of full synchronization before PowerSGD / local SGD start


@dataclass
class Fix:
    """One fix.  ``arg``: its parameter (``powersgd:2`` → "2"); ``warmup``: steps before a
    fix with a warm-up takes effect."""

    arg: str | None = None
    warmup: int = DEFAULT_WARMUP
    name: ClassVar[str] = ""
    target: ClassVar[str] = "ddp"  # "ddp" or "fsdp"
    kind: ClassVar[str] = "hook"  # "hook" (a DDP comm hook), "ddp_option", "fsdp_option"
    changes: ClassVar[str] = ""  # what it changes numerically
    avoid: ClassVar[str] = ""  # when not to use it

    @property
    def spec(self) -> str:
        return self.name + (f":{self.arg}" if self.arg is not None else "")

    def check(self) -> None:
        """Raise :class:`UsageError` for a bad argument."""
        if self.arg is not None:
            raise UsageError(f"fix {self.spec!r}: {self.name} takes no argument")

    def whatif(self) -> dict:
        """The what-if scenario of the same change (``commprof.analysis.outcome.whatif.project`` keywords),
        or {} when the what-if has no model of it."""
        return {}

    def options(self) -> dict:
        """Constructor keyword arguments it sets (DDP or ``fully_shard``)."""
        return {}

    def hook(self, ddp, torch_module):
        """(state, hook) of a comm-hook fix for the DDP instance ``ddp``."""
        raise NotImplementedError

    def refuse(self, ddp, torch_module) -> str | None:
        """Why this fix cannot run on ``ddp`` (it is then skipped, never half-applied), or None."""
        return None

    def after_optimizer_step(self, ddp) -> None:
        """Called after each step of the job's first optimizer (local SGD's model averaging)."""

    def code(self) -> str:
        """The line(s) that apply it in the user's script."""
        return ""

    def op_bytes(self, measured_steps: int | None = None, reported: dict | None = None
                 ) -> dict[str, tuple[float, float] | None]:
        """How it changes the bytes of each op it touches (docs/try.md, "Bytes, per op"): op ->
        (lowest, highest) factor on that op's share the fix acts on (a DDP fix: the gradients,
        the op's calls in backward; an FSDP fix: the whole op), None where the factor is known
        only once it ran.  Ops not named are unchanged.  ``measured_steps``: the steps compared
        (local SGD's averaging count); ``reported``: the fix's ``applied`` event (PowerSGD's
        ``bytes_ratio``, from the model's shapes)."""
        return {}

    def applied_details(self, ddp) -> dict:
        """Extra fields of its ``applied`` event, computed on the model it applies to."""
        return {}


def _int_arg(fix: Fix, default: int, low: int) -> int:
    if fix.arg is None:
        return default
    try:
        value = int(fix.arg)
    except ValueError:
        raise UsageError(f"fix {fix.spec!r}: expected an integer after ':'") from None
    if value < low:
        raise UsageError(f"fix {fix.spec!r}: must be >= {low}")
    return value


class _Compress(Fix):
    dtype: ClassVar[str] = ""
    changes = ("gradients are cast to {dtype} before the all-reduce and back after: half the "
               "all_reduce bytes; every gradient collective's dtype is {dtype}; the averaged "
               "gradient is rounded to {dtype} ({bits} mantissa bits)")

    def whatif(self) -> dict:
        return {"bytes_div": 2.0}

    def op_bytes(self, measured_steps=None, reported=None):
        return {"all_reduce": (0.5, 0.5)}

    def hook(self, ddp, torch_module):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        return None, getattr(default_hooks, f"{self.dtype}_compress_hook")

    def code(self) -> str:
        return ("from torch.distributed.algorithms.ddp_comm_hooks import default_hooks\n"
                f"ddp.register_comm_hook(None, default_hooks.{self.dtype}_compress_hook)")


class Bf16Compress(_Compress):
    name, dtype = "bf16-compress", "bf16"
    changes = _Compress.changes.format(dtype="bfloat16", bits=7)
    avoid = ("gradients whose sum needs more than 8 significant bits (tiny updates to large "
             "weights); DDP refuses this hook by name without CUDA + NCCL >= 2.10, so commprof "
             "registers it through its own wrapper on gloo")


class Fp16Compress(_Compress):
    name, dtype = "fp16-compress", "fp16"
    changes = _Compress.changes.format(dtype="float16", bits=10)
    avoid = "gradients beyond float16's range (about 6e-5 to 65504): they underflow or overflow"


class PowerSGD(Fix):
    name = "powersgd"
    changes = ("after the warm-up, each matrix gradient (m x n, 2-D after flattening the trailing "
               "dimensions) is sent as two rank-R factors, (m + n) x R values instead of m x n, "
               "where that is at least 2x smaller; vectors (biases) are all-reduced whole; error "
               "feedback keeps the residual for the next step")
    avoid = "models with few large matrices; the first steps (warm-up) synchronize in full"

    def check(self) -> None:
        _int_arg(self, 1, 1)

    @property
    def rank(self) -> int:
        return _int_arg(self, 1, 1)

    def op_bytes(self, measured_steps=None, reported=None):
        ratio = (reported or {}).get("bytes_ratio")
        return {"all_reduce": (float(ratio), float(ratio)) if ratio is not None else None}

    def applied_details(self, ddp) -> dict:
        """``bytes_ratio``: the gradient bytes PowerSGD all-reduces per step after its warm-up ÷
        those of a plain all-reduce, from the shapes of the parameters DDP reduces."""
        params = [p for p in ddp.module.parameters() if p.requires_grad]
        full = sum(p.numel() * p.element_size() for p in params)
        after = sum(powersgd_elements(tuple(p.shape), self.rank)[1] * p.element_size() for p in params)
        return {"bytes_ratio": after / full if full else None, "gradient_bytes": full}

    def refuse(self, ddp, torch_module) -> str | None:
        """PowerSGD issues its second and third all-reduces from the first one's completion
        callback; on gloo those run on gloo's threads, and with several buckets in flight the
        ranks' collectives interleave differently (torch 2.13: "Received data size doesn't match
        expected size", then an abort).  With NCCL, or one bucket, the order holds."""
        dist = torch_module.distributed
        try:
            backend = str(dist.get_backend(ddp.process_group)).lower()
        except (RuntimeError, ValueError, AttributeError):
            backend = "unknown"
        if "nccl" in backend:
            return None
        buckets = bucket_count(ddp, dist)
        if buckets == 1:
            return None
        return (f"PowerSGD on {backend} needs a single DDP bucket (this model has "
                f"{buckets or 'an unknown number of'} buckets: its chained all-reduces run from "
                "gloo's callbacks and interleave across buckets); use NCCL, or a bucket-cap "
                "larger than the model")

    def hook(self, ddp, torch_module):
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as ps
        state = ps.PowerSGDState(process_group=None, matrix_approximation_rank=self.rank,
                                 start_powerSGD_iter=max(2, self.warmup))
        return state, ps.powerSGD_hook

    def code(self) -> str:
        return ("from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as ps\n"
                f"ddp.register_comm_hook(ps.PowerSGDState(process_group=None, matrix_approximation_rank={self.rank}, "
                f"start_powerSGD_iter={max(2, self.warmup)}), ps.powerSGD_hook)")


class LocalSGD(Fix):
    name = "local-sgd"
    changes = ("after the warm-up, gradients are not all-reduced at all (post-local SGD); every "
               "K-th step the parameters are averaged over all ranks instead (one all_reduce of "
               "all parameters): the model is synchronized on 1 step in K")
    avoid = ("large K on non-convex problems with large learning rates (replicas drift apart); "
             "optimizers with state that should be averaged too (momentum is not)")

    def __post_init__(self):
        self._averager = None

    def check(self) -> None:
        _int_arg(self, 4, 2)

    @property
    def period(self) -> int:
        return _int_arg(self, 4, 2)

    def whatif(self) -> dict:
        return {"sync_every": self.period}

    def op_bytes(self, measured_steps=None, reported=None):
        """The gradient all-reduce replaced by one all-reduce of the parameters every K-th
        step: over n steps, between ⌊n/K⌋ and ⌈n/K⌉ steps' worth."""
        n, k = measured_steps, self.period
        return {"all_reduce": ((n // k) / n, -(-n // k) / n) if n else None}

    def averaging_step(self, step: int) -> bool:
        """Whether the model is averaged after optimizer step ``step`` (0 = the first):
        ``PeriodicModelAverager``'s rule, step >= warm-up and (step − warm-up) % K == 0."""
        return step >= self.warmup and (step - self.warmup) % self.period == 0

    def hook(self, ddp, torch_module):
        from torch.distributed.algorithms.ddp_comm_hooks import post_localSGD_hook as pl
        from torch.distributed.algorithms.model_averaging import averagers
        state = pl.PostLocalSGDState(process_group=None, subgroup=None,
                                     start_localSGD_iter=self.warmup,
                                     post_local_gradient_allreduce=False)
        self._averager = averagers.PeriodicModelAverager(period=self.period, warmup_steps=self.warmup)
        return state, pl.post_localSGD_hook

    def after_optimizer_step(self, ddp) -> None:
        if self._averager is not None:
            self._averager.average_parameters(ddp.module.parameters())

    def code(self) -> str:
        return ("from torch.distributed.algorithms.ddp_comm_hooks import post_localSGD_hook as pl\n"
                "from torch.distributed.algorithms.model_averaging import averagers\n"
                f"ddp.register_comm_hook(pl.PostLocalSGDState(None, None, start_localSGD_iter={self.warmup}, "
                "post_local_gradient_allreduce=False), pl.post_localSGD_hook)\n"
                f"averager = averagers.PeriodicModelAverager(period={self.period}, warmup_steps={self.warmup})\n"
                "# after each optimizer.step(): averager.average_parameters(model.parameters())\n"
                "# before evaluating or saving (between averaging steps every rank has its own model):\n"
                "from torch.distributed.algorithms.model_averaging.utils import average_parameters\n"
                "average_parameters(model.parameters(), torch.distributed.group.WORLD)")


class BucketCap(Fix):
    name, kind = "bucket-cap", "ddp_option"
    changes = ("DDP's gradient buckets hold at most MB megabytes: fewer, larger all-reduces "
               "(less per-call latency) or more, smaller ones (earlier overlap with backward); "
               "bytes unchanged")
    avoid = "large caps on small models: the first all-reduce waits for most of backward"

    def check(self) -> None:
        try:
            ok = float(self.arg) > 0 if self.arg is not None else False
        except ValueError:
            ok = False
        if not ok:
            raise UsageError(f"fix {self.spec!r}: expected bucket-cap:MB (a positive number)")

    def options(self) -> dict:
        return {"bucket_cap_mb": float(self.arg)}

    def code(self) -> str:
        return f"DDP(model, bucket_cap_mb={float(self.arg):g})"


class StaticGraph(Fix):
    name, kind = "static-graph", "ddp_option"
    changes = "DDP assumes the same graph every step: bucket order fixed after the first step; bytes unchanged"
    avoid = "models whose used parameters change between steps (control flow, unused parameters)"

    def options(self) -> dict:
        return {"static_graph": True}

    def code(self) -> str:
        return "DDP(model, static_graph=True)"


class GradAsBucketView(Fix):
    name, kind = "grad-as-bucket-view", "ddp_option"
    changes = "gradients are views into DDP's buckets: one copy less per step; bytes unchanged"
    avoid = "code that replaces .grad tensors or keeps references to them across steps"

    def options(self) -> dict:
        return {"gradient_as_bucket_view": True}

    def code(self) -> str:
        return "DDP(model, gradient_as_bucket_view=True)"


class ReshardAfterForward(Fix):
    name, target, kind = "reshard-after-forward", "fsdp", "fsdp_option"
    changes = ("FSDP2 keeps each module's gathered parameters from forward to backward: no "
               "all_gather in backward (one per sharded module fewer each step), more memory")
    avoid = "models that fit only because parameters are resharded after forward"

    def check(self) -> None:
        if str(self.arg).lower() not in ("false", "0", "no"):
            raise UsageError(f"fix {self.spec!r}: only reshard-after-forward=false is a fix")

    @property
    def spec(self) -> str:
        return f"{self.name}=false"

    def options(self) -> dict:
        return {"reshard_after_forward": False}

    def op_bytes(self, measured_steps=None, reported=None):
        """Backward's all_gathers dropped, forward's kept: fewer all_gather bytes, at most half
        of them gone (a module is gathered once in forward, once in backward)."""
        return {"all_gather": (0.5, 0.96), "reduce_scatter": (1.0, 1.0)}

    def code(self) -> str:
        return "fully_shard(module, reshard_after_forward=False)"


class Bf16Reduce(Fix):
    name, target, kind = "bf16-reduce", "fsdp", "fsdp_option"
    changes = ("FSDP2 reduce-scatters gradients in bfloat16 (MixedPrecisionPolicy(reduce_dtype="
               "torch.bfloat16)): half the reduce_scatter bytes; parameters stay in their dtype")
    avoid = "the same as bf16-compress: gradients that need more than 8 significant bits"

    def whatif(self) -> dict:
        return {"bytes_div": 2.0}

    def op_bytes(self, measured_steps=None, reported=None):
        return {"reduce_scatter": (0.5, 0.5), "all_gather": (1.0, 1.0)}

    def options(self) -> dict:
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy
        return {"mp_policy": MixedPrecisionPolicy(reduce_dtype=torch.bfloat16)}

    def code(self) -> str:
        return ("from torch.distributed.fsdp import MixedPrecisionPolicy\n"
                "fully_shard(module, mp_policy=MixedPrecisionPolicy(reduce_dtype=torch.bfloat16))")


FIXES: dict[str, type[Fix]] = {cls.name: cls for cls in (
    Bf16Compress, Fp16Compress, PowerSGD, LocalSGD, BucketCap, StaticGraph, GradAsBucketView,
    ReshardAfterForward, Bf16Reduce)}


def parse(text: str, warmup: int = DEFAULT_WARMUP) -> list[Fix]:
    """``"bf16-compress,bucket-cap:25"`` → fixes; :class:`UsageError` naming the bad part."""
    out: list[Fix] = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        name, sep, arg = part.partition(":")
        if not sep:
            name, sep, arg = part.partition("=")
        cls = FIXES.get(name.strip().lower())
        if cls is None:
            raise UsageError(f"unknown fix {part!r}; known: {', '.join(FIXES)}")
        fix = cls(arg.strip() if sep else None, warmup)
        fix.check()
        out.append(fix)
    if not out:
        raise UsageError("no fix given: e.g. bf16-compress, powersgd:2, local-sgd:4, bucket-cap:25")
    hooks = [f.spec for f in out if f.kind == "hook"]
    if len(hooks) > 1:
        raise UsageError(f"fixes {', '.join(hooks)} each register a DDP comm hook: DDP takes one")
    if len({f.name for f in out}) < len(out):
        raise UsageError(f"fix given twice in {text!r}")
    return out
