"""Message sizes: ``8B:256MB`` sweeps (factor 2, like nccl-tests' ``-b 8 -e 256M -f 2``) and lists.

Units: ``B``; ``K``/``KiB`` = 2^10, ``M``/``MiB`` = 2^20, ``G``/``GiB`` = 2^30 (nccl-tests' K/M/G);
``kB``/``KB``/``MB``/``GB`` = 10^3/10^6/10^9.
"""
from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> int:
    """``"16MiB"`` -> 16777216; raises ValueError with the offending text."""
    m = _SIZE.match(text)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (e.g. 8B, 64K, 16MiB, 1GB)")
    value = float(m.group(1)) * _UNITS[unit]
    if value < 1 or value != int(value):
        raise ValueError(f"{text!r}: a size must be a whole number of bytes >= 1")
    return int(value)


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
