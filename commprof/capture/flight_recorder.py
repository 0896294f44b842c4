"""GPU-side times of NCCL collectives, from PyTorch's own Flight Recorder.

With ``TORCH_FR_BUFFER_SIZE`` > 0 (ring buffer of the last N ops per process) and
``TORCH_NCCL_ENABLE_TIMING=1``, ProcessGroupNCCL records CUDA events around every collective on its
stream and stores the GPU-measured ``duration_ms`` in each entry; ``commprof run`` sets both unless
the user did (``--no-gpu-timing`` leaves them alone).  Nothing here touches the device: the
flusher thread reads the buffer through ``_dump_fr_trace_json`` (torch ≥ 2.7; older:
``_dump_nccl_trace_json``) — see :class:`Drain` for when — keeps the entries that carry GPU
timing, and counts entries that fell off the ring before they were read (``lost``), so a buffer too
small for the run is reported, not silently missed.  gloo entries carry no timing: only counted.

A torch whose Flight Recorder differs from what this reads degrades that part, named in the
report's ``degraded`` (the job runs unchanged): ``flight_recorder.dump`` (no dump function, or one
that refuses to be called: no GPU times), ``flight_recorder.format`` (a dump that is not a JSON
object with a list of entries) and ``flight_recorder.fields`` (entries without a field of
:data:`REQUIRED` or :data:`TIMING`, or of another type: those entries, or their GPU times, are
left out and the fields named).
"""
from __future__ import annotations

import json

FIELDS = ("record_id", "process_group", "collective_seq_id", "p2p_seq_id", "is_p2p",
          "profiling_name", "time_created_ns", "time_discovered_started_ns",
          "time_discovered_completed_ns", "duration_ms", "state")


REQUIRED = {"record_id": int}  # the ring's order: an entry without it cannot be placed
FINAL = ("retired", "state")  # at least one tells a finished entry
TIMING = {"duration_ms": (int, float), "process_group": list, "profiling_name": str,
          "time_created_ns": int}  # what analysis/gpu_times.py matches and reads


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
        if not (self.force or "nccl" in self.backends):
            return
        if self.dump is None:
            self._degrade_once("flight_recorder.dump", RuntimeError(
                "this torch has neither _dump_fr_trace_json nor _dump_nccl_trace_json: "
                "GPU times of NCCL collectives are not read"))
            return
        if not getattr(self.rec, "closing", True):
            if self.interval_s is None or self.clock() < self._next:
                return
            self._next = self.clock() + self.interval_s
        text = self._read()
        if text is None:
            return
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or not isinstance(doc.get("entries", []), list):
                raise ValueError(f"a JSON {type(doc).__name__} without a list of entries")
        except (TypeError, ValueError) as exc:
            self.rec.degrade("flight_recorder.format", ValueError(
                f"the Flight Recorder's dump is not what commprof reads ({exc}): GPU times not read"))
            return
        self.take(doc)

    def _read(self):
        """The dump's text: ``dump(includeCollectives=True, onlyActive=False)``, else ``dump()``
        (a torch whose signature changed; its defaults are the same); None when it fails."""
        try:
            try:
                return self.dump(True, False)
            except TypeError:
                return self.dump()
        except Exception as exc:  # noqa: BLE001 - that part degrades, the job goes on
            self.rec.degrade("flight_recorder.dump", RuntimeError(
                f"the Flight Recorder's dump failed ({type(exc).__name__}: {exc}): GPU times not read"))
            return None

    def _degrade_once(self, where: str, exc: BaseException) -> None:
        if where not in getattr(self.rec, "degraded", {}):
            self.rec.degrade(where, exc)

    def take(self, doc: dict) -> None:
        """Take the final entries newer than the last taken one (a pure function of ``doc``)."""
        entries, timed, why = [], set(), {}
        for e in doc.get("entries", []):
            bad = _mismatch(e, REQUIRED) if isinstance(e, dict) else ["not an object"]
            if not bad and not any(k in e for k in FINAL):
                bad = ["retired/state"]
            if bad:
                why.update(dict.fromkeys(bad))
                continue
            untimed = _mismatch(e, TIMING) if has_timing(e) else []
            why.update(dict.fromkeys(untimed))
            if not untimed:
                timed.add(id(e))
            if e["record_id"] > self.last:
                entries.append(e)
        if why:
            self.rec.degrade("flight_recorder.fields", RuntimeError(
                f"Flight Recorder entries without the fields commprof reads or of another type "
                f"({', '.join(why)}): those entries, or their GPU times, are left out"))
        keep = []
        for e in sorted(entries, key=lambda e: e["record_id"]):
            if not is_final(e):
                break  # taken at a later flush, once complete
            gap = e["record_id"] - self.last - 1
            if gap > 0:
                self.lost += gap  # overwritten in the ring before we read them
            self.last = e["record_id"]
            self.seen += 1
            if id(e) in timed:
                keep.append({k: e.get(k) for k in FIELDS})
        if keep or (self.seen, self.lost) != self._written:
            self._written = (self.seen, self.lost)
            self.rec.json.append({"type": "fr", "version": doc.get("version"),
                                  "comm_lib_version": doc.get("comm_lib_version"),
                                  "seen": self.seen, "lost": self.lost, "entries": keep})


def _mismatch(entry: dict, fields: dict) -> list[str]:
    """The fields of ``fields`` that ``entry`` lacks or holds as another type (None is a value:
    an entry with no GPU time yet; bool is not an int here)."""
    out = []
    for name, kind in fields.items():
        value = entry.get(name)
        if name not in entry or (value is not None and (isinstance(value, bool)
                                                        or not isinstance(value, kind))):
            out.append(name)
    return out
