"""Numbers for people: sizes, durations, fractions and rates, parsed and printed.

Printing uses SI units (GB/s = 1e9 bytes/s).  Sizes parse with nccl-tests' binary ``K``/``M``/``G``
(= 2^10, 2^20, 2^30, also ``KiB``/``MiB``/``GiB``) and decimal ``kB``/``KB``/``MB``/``GB``
(= 10^3, 10^6, 10^9); ``B`` (or no unit) is bytes.  Standard library only: every layer may use it.
"""
from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
               "g": 1 << 30, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> int:
    """``"16MiB"`` -> 16777216; raises ValueError with the offending text."""
    m = _SIZE.match(text)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size (e.g. 8B, 64K, 16MiB, 1GB)")
    value = float(m.group(1)) * _SIZE_UNITS[unit]
    if value < 1 or value != int(value):
        raise ValueError(f"{text!r}: a size must be a whole number of bytes >= 1")
    return int(value)


def fmt_bytes(n) -> str:
    """A size in B/kB/MB/...; "unknown" for None or NaN (a size nobody measured)."""
    if n is None or (isinstance(n, float) and n != n):
        return "unknown"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"  # pragma: no cover


def fmt_seconds(s) -> str:
    if s is None:
        return "-"
    s = float(s)
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_pct(x) -> str:
    return "-" if x is None else f"{100 * float(x):.1f}%"


def fmt_gbps(x) -> str:
    if x is None:
        return "-"
    x = float(x)
    return f"{x:.3g} GB/s" if x >= 0.01 else f"{x * 1000:.3g} MB/s"
