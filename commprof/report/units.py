"""Human-readable numbers (SI units, as GB/s = 1e9 bytes/s)."""
from __future__ import annotations


def fmt_bytes(n) -> str:
    if n is None:
        return "-"
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
