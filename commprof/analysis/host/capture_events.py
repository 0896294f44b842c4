"""A capture's JSON events, sorted by kind in one pass (what :func:`commprof.analysis.host.load.read_rank`
hands to the scanners of :mod:`~commprof.analysis.host.training`, :mod:`~commprof.analysis.gpu.gpu_activity`,
:mod:`~commprof.analysis.gpu.gpu_times` and :mod:`~commprof.analysis.host.load_facts`).

The reader (:func:`commprof.format.reader.read_capture`) keeps every JSON frame of a capture
except its groups in one list, ``Capture.events``, in file order; each frame names its kind in
``type`` (``"event"`` frames name theirs in ``event``).  :func:`sort_events` walks that list once
and keeps each kind a scanner reads, in file order, or only the last one where only the last
counts.  Frames of kinds no scanner reads (``run``, other ``event`` names) are left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# the window events a process row counts (analysis/gpu_activity.window_stats)
WINDOW_SKIPPED, WINDOW_YIELDED, WINDOWS_OFF = "gpu_window_skipped", "gpu_window_yielded", "gpu_windows_off"


@dataclass
class CaptureEvents:
    """One capture's JSON frames by kind, each list in file order."""

    losses: list[dict] = field(default_factory=list)  # "losses": each backward's loss (capture/loss.py)
    metrics: list[dict] = field(default_factory=list)  # "metric": commprof.metric values
    fixes: list[dict] = field(default_factory=list)  # "event"/"fix" naming a fix: commprof try's fixes
    fr: list[dict] = field(default_factory=list)  # "fr": Flight Recorder snapshots
    degraded: list[dict] = field(default_factory=list)  # "degraded": instrumentation failures
    gpu_names: list[dict] = field(default_factory=list)  # "gpu_names": the GPU name table's pieces
    # "gpu_window" frames (windows recorded) and "event"/"gpu_window_skipped" (windows skipped)
    gpu_windows: list[dict] = field(default_factory=list)
    gpu_windows_yielded: int = 0  # "event"/"gpu_window_yielded": windows closed for the job's profiler
    gpu_windows_off: dict | None = None  # the last "event"/"gpu_windows_off": why windows stopped
    self_cost: dict | None = None  # the last "self_cost": the capture's own cost so far
    capture_path: dict | None = None  # the last "event"/"capture_path": which kernel recorded
    stopped: dict | None = None  # the last "stopped": the capture's storage failed


_LISTS = {"losses": "losses", "metric": "metrics", "fr": "fr", "degraded": "degraded",
          "gpu_names": "gpu_names", "gpu_window": "gpu_windows"}
_LAST = {"self_cost": "self_cost", "stopped": "stopped"}


def sort_events(events: list[dict]) -> CaptureEvents:
    """``events`` (a capture's JSON frames, as the reader returns them) sorted by kind, in one pass."""
    out = CaptureEvents()
    lists = {kind: getattr(out, name) for kind, name in _LISTS.items()}
    for e in events:
        kind = e.get("type")
        if kind == "event":
            _sort_event(out, e)
        elif kind in lists:
            lists[kind].append(e)
        elif kind in _LAST:
            setattr(out, _LAST[kind], e)
    return out


def _sort_event(out: CaptureEvents, e: dict) -> None:
    name = e.get("event")
    if name == "fix":
        if e.get("fix"):
            out.fixes.append(e)
    elif name == "capture_path":
        out.capture_path = e
    elif name == WINDOW_SKIPPED:
        out.gpu_windows.append(e)
    elif name == WINDOW_YIELDED:
        out.gpu_windows_yielded += 1
    elif name == WINDOWS_OFF:
        out.gpu_windows_off = e
