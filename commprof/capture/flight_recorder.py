"""GPU-side times of NCCL collectives, from PyTorch's own Flight Recorder.

With ``TORCH_FR_BUFFER_SIZE`` > 0 (ring buffer of the last N ops per process) and
``TORCH_NCCL_ENABLE_TIMING=1``, ProcessGroupNCCL records CUDA events around every collective on its
stream and stores the GPU-measured ``duration_ms`` in each entry; ``commprof run`` sets both unless
the user did (``--no-gpu-timing`` leaves them alone).  Nothing here touches the device: the
flusher thread reads the buffer through ``_dump_fr_trace_json`` (torch ≥ 2.7; older:
``_dump_nccl_trace_json``) — see :class:`Drain` for when — keeps the entries that carry GPU
timing, and counts entries that fell off the ring before they were read (``lost``), so a buffer too
small for the run is reported, not silently missed.  gloo entries carry no timing: only counted.
"""
from __future__ import annotations

import json

FIELDS = ("record_id", "process_group", "collective_seq_id", "p2p_seq_id", "is_p2p",
          "profiling_name", "time_created_ns", "time_discovered_started_ns",
          "time_discovered_completed_ns", "duration_ms", "state")


def dump_function(torch):
    c10d = getattr(torch._C, "_distributed_c10d", None)
    for name in ("_dump_fr_trace_json", "_dump_nccl_trace_json"):
        fn = getattr(c10d, name, None)
        if fn is not None:
            return fn
    return None


def is_final(entry: dict) -> bool:
    return bool(entry.get("retired")) or entry.get("state") == "completed"


def has_timing(entry: dict) -> bool:
    return entry.get("duration_ms") is not None or bool(entry.get("time_discovered_completed_ns"))


class Drain:
    """Called by the recorder before a flush: appends ``{"type": "fr", ...}`` frames.

    Reading the buffer is costly (torch serializes all of it: ~35 µs per entry, half of it Python
    JSON parsing under the GIL — 140 ms for 4,000 entries here), so by default it is read once, at
    the process's final flush (exit or SIGTERM): GPU times then cover the last
    ``TORCH_FR_BUFFER_SIZE`` collectives of each rank.  ``COMMPROF_FR_DRAIN_INTERVAL=S`` reads it every
    S seconds instead (full coverage, at that cost).  Only processes that created an NCCL group
    read it (gloo entries have no timing), unless ``COMMPROF_FR_DRAIN=1``.
    """

    def __init__(self, rec, torch, dump=None, backends=None, interval_s: float | None = None,
                 force: bool = False, clock=None):
        import time
        self.rec = rec
        self.dump = dump if dump is not None else dump_function(torch)
        self.backends = backends if backends is not None else set()
        self.force = force  # read without an NCCL group too (CaptureConfig.fr_drain_forced)
        self.interval_s = interval_s  # None: at the final flush only (CaptureConfig.fr_drain_interval_s)
        self.clock = clock or time.monotonic
        self._next = 0.0
        self.last = -1  # highest record_id taken
        self.seen = 0
        self.lost = 0
        self._written = (0, 0)

    def __call__(self) -> None:
        if self.dump is None or not (self.force or "nccl" in self.backends):
            return
        if not getattr(self.rec, "closing", True):
            if self.interval_s is None or self.clock() < self._next:
                return
            self._next = self.clock() + self.interval_s
        self.take(json.loads(self.dump(True, False)))

    def take(self, doc: dict) -> None:
        """Take the final entries newer than the last taken one (a pure function of ``doc``)."""
        entries = sorted((e for e in doc.get("entries", []) if e.get("record_id", -1) > self.last),
                         key=lambda e: e["record_id"])
        keep = []
        for e in entries:
            if not is_final(e):
                break  # taken at a later flush, once complete
            gap = e["record_id"] - self.last - 1
            if gap > 0:
                self.lost += gap  # overwritten in the ring before we read them
            self.last = e["record_id"]
            self.seen += 1
            if has_timing(e):
                keep.append({k: e.get(k) for k in FIELDS})
        if keep or (self.seen, self.lost) != self._written:
            self._written = (self.seen, self.lost)
            self.rec.json.append({"type": "fr", "version": doc.get("version"),
                                  "comm_lib_version": doc.get("comm_lib_version"),
                                  "seen": self.seen, "lost": self.lost, "entries": keep})
