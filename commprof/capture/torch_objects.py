"""Reading torch's objects for the capture: the blocking ``torch.distributed`` functions' code
objects, tensor sizes, attributes a torch may lack (capture/collectives.py, capture/native)."""
from __future__ import annotations

import inspect


def blocking_api_codes(torch_module) -> frozenset:
    """Code objects of the ``torch.distributed`` functions that wait on their own Work."""
    from torch.distributed import distributed_c10d as c10d
    codes = set()
    for value in vars(c10d).values():
        fn = inspect.unwrap(getattr(value, "__commprof_original__", value)) if callable(value) else None
        code = getattr(fn, "__code__", None)
        if code is not None and code.co_filename == c10d.__file__:
            codes.add(code)
    return frozenset(codes)


def safe(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - an attribute this torch lacks: treated as unknown
        return None


def tensor_sizes(obj) -> tuple[int, int, object]:
    """(numel, bytes, first dtype) of a tensor, a list of tensors or a list of lists."""
    if obj is None:
        return 0, 0, None
    if isinstance(obj, (list, tuple)):
        numel = nbytes = 0
        dtype = None
        for item in obj:
            n, b, d = tensor_sizes(item)
            numel += n
            nbytes += b
            dtype = dtype or d
        return numel, nbytes, dtype
    return obj.numel(), obj.nbytes, obj.dtype


def checked_blocking_api_codes(torch_module, rec) -> frozenset:
    """:func:`blocking_api_codes`, recorded as degraded (``work.wait.sync``) when they miss
    ``all_reduce``'s: a torch whose ``distributed_c10d`` changed so that its blocking functions
    are not found by their code objects (waits inside them then read as the job's own waits)."""
    from torch.distributed import distributed_c10d as c10d
    codes = blocking_api_codes(torch_module)
    probe = getattr(c10d, "all_reduce", None)
    probe = inspect.unwrap(getattr(probe, "__commprof_original__", probe)) if callable(probe) else None
    if getattr(probe, "__code__", None) not in codes:
        rec.degrade("work.wait.sync", RuntimeError(
            "torch.distributed's blocking functions were not found by their code objects "
            f"({len(codes)} found, all_reduce not among them): waits inside blocking calls are "
            "counted as the job's own waits"))
    return codes
