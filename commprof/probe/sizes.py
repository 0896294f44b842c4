"""Message sizes: ``8B:256MB`` sweeps (factor 2, like nccl-tests' ``-b 8 -e 256M -f 2``) and lists.

Units: those of :func:`commprof.format.units.parse_size` (``K``/``M``/``G`` binary as in nccl-tests,
``kB``/``MB``/``GB`` decimal).
"""
from __future__ import annotations

from commprof.format.units import parse_size


def parse_sizes(spec: str, factor: int = 2) -> list[int]:
    """``"8B:256MB"`` (min:max, × ``factor``), ``"8B:256MB:4"`` (explicit factor) or ``"1K,1M"``."""
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"{spec!r}: use MIN:MAX or MIN:MAX:FACTOR")
        lo, hi = parse_size(parts[0]), parse_size(parts[1])
        if len(parts) == 3:
            if not parts[2].strip().isdigit() or int(parts[2]) < 2:
                raise ValueError(f"{spec!r}: the factor must be an integer >= 2")
            factor = int(parts[2])
        if hi < lo:
            raise ValueError(f"{spec!r}: MAX is smaller than MIN")
        sizes, s = [], lo
        while s <= hi:
            sizes.append(s)
            s *= factor
        return sizes
    sizes = sorted({parse_size(p) for p in spec.split(",") if p.strip()})
    if not sizes:
        raise ValueError(f"{spec!r}: no size given")
    return sizes
