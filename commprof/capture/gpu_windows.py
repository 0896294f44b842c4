"""GPU windows: a few steps of torch.profiler (Kineto) with CUDA activity only, every N steps.

* **Schedule** (``CaptureConfig.gpu_windows`` = (STEPS, EVERY, AFTER), ``--gpu-windows``): the
  step hooks (capture/steps.py) report every boundary of the steps the analysis counts
  (``commprof.step()`` if the job calls it, else the first optimizer's ``step()``).  After boundary
  k (the start of step k), a window opens when k >= AFTER and (k − AFTER) % EVERY == 0 (EVERY 0:
  k == AFTER only), and closes after boundary k + STEPS.  Window index = (k − AFTER) // EVERY.
* **Only CUDA jobs**: a window opens only where ``torch.cuda.is_available()`` and the job has an
  NCCL process group, unless the test hook ``COMMPROF_GPU_ACTIVITY=cpu`` asks for Kineto's CPU
  activity (then on any job).  No CPU op events, shapes, stacks or memory in a real run.
* **Yielding**: the job's own profiler always wins.  Its entry points (``torch.profiler.profile``
  start/stop, ``_KinetoProfile.prepare_trace``/``stop_trace``, ``torch.autograd.profiler.profile``
  and the legacy profiler's ``__enter__``/``__exit__``) are wrapped: while one of its sessions is
  active no window opens (``gpu_window_skipped`` event), and one starting while a window is open
  closes the window first (``gpu_window_yielded``).  A profiler that bypasses those (already
  enabled when commprof looks) is seen through ``torch._C._autograd._profiler_enabled()`` and
  ``torch.autograd.profiler._is_profiler_enabled``.
* **Closing** synchronizes the device first (as torch.profiler does), so every kernel launched in
  the window is complete when Kineto stops; the Flight Recorder's CUDA events are untouched.
* **Conversion** (events -> compact GPU records, capture/gpu_convert.py; the opt-in Kineto JSON)
  runs on the flusher thread.  Each phase is timed (``cost_ns`` of the ``gpu_window`` frame; the
  sum goes to the recorder's ``self_cost``).
* Nothing here raises into the job: failures are ``degraded`` events; after 3 failed windows the
  windows stop for the process.
"""
from __future__ import annotations

import functools
import os
import threading

from commprof.capture import gpu_convert
from commprof.format import layout

MAX_FAILURES = 3
CLOCK_CHECK_LIMIT_NS = 1_000_000  # CPU-side events this far outside the window: alignment is off


class _Window:
    def __init__(self, index: int, first_step: int, prof, t_open: int, start_ns: int,
                 offset: tuple[int, int]):
        self.index, self.first_step, self.prof = index, first_step, prof
        self.t_open, self.start_ns, self.offset_open = t_open, start_ns, offset
        self.ends: list[int] = []  # capture-clock times of the boundaries seen while open
        self.t_close = self.sync_ns = self.stop_ns = 0
        self.offset_close = offset
        self.end_reason = ""


class GpuWindows:
    """The windows of one process: schedule, profiler control, yielding, conversion."""

    def __init__(self, rec, torch_module, config, backends=tuple, trace_path=None,
                 profiler_factory=None):
        self.rec = rec
        self.torch = torch_module
        self.steps, self.every, self.after = config.gpu_windows
        self.cpu = config.gpu_activity == "cpu"
        self.trace_path = trace_path if config.gpu_trace else None  # window -> Path, or None
        self.backends = backends  # callable: backends of the groups seen so far
        self.factory = profiler_factory or self._kineto_profiler
        self.source: str | None = None  # "explicit" or "optimizer": the boundaries counted
        self.window: _Window | None = None
        self.pending: list[_Window] = []  # closed, waiting for the flusher to convert them
        self.user: set = set()  # the job's own profiler sessions now active
        self.names = gpu_convert.Names()
        self.failures = 0
        self.off: str | None = None  # why windows stopped for good
        self._lock = threading.RLock()

    # -- schedule --------------------------------------------------------------------------------
    def due(self, k: int) -> bool:
        if k < self.after:
            return False
        return (k - self.after) % self.every == 0 if self.every else k == self.after

    def index(self, k: int) -> int:
        return (k - self.after) // self.every if self.every else 0

    def on_step(self, source: str, count: int, t: int) -> None:
        """Boundary ``count`` (steps ended so far) of ``source`` at capture time ``t``."""
        if self.off is not None or not self.rec.enabled:
            return
        try:
            with self._lock:
                if self.source is None and (self.cpu or self.torch.cuda.is_available()):
                    self._guard()  # from the first step on: the job's profiler sessions are seen
                if source != self.source:
                    if self.source == "explicit":
                        return  # explicit steps win, as in the analysis
                    if self.window is not None:
                        self._stop("step_source_changed")
                    self.source = source
                w = self.window
                if w is not None:
                    w.ends.append(t)
                    if count >= w.first_step + self.steps:
                        self._stop("scheduled")
                if self.window is None and self.due(count):
                    self._open(count)
        except Exception as exc:  # noqa: BLE001 - the job goes on
            self.rec.degrade("gpu_windows", exc)

    def _open(self, k: int) -> None:
        rec = self.rec
        why = self._not_eligible()
        if why is not None:
            return
        self._guard()
        index = self.index(k)
        busy = self._user_busy()
        if busy is not None:
            rec.json.append({"type": "event", "event": "gpu_window_skipped", "window": index,
                             "first_step": k, "t": rec.clock(), "why": busy})
            return
        offset = gpu_convert.clock_offset(rec.clock)
        t0 = rec.clock()
        prof = None
        try:
            prof = self.factory()
            prof.start()
        except Exception as exc:  # noqa: BLE001
            self._failed("start", exc, prof)
            return
        t1 = rec.clock()
        self.window = _Window(index, k, prof, t0, t1 - t0, offset)

    def _stop(self, reason: str) -> None:
        w, self.window = self.window, None
        if w is None:
            return
        clock = self.rec.clock
        t0 = clock()
        try:
            if not self.cpu:
                self.torch.cuda.synchronize()
            t1 = clock()
            w.prof.stop()
        except Exception as exc:  # noqa: BLE001
            self._failed("stop", exc, None)
            return
        w.t_close = clock()
        w.sync_ns, w.stop_ns = t1 - t0, w.t_close - t1
        w.offset_close = gpu_convert.clock_offset(clock)
        w.end_reason = reason
        self.pending.append(w)

    def _failed(self, where: str, exc: BaseException, prof) -> None:
        self.rec.degrade(f"gpu_windows.{where}", exc)
        if prof is not None:
            try:
                prof.stop()  # a half-started session must not stay enabled
            except Exception:  # noqa: BLE001 - it never started
                pass
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            self.off = f"{self.failures} windows failed"
            self.rec.json.append({"type": "event", "event": "gpu_windows_off", "t": self.rec.clock(),
                                  "why": self.off})

    def close(self, signal: bool = False) -> None:
        """At exit: close an open window (reason "exit"); the final flush converts it.  From a
        signal handler (SIGTERM) the window is dropped instead: stopping Kineto synchronizes the
        device, and a process told to die must not wait on a GPU that may be hung."""
        try:
            with self._lock:
                w = self.window
                if w is not None and signal:
                    self.window = None
                    self.rec.json.append({"type": "event", "event": "gpu_window_dropped",
                                          "window": w.index, "t": self.rec.clock(),
                                          "why": "the process was terminated by a signal"})
                elif w is not None:
                    self._stop("exit")
        except Exception as exc:  # noqa: BLE001
            self.rec.degrade("gpu_windows.close", exc)

    # -- where windows may open --------------------------------------------------------------------
    def _not_eligible(self) -> str | None:
        if self.cpu:
            return None
        torch = self.torch
        try:
            if not torch.cuda.is_available():
                self.off = "CUDA is not available"  # a CPU job: silently off
                return self.off
        except Exception:  # noqa: BLE001
            return "CUDA state unknown"
        if any("nccl" in str(b).lower() for b in self.backends()):
            return None
        try:
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized() and "nccl" in str(dist.get_backend()).lower():
                return None
        except Exception:  # noqa: BLE001
            pass
        self.off = "no NCCL process group when the first window was due"
        self.rec.json.append({"type": "event", "event": "gpu_windows_off", "t": self.rec.clock(),
                              "why": self.off})
        return self.off

    def _user_busy(self) -> str | None:
        if self.user:
            names = sorted({what for _, _, what in self.user})
            return f"the job's own profiler is active ({', '.join(names)})"
        try:
            if (getattr(self.torch.autograd.profiler, "_is_profiler_enabled", False)
                    or self.torch._C._autograd._profiler_enabled()):
                return "a profiler session is enabled in this process"
        except Exception:  # noqa: BLE001
            pass
        return None

    # -- the job's own profiler ---------------------------------------------------------------------
    def _guard(self) -> None:
        """Wrap the job's profiler entry points (once per process; class attributes, so objects
        made before count too); the wrappers report to the latest :class:`GpuWindows`."""
        global _guard_target
        _guard_target = self
        if not _GUARDED:
            try:
                _install_guard()
            except Exception as exc:  # noqa: BLE001 - then only the enabled-state check protects
                self.rec.degrade("install.gpu_windows_guard", exc)

    def user_begin(self, key) -> None:
        try:
            with self._lock:
                self.user.add(key)
                w = self.window
                if w is not None:
                    self._stop("yielded")
                    self.rec.json.append({"type": "event", "event": "gpu_window_yielded",
                                          "window": w.index, "t": self.rec.clock(),
                                          "why": f"the job started its own profiler ({key[2]})"})
        except Exception as exc:  # noqa: BLE001
            self.rec.degrade("gpu_windows.guard", exc)

    # -- conversion (flusher thread) -------------------------------------------------------------------
    def drain(self) -> None:
        """Convert the closed windows (``Recorder.before_flush``)."""
        while self.pending:
            self._convert(self.pending.pop(0))

    def _convert(self, w: _Window) -> None:
        rec = self.rec
        clock = rec.clock
        t0 = clock()
        trace = None
        try:
            if self.trace_path is not None:
                path = self.trace_path(w.index)
                os.makedirs(path.parent, mode=layout.dir_mode(path.parent.parent), exist_ok=True)
                w.prof.export_chrome_trace(str(path))
                os.chmod(path, layout.file_mode(path.parent))  # torch writes it with the umask's mode
                trace = path.name
            t1 = clock()
            result = w.prof.profiler.kineto_results
            events = result.events() if result is not None else []
            offset = (w.offset_open[0] + w.offset_close[0]) // 2
            rows, stats = gpu_convert.convert(events, w.index, w.first_step, w.ends, offset,
                                              self.names, cpu_ops=self.cpu, t_open=w.t_open,
                                              t_close=w.t_close)
        except Exception as exc:  # noqa: BLE001
            rec.degrade("gpu_windows.convert", exc)
            return
        finally:
            w.prof = None  # Kineto's result can be large: keep nothing
        t2 = clock()
        names = self.names.take_new()
        if names is not None:
            rec.json.append(names)
        rec.gpu.extend(rows)
        cost = {"start_ns": w.start_ns, "sync_ns": w.sync_ns, "stop_ns": w.stop_ns,
                "export_ns": t1 - t0, "convert_ns": t2 - t1}
        rec.gpu_windows += 1
        rec.gpu_window_ns += sum(cost.values())
        error = max(w.offset_open[1], w.offset_close[1]) + abs(w.offset_close[0] - w.offset_open[0]) // 2
        rec.json.append({
            "type": "gpu_window", "window": w.index, "first_step": w.first_step,
            "steps": self.steps, "steps_ended": len(w.ends), "end_reason": w.end_reason,
            "activity": "cpu" if self.cpu else "cuda", "t_open": w.t_open, "t_close": w.t_close,
            "clock": {"offset_ns": offset, "error_ns": error, "offset_open_ns": w.offset_open[0],
                      "offset_close_ns": w.offset_close[0],
                      "method": "time.time_ns() bracketed by the capture clock at open and close"},
            "stats": stats, "cost_ns": cost, "trace": trace})
        check = stats.get("clock_check") or {}
        if max(check.get("before_open_ns", 0), check.get("after_close_ns", 0)) > CLOCK_CHECK_LIMIT_NS:
            rec.degrade("gpu_windows.clock", RuntimeError(
                f"window {w.index}: Kineto's CPU-side events lie {check['before_open_ns']} ns before "
                f"/ {check['after_close_ns']} ns after the window: its clock is not the wall clock"))
        if not self.cpu and not stats["records"]:
            rec.degrade("gpu_windows.empty", RuntimeError(
                f"window {w.index}: Kineto recorded no kernel, memcpy or memset (CUPTI unavailable "
                "or not permitted?)"))

    @staticmethod
    def _kineto_factory(cpu: bool):
        from torch.profiler import ProfilerActivity
        from torch.profiler.profiler import _KinetoProfile
        prof = _KinetoProfile(activities=[ProfilerActivity.CPU if cpu else ProfilerActivity.CUDA])
        prof._commprof_window = True  # the guard's wrappers let commprof's own session through
        return prof

    def _kineto_profiler(self):
        return self._kineto_factory(self.cpu)


# The entry point that ends what another began: both carry the beginning's name in their key.
_BEGIN_OF = {"stop": "start", "stop_trace": "prepare_trace", "__exit__": "__enter__"}
_GUARDED: list = []  # the wrapped (class, name, original) of this process
_guard_target: GpuWindows | None = None


def _install_guard() -> None:
    from torch.autograd import profiler as ap
    from torch.profiler import profiler as tp
    targets = [(tp.profile, "start", True), (tp.profile, "stop", False),
               (tp._KinetoProfile, "prepare_trace", True), (tp._KinetoProfile, "stop_trace", False),
               (ap.profile, "__enter__", True), (ap.profile, "__exit__", False)]
    try:
        from torch.autograd import profiler_legacy as pl
        targets += [(pl.profile, "__enter__", True), (pl.profile, "__exit__", False)]
    except ImportError:
        pass
    for cls, name, begins in targets:
        original = cls.__dict__.get(name)
        if original is not None and not hasattr(original, "__commprof_original__"):
            setattr(cls, name, _wrap(original, f"{cls.__module__}.{cls.__qualname__}", name, begins))
            _GUARDED.append((cls, name, original))


def _wrap(original, what: str, name: str, begins: bool):
    """``original`` that first tells the windows a session of the job's begins (``begins``), or
    afterwards that one ended.  commprof's own session is marked ``_commprof_window``."""
    begin_name = name if begins else _BEGIN_OF.get(name, name)

    @functools.wraps(original)
    def wrapper(prof_self, *args, **kwargs):
        target = _guard_target
        key = (begin_name, id(prof_self), what)
        if begins and target is not None and not getattr(prof_self, "_commprof_window", False):
            target.user_begin(key)
        try:
            return original(prof_self, *args, **kwargs)
        finally:
            if not begins and target is not None:
                target.user.discard(key)

    wrapper.__commprof_original__ = original
    return wrapper
