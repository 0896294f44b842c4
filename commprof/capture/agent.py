"""The capture agent of one worker process: installs the hooks once, flushes at exit.

Started by the bootstrap (``commprof/_bootstrap/sitecustomize.py``) right after the worker imports
torch.  Nothing here may raise into the user's program: every failure is recorded in the capture
as a "degraded" event and the job goes on.
"""
from __future__ import annotations

import atexit
import os
import socket
import sys
import time

from commprof.capture.config import CaptureConfig
from commprof.capture.recorder import Recorder
from commprof.format import layout, schema

_agent: "Agent | None" = None


class Agent:
    """One process's capture: recorder + collective hooks + step hooks."""

    def __init__(self, torch_module, config: CaptureConfig):
        self.torch = torch_module
        self.config = config
        self.run_dir = config.run_dir
        # One time base for every record of this process: the recorder's, which the hooks read.
        self.rec = Recorder(config.run_dir, self._file_meta, config.flush_interval_s, clock=config.clock)
        self.anchor = {"wall_ns": time.time_ns(), "mono_ns": self.rec.clock()}
        self.collectives = None
        self.steps = None
        self.gpu_windows = None
        self.fixes = None  # commprof try's FixInstaller
        self.terminator = None  # SIGTERM's handler and watcher (capture/sigterm.py)
        self.exit_reason = "exit"  # the trailer's reason at interpreter exit
        self.native_why = None  # why this process's native kernel failed, if it did

    def install(self) -> None:
        from commprof.capture.collectives import CollectiveHooks
        from commprof.capture.steps import StepHooks
        rec = self.rec
        config = self.config
        rec.mark.append((schema.MARK_START, rec.clock(), os.getpid()))
        self.collectives = self._native_hooks() if config.capture != "python" else None
        if self.collectives is None:
            try:
                self.collectives = CollectiveHooks(rec, self.torch)
                self.collectives.install()
            except Exception as exc:  # noqa: BLE001 - capture degrades, the job goes on
                rec.degrade("install.collectives", exc)
        self._note_capture_path()
        self.steps = StepHooks(rec, self.collectives, self.torch)
        self.steps.install()
        self._install_training()
        if config.flight_recorder:
            from commprof.capture.flight_recorder import Drain
            backends = self.collectives.backends if self.collectives is not None else set()
            rec.before_flush.append(Drain(rec, self.torch, backends=backends,
                                          interval_s=config.fr_drain_interval_s,
                                          force=config.fr_drain_forced))
        if config.gpu_windows is not None:
            self._install_gpu_windows()
        if config.faults:
            from commprof.capture import faults
            faults.install(self, config.faults)
        atexit.register(self._at_exit)
        os.register_at_fork(after_in_child=rec.disable_in_child)
        self._install_sigterm()
        self._install_excepthook()
        rec.start()

    def _native_hooks(self):
        """The C++ kernel's hooks (capture/native), or None: then the Python kernel runs."""
        from commprof.capture import native
        config = self.config
        module = None
        try:
            module = native.load_for(self.torch, config.native_so, config.native_cache)
            from commprof.capture.native.hooks import NativeHooks
            hooks = NativeHooks(self.rec, self.torch, module, clock_skew_ns=config.clock_skew_ns)
            hooks.install()
            return hooks
        except Exception as exc:  # noqa: BLE001 - never the job's problem: the Python path runs
            self.native_why = f"{type(exc).__name__}: {exc}"
            if config.capture == "native":  # asked for; auto without a build: expected, not a fault
                self.rec.degrade("capture.native", exc)
        if module is not None:
            try:
                module.uninstall()
            except Exception as exc:  # noqa: BLE001
                self.rec.degrade("capture.native.uninstall", exc)
        return None

    def _note_capture_path(self) -> None:
        """Which kernel runs in this process (a JSON event the report can name)."""
        config = self.config
        hooks = self.collectives
        path = getattr(hooks, "path", "python") if hooks is not None else "none"
        if config.capture == "python" and config.capture_requested == "native" and config.native_why:
            self.rec.degrade("capture.native", RuntimeError(config.native_why))  # asked, not had
        self.rec.json.append({
            "type": "event", "event": "capture_path", "path": path,
            "requested": config.capture_requested or config.capture,
            "why": None if path == "native" else (self.native_why or config.native_why),
            "so": config.native_so if path == "native" else None, "t": self.rec.clock()})

    def _install_training(self) -> None:
        """The loss of each step (capture/loss.py), the fixes of ``commprof try`` (commprof/fixes)
        and ``--max-steps``: each degrades alone, visibly."""
        config, rec = self.config, self.rec
        if config.loss:
            try:
                from commprof.capture.loss import LossTap
                tap = LossTap(rec, self.torch, self.steps.steps_ended)
                self.steps.on_backward = tap.on_backward
                rec.before_flush.append(tap.flush)
            except Exception as exc:  # noqa: BLE001
                rec.degrade("install.loss", exc)
        try:  # the DDP model's gradient shapes: what PowerSGD's projection needs (docs/try.md)
            from commprof.fixes import model_shapes
            model_shapes.install(self.torch, rec.json.append, rec.degrade)
        except Exception as exc:  # noqa: BLE001 - the job runs unchanged
            rec.degrade("install.model_shapes", exc)
        if config.fixes:
            try:
                from commprof.fixes import parse
                from commprof.fixes.install import FixInstaller
                self.fixes = FixInstaller(self.torch, parse(config.fixes, config.fix_warmup),
                                          rec.json.append, rec.degrade)
                self.fixes.install()
            except Exception as exc:  # noqa: BLE001 - the job runs unchanged
                rec.degrade("install.fixes", exc)
                rec.json.append({"type": "event", "event": "fix", "fix": config.fixes,
                                 "status": "skipped", "why": f"{type(exc).__name__}: {exc}"})
                self.fixes = None
        if config.seed_offset:
            try:
                from commprof.capture.seeds import SeedOffset
                SeedOffset(self.torch, config.seed_offset, rec.json.append).install()
            except Exception as exc:  # noqa: BLE001 - the job runs with its own seeds
                rec.degrade("install.seeds", exc)
        if config.max_steps:
            self.steps.max_steps = config.max_steps
            self.steps.on_max_steps = self._stop_after_max_steps

    def _stop_after_max_steps(self) -> None:
        """``--max-steps``: the capture is closed and the process ends, status 0 — before the
        job's next collective, so no rank waits on one that has left."""
        self.exit_reason = "max_steps"
        self.close("max_steps")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def _install_gpu_windows(self) -> None:
        """torch.profiler windows on CUDA jobs (capture/gpu_windows.py), driven by the steps."""
        try:
            from commprof.capture.gpu_windows import GpuWindows
            windows = GpuWindows(self.rec, self.torch, self.config,
                                 backends=lambda: getattr(self.collectives, "backends", ()),
                                 trace_path=self._kineto_trace_path)
            self.steps.on_boundary = windows.on_step
            self.rec.before_flush.append(windows.drain)
            self.gpu_windows = windows
        except Exception as exc:  # noqa: BLE001 - no windows, the job goes on
            self.rec.degrade("install.gpu_windows", exc)

    def _kineto_trace_path(self, window: int):
        rank, _, _ = _rank_and_world(self.torch)
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
        return layout.kineto_dir(self.run_dir) / layout.kineto_trace_name(rank, restart, os.getpid(), window)

    def _install_sigterm(self) -> None:
        """SIGTERM closes the capture and ends the process at once, even while the main thread
        waits inside a collective (capture/sigterm.py); a job's own handler is left alone."""
        from commprof.capture.sigterm import Terminator
        try:
            terminator = Terminator(self._on_sigterm, self.rec.degrade)
            if terminator.install():
                self.terminator = terminator
        except (ValueError, OSError) as exc:  # not the main thread: rely on atexit and the flusher
            self.rec.degrade("install.sigterm", exc)

    def _install_excepthook(self) -> None:
        """Chain ``sys.excepthook``: an uncaught exception ends the process with trailer reason
        ``exception: TYPE``.  The previous hook (Python's traceback printer, or the job's own) still
        runs, unchanged, so the job's output and exit status are what they were."""
        previous = sys.excepthook
        agent = self

        def commprof_excepthook(exc_type, exc, tb):
            try:
                agent.exit_reason = f"exception: {getattr(exc_type, '__name__', None) or exc_type}"
            except Exception:  # noqa: BLE001 - never in the way of the job's own hook
                pass
            return previous(exc_type, exc, tb)

        sys.excepthook = commprof_excepthook

    def _at_exit(self) -> None:
        self.close(self.exit_reason)

    def _on_sigterm(self) -> None:
        """The capture's last flush and trailer before SIGTERM ends the process (the
        Terminator then re-raises it with the default action)."""
        if self.gpu_windows is not None:
            self.gpu_windows.close(signal=True)  # never wait on a device from a signal handler
        self.close("SIGTERM")

    def close(self, reason: str) -> None:
        if self.fixes is not None:
            try:
                self.fixes.close()
            except Exception as exc:  # noqa: BLE001
                self.rec.degrade("fixes.close", exc)
        if self.gpu_windows is not None:
            self.gpu_windows.close()
        if self.collectives is not None:
            self.collectives.release_all()
        self.rec.close(reason)

    def _file_meta(self) -> tuple[str, dict]:
        """Name and header of this process's capture file (decided at its first write)."""
        env = os.environ
        rank, world, source = _rank_and_world(self.torch)
        restart = int(env.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
        header = {
            "schema_minor": schema.SCHEMA_MINOR,
            "rank": rank, "world_size": world, "rank_source": source,
            "local_rank": _int_or_none(env.get("LOCAL_RANK")),
            "group_rank": _int_or_none(env.get("GROUP_RANK")),
            "restart": restart, "run_id": env.get("TORCHELASTIC_RUN_ID"),
            "host": socket.gethostname(), "pid": os.getpid(), "argv": list(sys.argv),
            "clock": dict(self.anchor, name="perf_counter_ns"),
            "torch_version": getattr(self.torch, "__version__", "?"),
            "nccl_version": _nccl_version(self.torch),
            "cuda_version": getattr(getattr(self.torch, "version", None), "cuda", None),
            "python": sys.version.split()[0],
            "commprof_version": _version(),
            "missing_ops": list(getattr(self.collectives, "missing", [])),
            **_cpu_threads(self.torch),
        }
        return layout.capture_name(rank, restart, os.getpid()), header


def _cpu_threads(torch) -> dict:
    """Intra-op threads and the CPUs this process may run on (to tell oversubscribed cores)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 0))
    try:
        threads = int(torch.get_num_threads())
    except (AttributeError, RuntimeError):
        threads = None
    return {"intra_op_threads": threads, "cpus": cpus}


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _rank_and_world(torch_module) -> tuple[int, int, str]:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), "env"
    dist = torch_module.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), "process_group"
    return 0, 1, "single_process"


def _version() -> str:
    from commprof._version import __version__
    return __version__


def start(torch_module, config: CaptureConfig) -> None:
    """Install the agent once per process (idempotent).  Never raises."""
    global _agent
    if _agent is not None or not config.run_dir:
        return
    try:
        if config.problem:
            raise ValueError(config.problem)
        _agent = Agent(torch_module, config)
        _agent.install()
    except Exception as exc:  # noqa: BLE001 - the user's job must never see this
        _report_bootstrap_failure(config.run_dir, exc)


def step() -> None:
    """Mark the end of a training step (no-op when the process is not captured)."""
    agent = _agent
    if agent is not None and agent.steps is not None:
        agent.steps.explicit_step()


def metric(name: str, value, higher_is_better: bool) -> None:
    """Record a value the job reports (``commprof.metric``); never raises into the job."""
    agent = _agent
    if agent is None or not agent.rec.enabled:
        return
    try:
        number = float(value.item() if hasattr(value, "item") else value)
        agent.rec.json.append({"type": "metric", "name": str(name), "value": number,
                               "higher_is_better": bool(higher_is_better), "t": agent.rec.clock(),
                               "step": agent.steps.steps_ended() if agent.steps is not None else 0})
    except Exception as exc:  # noqa: BLE001 - a value that is not a number: recorded, not raised
        agent.rec.degrade("metric", exc)


def train_steps(requested: int) -> int:
    """``commprof.train_steps``: the steps the job should train for — ``requested``, or fewer
    under ``--max-steps N`` (``commprof try --steps``), in which case this process is no longer
    ended at step N: the job stops training itself and runs what follows (its evaluation)."""
    agent = _agent
    limit = agent.config.max_steps if agent is not None else None
    if not limit or agent.steps is None:
        return requested
    agent.steps.max_steps = None  # the job honours the limit: no hard stop
    agent.rec.json.append({"type": "event", "event": "train_steps", "requested": int(requested),
                           "limit": int(limit), "t": agent.rec.clock()})
    return min(int(requested), int(limit))


def step_begin() -> None:
    """Mark the start of a training step (no-op when the process is not captured)."""
    agent = _agent
    if agent is not None and agent.steps is not None:
        agent.steps.explicit_begin()


def _report_bootstrap_failure(run_dir: str, exc: BaseException) -> None:
    try:
        ranks = layout.ranks_dir(run_dir)
        os.makedirs(ranks, mode=layout.dir_mode(run_dir), exist_ok=True)
        fd = os.open(ranks / layout.bootstrap_error_name(os.getpid()),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, layout.file_mode(ranks))
        with os.fdopen(fd, "a") as fh:
            fh.write(f"{type(exc).__name__}: {exc}\n")
    except OSError:
        sys.stderr.write(f"commprof: capture disabled in pid {os.getpid()}: {exc}\n")


def _nccl_version(torch) -> str | None:
    """NCCL's version where this torch has CUDA (no device is touched), else None."""
    try:
        if not torch.cuda.is_available():
            return None
        v = torch.cuda.nccl.version()
        return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception:  # noqa: BLE001 - a build without NCCL: unknown, not an error
        return None
