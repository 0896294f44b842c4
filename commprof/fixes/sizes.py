"""The size arithmetic of the fixes, pure: PowerSGD's elements per gradient and DDP's bucket
count (torch 2.13's own rules, restated; tests check them against independent computations)."""
from __future__ import annotations


def powersgd_elements(shape: tuple[int, ...], rank: int, min_compression_rate: float = 2
                      ) -> tuple[int, int]:
    """(elements before, elements all-reduced) of one gradient under ``powerSGD_hook`` (torch
    2.13, its ``_should_compress``): the gradient viewed as ``shape[0]`` x the rest (n x m), its
    rank r = min(n, m, R); sent as P (n x r) and Q (m x r) when (n + m)·r·rate < n·m, else
    whole (vectors always: m = 1).  A 0-d tensor is sent whole."""
    numel = 1
    for d in shape:
        numel *= int(d)
    if not shape or numel == 0:
        return numel, numel
    n = int(shape[0])
    m = numel // n
    r = min(n, m, rank)
    compressed = (n + m) * r
    return numel, compressed if compressed * min_compression_rate < numel else numel


def bucket_count(ddp, dist) -> int | None:
    """The buckets DDP will use after its first-iteration rebuild (its own sizing rule, on the
    parameters in reverse order), or None when this torch does not expose it."""
    try:
        cap = int(ddp.bucket_bytes_cap)
        first = int(getattr(getattr(ddp, "_bucket_config", None), "first_bucket_bytes_cap",
                            dist._DEFAULT_FIRST_BUCKET_BYTES))
        sizes = [p.numel() * p.element_size() for p in ddp.module.parameters() if p.requires_grad]
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None
    limits, count, size = [min(first, cap), cap], 0, 0  # the reducer's rule: close at >= limit
    for nbytes in reversed(sizes):
        size += nbytes
        if size >= limits[min(count, 1)]:
            count, size = count + 1, 0
    return count + (size > 0)
