"""Which torch releases commprof was tested with (docs/compatibility.md).

The capture depends on torch internals (the ``c10d::`` operator schemas, ``distributed_c10d``'s
code objects, DDP's comm-hook and ``fully_shard`` signatures, the profiler's events), so commprof
states what it ran its tests on, and says so — one line, never a refusal — when the running torch
is another release.  Keep :data:`TESTED` in step with pyproject.toml's range, the README and the
matrix in ``.ci/run`` / ``scripts/torch_matrix.sh``.
"""
from __future__ import annotations

from importlib import metadata

# release -> how it is tested.  The declared range (pyproject.toml) is >=2.6,<2.16: its upper
# bound is the newest release the matrix passed; 2.6-2.12 are in the range but untested.
TESTED = {
    "2.13.0": "the whole test suite, in CI",
    "2.14.1": "the torch-internals subset, in CI (a second virtual environment)",
    "2.15.0": "the torch-internals subset, by scripts/torch_matrix.sh (docs/compatibility.md)",
}
RANGE = (2, 6), (2, 16)  # [low, high): pyproject.toml's torch>=2.6,<2.16


def installed_torch() -> str | None:
    """The installed torch's version from its metadata (no import of torch), or None."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[str, tuple[int, ...] | None]:
    public = version.split("+", 1)[0]  # "2.13.0+cpu" -> "2.13.0"
    parts = []
    for piece in public.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            return public, None
        parts.append(int(digits))
        if not piece.isdigit():  # 2.16.0a0, 2.15.0rc1: a pre-release of that version
            break
    return public, tuple(parts)


def support_line(version: str | None) -> str | None:
    """One line when ``version`` is outside what commprof was tested with, else None."""
    if version is None:
        return None
    public, numbers = _release(version)
    if public in TESTED:
        return None
    tested = ", ".join(TESTED)
    if numbers is None:
        return f"torch {public}: not a release commprof knows; tested with {tested}"
    low, high = RANGE
    if numbers[:2] < low or numbers[:2] >= high:
        return (f"torch {public} is outside commprof's declared range (>={low[0]}.{low[1]},"
                f"<{high[0]}.{high[1]}); tested with {tested}: capture may degrade (the report "
                "says where)")
    return f"torch {public} is in commprof's range but untested; tested with {tested}"
