"""One worker's capture: records go straight into the capture file's memory-mapped region.

Until the process is worth a file (its first collective, step or process group), records wait in
lists.  Then :meth:`Recorder.open` creates the file (``format/region.py``) and every sink's
``append`` becomes the region's write-through appender: a record is in the page cache, and so
survives a SIGKILL, a segfault or an OOM kill, the moment ``append`` returns.  The daemon
flusher thread (every ``flush_interval`` seconds) only writes what is rare or cumulative (failure
counts, the self-reported cost, GPU-window records) and any row that raced the switch.  Where
the file cannot be memory-mapped, the recorder falls back to the v2 stream: lists, and batches
appended by the flusher.  :meth:`Recorder.close` writes the trailer at exit or on SIGTERM.
Standard library only.
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import sys
import threading
import time
import traceback

from commprof.format import layout, schema
from commprof.format.region import RegionWriter
from commprof.format.writer import CaptureWriter, encode_batch, encode_json, encode_records

log = logging.getLogger("commprof.capture")
_STORAGE_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
_RECORD_SINKS = (("coll", schema.KIND_COLL), ("done", schema.KIND_DONE), ("wait", schema.KIND_WAIT),
                 ("mark", schema.KIND_MARK), ("span", schema.KIND_SPAN))


def _discard(_row) -> None:
    """The ``append`` of a sink once recording stopped."""


class Rows(list):
    """The records of one kind.  Before the file exists ``append`` keeps them here (and opens the
    file once the recorder wants one); after, the instance attribute ``append`` writes through
    and the list stays empty (:meth:`Recorder.open`)."""


class JsonRows(list):
    """JSON objects (groups, events): written at once when the file exists, and kept here until the
    next flush (``rec.json[-1]`` is the last one); ``written`` counts those already in the file."""

    def __init__(self, rec: "Recorder"):
        super().__init__()
        self.rec = rec
        self.region: RegionWriter | None = None
        self.written = 0
        self.lock = threading.RLock()  # re-entrant: a signal handler may record on this thread

    def append(self, obj) -> None:
        with self.lock:
            list.append(self, obj)
            region = self.region
            if region is not None:
                region.append_json(obj)
                self.written = len(self)
                return
        rec = self.rec
        if rec.wants_file and rec.region is None and rec.writer is None and rec.enabled:
            rec.open()

    def attach(self, region: RegionWriter | None) -> None:
        """Write what is not written yet; from now on write at append (None: stop writing)."""
        with self.lock:
            if region is not None:
                for obj in self[self.written:]:
                    region.append_json(obj)
                self.written = len(self)
            self.region = region

    def take(self) -> list:
        """Remove and return the objects not yet written; forget those that were."""
        with self.lock:
            rows = self[self.written:]
            del self[:]
            self.written = 0
            return rows


class Recorder:
    """Records of one process: write-through to the capture file's region once it exists."""

    def __init__(self, run_dir: str, meta_fn, flush_interval: float = 1.0,
                 clock=time.perf_counter_ns, chunk_bytes: int = schema.REGION_CHUNK_BYTES):
        self.run_dir = run_dir
        self.clock = clock  # the time base of every record; the hooks read it (CaptureConfig.clock)
        self._meta_fn = meta_fn  # called once, at file creation: returns (file name, header dict)
        self.flush_interval = flush_interval
        self.chunk_bytes = chunk_bytes  # the region's growth step (the writer fault makes it small)
        self.region: RegionWriter | None = None  # the memory-mapped file, once created
        self.region_native = None  # the native kernel's module, when it records: it owns the region
        self.writer: CaptureWriter | None = None  # the v2 stream, where the file cannot be mapped
        self.next_id = itertools.count().__next__
        self.coll, self.done, self.wait = Rows(), Rows(), Rows()
        self.mark, self.span = Rows(), Rows()
        self.gpu: list = []  # GPU window records (capture/gpu_windows.py), written by the flusher
        self.json = JsonRows(self)
        self.degraded: dict[str, list] = {}  # where -> [count, first message]
        self._degraded_written: dict[str, int] = {}
        self.records = 0  # collectives recorded
        self.self_ns = 0  # time spent recording inside the hooks (reported as commprof's own cost)
        self.gpu_windows = 0  # GPU windows converted, and what they cost (start, stop, convert)
        self.gpu_window_ns = 0
        # native path: the part of self_ns that is not per-call work (once_calls/once_ns: the
        # first call on a new group, which registers it in Python; stalled_calls/stalled_ns:
        # windows over the stall threshold, the thread off its core); {} on the Python path
        self.self_split: dict = {}
        self._self_written: tuple = (0, 0, 0, 0, ())
        self.enabled = True
        self.wants_file = False  # set by the first event that makes this process worth a file
        self._flush_lock = threading.RLock()  # re-entrant: SIGTERM's close may interrupt a flush
        # (what a flush calls must then be re-entrant too: the native drain is, test_native_drain)
        self._open_lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.before_flush: list = []  # callables run by the flusher first (e.g. the FR drain)
        self.closing = False  # set for the final flush (hooks that run only once read it)
        self._may_open = True  # an append may create the file (until it exists, or that failed)
        for name, _ in _RECORD_SINKS:
            self._buffer(getattr(self, name))

    def _buffer(self, rows: Rows) -> None:
        """Before the file exists: keep rows, and create the file once the process wants one."""
        keep = list.append.__get__(rows)

        def append(row) -> None:
            keep(row)
            if self.wants_file and self._may_open:
                self.open()

        rows.append = append

    # -- failure accounting ---------------------------------------------------------------
    def degrade(self, where: str, exc: BaseException) -> None:
        """Count an internal failure; it is recorded in the capture, never raised."""
        entry = self.degraded.get(where)
        if entry is None:
            msg = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.degraded[where] = [1, msg]
            log.debug("commprof degraded in %s: %s", where, msg)
        else:
            entry[0] += 1

    # -- the file ---------------------------------------------------------------------------
    def open(self) -> None:
        """Create the capture file and switch every sink to write-through.  Never raises."""
        self._may_open = False  # after a failure, only the flusher tries again
        try:
            with self._open_lock:
                if self.region is None and self.writer is None and self.enabled:
                    self._open_locked()
        except OSError as exc:
            self._storage_failed(exc)
        except Exception as exc:  # noqa: BLE001 - recorded; the flusher tries again
            self.degrade("writer", exc)

    def _open_locked(self) -> None:
        fname, header = self._meta_fn()
        ranks = layout.ranks_dir(self.run_dir)
        os.makedirs(ranks, mode=layout.dir_mode(self.run_dir), exist_ok=True)
        path = str(ranks / fname)
        try:
            region = RegionWriter(path, header, chunk=self.chunk_bytes, on_error=self._region_failed,
                                  native=self.region_native)
        except OSError as exc:
            if exc.errno in _STORAGE_FULL:
                raise
            # A file system without shared writable maps: the v2 stream, flushed periodically.
            self.degrade("writer.mmap", exc)
            if os.path.exists(path):
                os.unlink(path)
            self.writer = CaptureWriter(path, header)
            for name, _ in _RECORD_SINKS:
                vars(getattr(self, name)).pop("append", None)  # plain list appends again
            return
        self.region = region
        for name, kind in _RECORD_SINKS:
            rows = getattr(self, name)
            rows.append = region.appender(kind)  # rows appended from now on go to the file
            self._drain(rows, kind)  # and those kept so far
        self.json.attach(region)

    def _drain(self, rows: list, kind: int) -> None:
        """Write the rows a sink kept (before the file existed, or raced the switch)."""
        n = len(rows)
        if n:
            taken = rows[:n]
            del rows[:n]
            self.region.append_frame(kind, encode_records(kind, taken))

    def _region_failed(self, exc: BaseException) -> None:
        """An append failed (called by the region, outside its lock)."""
        if isinstance(exc, OSError):
            self._storage_failed(exc)
        else:
            self.degrade("writer", exc)

    def _storage_failed(self, exc: OSError) -> None:
        self.degrade("writer", exc)
        if exc.errno in _STORAGE_FULL:
            self._stop_recording(exc)

    # -- flushing ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background flusher."""
        self._thread = threading.Thread(target=self._loop, name="commprof-flush", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()

    def _take(self, name: str) -> list:
        """Remove and return what the list ``name`` holds now.

        The lists are never replaced: hot paths (and completion callbacks that captured a list)
        append concurrently, and whatever lands after the slice stays for the next flush.
        """
        rows = getattr(self, name)
        n = len(rows)
        taken = rows[:n]
        del rows[:n]
        return taken

    def flush(self) -> None:
        """Write what is buffered or cumulative.  Never raises."""
        if not self.enabled:
            return
        with self._flush_lock:
            try:
                self._flush_locked()
            except OSError as exc:
                self._storage_failed(exc)
            except Exception as exc:  # noqa: BLE001 - recorded; the job must go on
                self.degrade("writer", exc)

    def _flush_locked(self) -> None:
        if not self.wants_file:
            return
        for hook in self.before_flush:
            try:
                hook()
            except Exception as exc:  # noqa: BLE001 - that source of records degrades, visibly
                self.degrade(f"flush.{getattr(hook, '__name__', type(hook).__name__)}", exc)
        if self.region is None and self.writer is None:
            self.open()
        objects = self.json.take()
        for where, (count, msg) in list(self.degraded.items()):
            if self._degraded_written.get(where) != count:
                objects.append({"type": "degraded", "where": where, "count": count, "error": msg})
                self._degraded_written[where] = count
        split = self.self_split
        cost = (self.records, self.self_ns, self.gpu_windows, self.gpu_window_ns,
                tuple(sorted(split.items())))
        if cost != self._self_written:
            objects.append({"type": "self_cost", "calls": cost[0], "record_ns": cost[1],
                            "gpu_windows": cost[2], "gpu_window_ns": cost[3], **split})
            self._self_written = cost
        region = self.region
        if region is not None:
            for obj in objects:
                region.append_json(obj)
            for name, kind in _RECORD_SINKS:
                self._drain(getattr(self, name), kind)
            self._drain(self.gpu, schema.KIND_GPU)
            return
        if self.writer is None:  # the file could not be created: keep everything for next time
            self.json[:0] = objects
            return
        parts = [encode_json(obj) for obj in objects]
        for name, kind in _RECORD_SINKS + (("gpu", schema.KIND_GPU),):
            rows = self._take(name)
            if rows:
                parts.append(encode_batch(kind, rows))
        self.writer.write(b"".join(parts))

    def _stop_recording(self, exc: OSError) -> None:
        """Storage is gone: stop recording (the job goes on), and say so once on stderr."""
        if not self.enabled:
            return
        self.enabled = False
        self._stop_sinks()
        target = self.region or self.writer
        unmarked = self._mark_stopped(target, exc)
        if self.region is not None:
            self.region.abandon()
        path = target.path if target is not None else self.run_dir
        try:
            sys.stderr.write(f"commprof: stopped recording in pid {os.getpid()}: {path}: "
                             f"{exc.strerror or exc}; what was written before is kept{unmarked}\n")
        except (OSError, ValueError):  # stderr closed: nothing else to tell
            return

    def _mark_stopped(self, target, exc: OSError) -> str:
        """Record why capture stopped where a full disk still allows it: a ``stopped`` JSON frame
        in the region (if its chunk has room) and the empty marker file beside the capture
        (``layout.stopped_marker``: a name needs no data block).  The report reads either and
        shows the rank under ``degraded``, not as dead.  Returns "" or why nothing was marked."""
        reason = errno.errorcode.get(exc.errno or 0, "EIO")
        if target is None:
            return ""
        if self.region is not None:  # a failure here comes back through _storage_failed: ignored
            self.region.append_json({"type": "stopped", "errno": reason,
                                     "error": exc.strerror or str(exc), "t": time.perf_counter_ns()})
        try:
            os.close(os.open(layout.stopped_marker(target.path, reason),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except OSError as err:
            return f" (the capture could not be marked as stopped: {err.strerror or err})"
        return ""

    def _stop_sinks(self) -> None:
        """Appends from now on are dropped (after close, or once the storage failed)."""
        for name, _ in _RECORD_SINKS:
            getattr(self, name).append = _discard
            del getattr(self, name)[:]
        self.json.attach(None)
        self.json.append = _discard

    def close(self, reason: str) -> None:
        """Final flush and trailer.  Idempotent; never raises."""
        if not self.enabled:
            return
        self._stop.set()
        self.mark.append((schema.MARK_EXIT, self.clock(), 0))
        self.closing = True
        self.flush()
        with self._flush_lock:
            target = self.region or self.writer
            try:
                if target is not None:
                    target.close({"reason": reason, "records": self.records,
                                  "bytes": target.bytes_written})
            except Exception as exc:  # noqa: BLE001 - nothing left to record into
                log.warning("commprof could not finish %s: %s", target.path, exc)
        self.enabled = False
        self._stop_sinks()

    def disable_in_child(self) -> None:
        """After fork: the child must never write the parent's buffers or file."""
        self.enabled = False
        for name, _ in _RECORD_SINKS:
            getattr(self, name).append = _discard
            del getattr(self, name)[:]
        self.json.region = None  # not attach(): its lock may be held by a thread of the parent
        self.json.append = _discard
        del self.json[:], self.gpu[:]
        if self.region is not None:
            self.region.abandon(locked=False)
        self.region = None
        self.writer = None
