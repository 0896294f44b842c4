"""Fallback capture for collectives called under ``torch.inference_mode()``.

Inference mode excludes the ADInplaceOrView dispatch key, so the dispatcher kernels of
:mod:`commprof.capture.collectives` never run there.  For that case only, the public
``torch.distributed`` functions are wrapped: outside inference mode a wrapper is a single check
and a pass-through (the dispatcher kernel records the call, so nothing is counted twice); inside
it, the wrapper records the call from its Python arguments.  Collectives that C++ issues under
inference mode (e.g. DDP's buffer broadcast) remain invisible.
"""
from __future__ import annotations

import functools
import inspect
import threading

from commprof.format import schema

# function -> (op, input parameters, output parameters, global peer parameter, group-local peer)
PY_OPS = {
    "all_reduce": ("all_reduce", ("tensor",), ("tensor",), None, None),
    "all_reduce_coalesced": ("all_reduce_coalesced", ("tensors",), ("tensors",), None, None),
    "broadcast": ("broadcast", ("tensor",), ("tensor",), "src", "group_src"),
    "reduce": ("reduce", ("tensor",), ("tensor",), "dst", "group_dst"),
    "all_gather": ("all_gather", ("tensor",), ("tensor_list",), None, None),
    "all_gather_into_tensor": ("all_gather", ("input_tensor",), ("output_tensor",), None, None),
    "all_gather_single": ("all_gather", ("input_tensor",), ("output_tensor",), None, None),
    "reduce_scatter": ("reduce_scatter", ("input_list",), ("output",), None, None),
    "reduce_scatter_tensor": ("reduce_scatter", ("input",), ("output",), None, None),
    "reduce_scatter_single": ("reduce_scatter", ("input",), ("output",), None, None),
    "all_to_all": ("all_to_all", ("input_tensor_list",), ("output_tensor_list",), None, None),
    "all_to_all_single": ("all_to_all", ("input",), ("output",), None, None),
    "gather": ("gather", ("tensor",), ("gather_list",), "dst", "group_dst"),
    "scatter": ("scatter", ("scatter_list",), ("tensor",), "src", "group_src"),
    "barrier": ("barrier", (), (), None, None),
    "send": ("send", ("tensor",), (), "dst", "group_dst"),
    "isend": ("send", ("tensor",), (), "dst", "group_dst"),
    "recv": ("recv", (), ("tensor",), "src", "group_src"),
    "irecv": ("recv", (), ("tensor",), "src", "group_src"),
}


def install(hooks, torch_module) -> list[str]:
    """Wrap the functions of ``torch.distributed`` listed in :data:`PY_OPS`; returns their names."""
    import torch.distributed as dist
    from torch.distributed import distributed_c10d as c10d
    is_inference = torch_module.is_inference_mode_enabled
    local = threading.local()
    wrapped = []
    for name, spec in PY_OPS.items():
        original = getattr(c10d, name, None)
        if original is None:
            continue
        wrapper = _wrap(name, original, spec, hooks, is_inference, local, c10d)
        for mod in (c10d, dist):
            if getattr(mod, name, None) is original:
                setattr(mod, name, wrapper)
        wrapped.append(name)
    return wrapped


def _wrap(name, original, spec, hooks, is_inference, local, c10d):
    op, inputs, outputs, peer_global, peer_local = spec
    op_code = schema.OP_INDEX[op]
    signature = inspect.signature(original)
    rec = hooks.rec
    clock = rec.clock

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if not is_inference() or getattr(local, "depth", 0) or not rec.enabled:
            return original(*args, **kwargs)
        local.depth = 1  # nested public calls (deprecated aliases) are this same call
        try:
            t0 = clock()
            result = original(*args, **kwargs)
            t1 = clock()
        finally:
            local.depth = 0
        try:
            _record(args, kwargs, result, t0, t1)
        except Exception as exc:  # noqa: BLE001 - recorded, never raised
            rec.degrade("inference_mode", exc)
        return result

    def _record(args, kwargs, result, t0, t1):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        group = a.get("group") or c10d._get_default_group()
        peer = -1
        if peer_local and a.get(peer_local) is not None:
            peer = a[peer_local]
        elif peer_global and a.get(peer_global) is not None:
            peer = c10d.get_group_rank(group, a[peer_global])
        work = result if isinstance(result, hooks.Work) else None
        hooks.record(op_code, op in ("send", "recv"), group,
                     [a.get(p) for p in inputs], [a.get(p) for p in outputs], peer, work, t0, t1,
                     schema.FLAG_INFERENCE_MODE)

    wrapper.__commprof_original__ = original
    return wrapper
