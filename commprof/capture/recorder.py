"""In-memory buffers of one worker's capture, and the flusher that streams them to disk.

Hot-path methods only append tuples to lists (atomic under the GIL); a daemon thread encodes and
appends them to the capture file every ``flush_interval`` seconds, and :meth:`Recorder.close`
does a final flush plus trailer at exit or on SIGTERM.  Standard library only.
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
from commprof.format.writer import CaptureWriter, encode_batch, encode_json

log = logging.getLogger("commprof.capture")
_STORAGE_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


class Recorder:
    """Buffers and writes the records of one process."""

    def __init__(self, run_dir: str, meta_fn, flush_interval: float = 1.0,
                 clock=time.perf_counter_ns):
        self.run_dir = run_dir
        self.clock = clock  # the time base of every record; the hooks read it (CaptureConfig.clock)
        self._meta_fn = meta_fn  # called once, at first write: returns (file name, header dict)
        self.flush_interval = flush_interval
        self.writer: CaptureWriter | None = None
        self.next_id = itertools.count().__next__
        self.coll: list = []
        self.done: list = []
        self.wait: list = []
        self.mark: list = []
        self.span: list = []
        self.gpu: list = []  # GPU window records (capture/gpu_windows.py)
        self.json: list = []
        self.degraded: dict[str, list] = {}  # where -> [count, first message]
        self._degraded_written: dict[str, int] = {}
        self.records = 0  # collectives recorded
        self.self_ns = 0  # time spent recording inside the hooks (reported as commprof's own cost)
        self.gpu_windows = 0  # GPU windows converted, and what they cost (start, stop, convert)
        self.gpu_window_ns = 0
        self._self_written = (0, 0, 0, 0)
        self.enabled = True
        self.wants_file = False  # set by the first event that makes this process worth a file
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.before_flush: list = []  # callables run by the flusher first (e.g. the FR drain)
        self.closing = False  # set for the final flush (hooks that run only once read it)

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
        """Encode and append everything buffered so far.  Never raises."""
        if not self.enabled:
            return
        with self._flush_lock:
            try:
                self._flush_locked()
            except OSError as exc:
                self.degrade("writer", exc)
                if exc.errno in _STORAGE_FULL:
                    self._stop_recording(exc)
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
        parts = []
        for obj in self._take("json"):
            parts.append(encode_json(obj))
        for where, (count, msg) in list(self.degraded.items()):
            if self._degraded_written.get(where) != count:
                parts.append(encode_json({"type": "degraded", "where": where, "count": count,
                                          "error": msg}))
                self._degraded_written[where] = count
        cost = (self.records, self.self_ns, self.gpu_windows, self.gpu_window_ns)
        if cost != self._self_written:
            parts.append(encode_json({"type": "self_cost", "calls": cost[0], "record_ns": cost[1],
                                      "gpu_windows": cost[2], "gpu_window_ns": cost[3]}))
            self._self_written = cost
        for kind, name in ((schema.KIND_COLL, "coll"), (schema.KIND_DONE, "done"),
                           (schema.KIND_WAIT, "wait"), (schema.KIND_MARK, "mark"),
                           (schema.KIND_SPAN, "span"), (schema.KIND_GPU, "gpu")):
            rows = self._take(name)
            if rows:
                parts.append(encode_batch(kind, rows))
        if not parts:
            return
        if self.writer is None:
            fname, header = self._meta_fn()
            ranks = layout.ranks_dir(self.run_dir)
            os.makedirs(ranks, exist_ok=True)
            self.writer = CaptureWriter(str(ranks / fname), header)
        self.writer.write(b"".join(parts))

    def _stop_recording(self, exc: OSError) -> None:
        """Storage is gone: stop recording (the job goes on), and say so once on stderr."""
        self.enabled = False
        path = self.writer.path if self.writer is not None else self.run_dir
        try:
            sys.stderr.write(f"commprof: stopped recording in pid {os.getpid()}: {path}: "
                             f"{exc.strerror or exc}; what was written before is kept\n")
        except (OSError, ValueError):  # stderr closed: nothing else to tell
            return

    def close(self, reason: str) -> None:
        """Final flush and trailer.  Idempotent; never raises."""
        if not self.enabled:
            return
        self._stop.set()
        self.mark.append((schema.MARK_EXIT, self.clock(), 0))
        self.closing = True
        self.flush()
        with self._flush_lock:
            try:
                if self.writer is not None:
                    self.writer.close({"reason": reason, "records": self.records,
                                       "bytes": self.writer.bytes_written})
            except Exception as exc:  # noqa: BLE001 - nothing left to record into
                log.warning("commprof could not finish %s: %s", self.writer.path, exc)
        self.enabled = False

    def disable_in_child(self) -> None:
        """After fork: the child must never write the parent's buffers or file."""
        self.enabled = False
        for rows in (self.coll, self.done, self.wait, self.mark, self.span, self.gpu, self.json):
            del rows[:]
        self.writer = None
