"""The per-node sampler: reads every source at ``hz`` and streams the values to the run directory.

Runs as a daemon thread of ``commprof run`` (one per node, beside the job, never inside it).  File:
``RUN/nodes/<host>.p<pid>.cps`` — the capture framing (header, CRC32 frames, torn-tail safe) with
a header that has no rank, ``series`` JSON frames naming each series once, ``SAMPLE`` record
frames ``(series, t, value)`` with ``t`` on this host's monotonic clock (the workers' clock), and
``cost`` JSON frames: the sampler's own CPU time, so the report can show what sampling cost.

A source that raises is counted (``degraded`` frames) and, after three failures in a row, dropped;
the sampler itself never raises into ``commprof run``.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback

from commprof.format import layout, schema
from commprof.format.writer import CaptureWriter, encode_batch, encode_json
from commprof.sampling.series import Series, Source

log = logging.getLogger("commprof.sampling")
MAX_FAILURES = 3


class NodeSampler:
    """Samples ``sources`` every ``1/hz`` s; :meth:`tick` does one round (tests drive it directly)."""

    def __init__(self, run_dir: str | os.PathLike, sources: list[Source], hz: float = 10.0,
                 flush_interval: float = 1.0, clock=time.perf_counter_ns,
                 cpu_clock=time.thread_time_ns, host: str | None = None):
        if hz <= 0:
            raise ValueError("hz must be > 0")
        self.sources = list(sources)
        self.hz = hz
        self.flush_interval = flush_interval
        self.clock = clock
        self.cpu_clock = cpu_clock
        host = host or socket.gethostname()
        self.path = str(layout.nodes_dir(run_dir) / layout.samples_name(host, os.getpid()))
        os.makedirs(os.path.dirname(self.path), mode=layout.dir_mode(run_dir), exist_ok=True)
        header = {"kind": "samples", "schema_minor": schema.SCHEMA_MINOR, "host": host,
                  "pid": os.getpid(), "hz": hz,
                  "clock": {"wall_ns": time.time_ns(), "mono_ns": clock(), "name": "perf_counter_ns"},
                  "sources": {s.name: _status(s) for s in self.sources}}
        self.writer = CaptureWriter(self.path, header)  # the file is created at the first flush
        self._ids: dict[Series, int] = {}
        self._rows: list[tuple] = []
        self._json: list[dict] = []
        self._last_read: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._degraded: dict[str, list] = {}
        self._degraded_written: dict[str, int] = {}
        self.ticks = 0
        self.cpu_ns = 0
        self.started_ns = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.enabled = True

    # -- one round ---------------------------------------------------------------------------
    def tick(self) -> None:
        c0 = self.cpu_clock()
        t = self.clock()
        for src in list(self.sources):
            period_ns = int(getattr(src, "period_s", 0) * 1e9)
            if period_ns and t - self._last_read.get(src.name, -period_ns) < period_ns:
                continue
            self._last_read[src.name] = t
            try:
                src.read(lambda s, v, t=t: self._emit(s, t, v))
                self._failures[src.name] = 0
            except Exception as exc:  # noqa: BLE001 - a source never takes the sampler down
                self._source_failed(src, exc)
        self.ticks += 1
        self.cpu_ns += self.cpu_clock() - c0

    def _emit(self, series: Series, t: int, value: float) -> None:
        sid = self._ids.get(series)
        if sid is None:
            sid = self._ids[series] = len(self._ids)
            self._json.append(series.describe(sid))
        self._rows.append((sid, t, value))

    def _source_failed(self, src: Source, exc: BaseException) -> None:
        msg = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        entry = self._degraded.setdefault(f"sampler.{src.name}", [0, msg])
        entry[0] += 1
        n = self._failures[src.name] = self._failures.get(src.name, 0) + 1
        if n >= MAX_FAILURES:
            self.sources.remove(src)
            self._json.append({"type": "event", "event": "source_dropped", "source": src.name,
                               "error": msg})
            log.warning("commprof sampler: dropped source %s after %d failures: %s", src.name, n, msg)

    def flush(self) -> None:
        """Write what was sampled since the last flush (never raises)."""
        if not self.enabled:
            return
        c0 = self.cpu_clock()
        rows, self._rows = self._rows, []
        objs, self._json = self._json, []
        frames = [encode_json(o) for o in objs]
        if rows:
            frames.append(encode_batch(schema.KIND_SAMPLE, rows))
        for where, (count, err) in self._degraded.items():
            if self._degraded_written.get(where) != count:  # a new count supersedes the last
                self._degraded_written[where] = count
                frames.append(encode_json({"type": "degraded", "where": where, "count": count,
                                           "error": err}))
        self.cpu_ns += self.cpu_clock() - c0
        frames.append(encode_json(self.cost()))
        try:
            self.writer.write(b"".join(frames))
        except OSError as exc:  # disk full, run directory gone: stop sampling, keep the job
            self.enabled = False
            log.warning("commprof sampler: stopped writing %s: %s", self.path, exc)

    def cost(self) -> dict:
        """The sampler's own CPU time so far: its thread's reads and encoding, plus the helper
        processes it ran (``ss``); not the file write."""
        children = sum(getattr(s, "child_cpu_ns", 0) for s in self.sources)
        return {"type": "cost", "cpu_ns": self.cpu_ns + children, "wall_ns": self.clock() - self.started_ns,
                "ticks": self.ticks}

    # -- the thread ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="commprof-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        period = 1.0 / self.hz
        next_tick = time.monotonic()
        next_flush = next_tick + self.flush_interval
        while not self._stop.is_set():
            try:
                self.tick()
                if time.monotonic() >= next_flush:
                    self.flush()
                    next_flush += self.flush_interval
            except Exception as exc:  # noqa: BLE001 - recorded once; the job is never affected
                self._degraded.setdefault("sampler.loop", [0, repr(exc)])[0] += 1
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind (a slow read): skip the missed ticks, do not burst
                next_tick = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def stop(self) -> None:
        """Take a last sample, flush, write the trailer, close the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.tick()  # the job's final counters
        self.flush()
        for src in self.sources:
            close = getattr(src, "close", None)
            if close is not None:
                close()
        try:
            self.writer.close(dict(self.cost(), reason="stopped"))
        except OSError as exc:
            log.warning("commprof sampler: cannot close %s: %s", self.path, exc)


def _status(src: Source) -> dict:
    try:
        return src.status()
    except Exception as exc:  # noqa: BLE001 - a status that fails is itself the answer
        return {"available": False, "why": f"{type(exc).__name__}: {exc}"}


def default_sources(job_pids, tcp_period_s: float = 1.0) -> list[Source]:
    """NIC, InfiniBand (where present), NVML (where present) and TCP RTT of the job."""
    from commprof.sampling.infiniband import InfinibandSource
    from commprof.sampling.nic import NicSource
    from commprof.sampling.nvml import NvmlSource
    from commprof.sampling.tcp import TcpSource
    return [NicSource(), InfinibandSource(), NvmlSource(), TcpSource(job_pids, tcp_period_s)]
