"""What the loader (:mod:`commprof.analysis.host.load`) says about a run beside its frames: the
ranks a world size names but no capture holds, and captures that stopped for lack of storage."""
from __future__ import annotations

from commprof.errors import CaptureFormatError
from commprof.format import layout, safe_io


def absent_spans(present: set[int], world: int, most: int = 64) -> str:
    """The ranks of ``range(world)`` not in ``present`` as ``"1-3, 7"`` (at most ``most`` spans),
    computed from the ranks present: memory does not grow with the world size a header claims."""
    spans, start = [], 0
    for r in sorted(p for p in present if 0 <= p < world) + [world]:
        if r > start:
            spans.append(str(start) if r - 1 == start else f"{start}-{r - 1}")
        start = r + 1
    more = f", … ({len(spans) - most} more spans)" if len(spans) > most else ""
    return ", ".join(spans[:most]) + more


STOPPED = "capture stopped"  # the exit_reason of a rank whose capture stopped (a full disk)


def stopped(path, frame: dict | None) -> str | None:
    """``"capture stopped: ENOSPC (No space left on device)"`` when the process of the capture
    ``path`` stopped recording because its storage failed (``frame``: its last ``stopped`` frame,
    or None; else the marker file beside it)."""
    reason = str(frame.get("errno", ""))[:32] if frame else layout.stopped_reason(path)
    if not reason:
        return None
    text = {"ENOSPC": "No space left on device", "EDQUOT": "Disk quota exceeded",
            "EFBIG": "File too large", "EROFS": "Read-only file system"}.get(reason)
    return f"{STOPPED}: {reason}" + (f" ({text})" if text else "")


def bootstrap_error(path) -> str:
    """The text of a ``bootstrap-<pid>.err`` file (its first 4 kB; a FIFO or device: why not)."""
    try:
        data = safe_io.read_bytes(path, limit=1 << 20, within=path.parent.parent)
    except (OSError, CaptureFormatError) as exc:
        return f"unreadable ({getattr(exc, 'reason', None) or exc})"
    return data[:4096].decode("utf-8", "replace").strip()
