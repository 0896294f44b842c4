"""The capture's settings, read from the environment in one place: :meth:`CaptureConfig.from_env`.

``commprof run`` hands its settings to every process of the job through the environment; the
capture modules take them from a :class:`CaptureConfig`, never from ``os.environ``:

==============================  ================================================================
``COMMPROF_RUN_DIR``            the run directory (``commprof run`` sets it); unset: no capture
``COMMPROF_FLUSH_INTERVAL``     seconds between flushes of the capture (``--flush-interval``)
``COMMPROF_OWNER``              ``<RANK>:<pid>`` of the process that captures RANK (set by the
                                bootstrap, inherited by that process's children: they are skipped)
``COMMPROF_FR_DRAIN``           ``1``: read the Flight Recorder without an NCCL group too (tests)
``COMMPROF_FR_DRAIN_INTERVAL``  seconds between Flight Recorder reads (default: at exit only)
``COMMPROF_FAULT``              test hook: sites that fail on purpose (:mod:`.faults`)
``COMMPROF_CLOCK_SKEW``         test hook ``RANK:NS``: that rank's clock reads NS later (a host
                                whose clock is off), to test cross-rank alignment
``COMMPROF_GPU_WINDOWS``        ``STEPS/EVERY[@AFTER]`` or ``off``: GPU windows of torch.profiler
                                (``--gpu-windows``; unset: ``3/100@5``; :mod:`.gpu_windows`)
``COMMPROF_GPU_TRACE``          ``1``: keep Kineto's own JSON of each window (``--gpu-trace``)
``COMMPROF_GPU_ACTIVITY``       test hook ``cpu``: windows record Kineto's CPU activity instead of
                                CUDA's, on any job (the mechanism's test on CPU machines)
``COMMPROF_CAPTURE``            the c10d kernel that runs: ``python`` (default), ``native`` or
                                ``auto`` (``--capture``; the launcher sets what it resolved to)
``COMMPROF_CAPTURE_REQUESTED``  what ``--capture`` asked for (the launcher's; recorded in events)
``COMMPROF_NATIVE_SO``          the native kernel the launcher built (:mod:`.native`)
``COMMPROF_NATIVE_CACHE``       where native builds are cached (default ``~/.cache/commprof/native``)
``COMMPROF_NATIVE_DISABLE``     a reason: the native kernel is unavailable (a test seam)
``COMMPROF_NATIVE_UNAVAILABLE`` why the launcher fell back to the Python kernel
``COMMPROF_FIXES``              fixes to apply where the job builds its model (``commprof try``,
                                ``--fix``; commprof/fixes): e.g. ``bf16-compress,bucket-cap:25``
``COMMPROF_FIX_WARMUP``         steps before a fix with a warm-up starts (``--fix-warmup``)
``COMMPROF_MAX_STEPS``          end the job after this many steps (``--max-steps``)
``COMMPROF_LOSS``               ``0``: do not record each step's loss (on by default)
``COMMPROF_SEED_OFFSET``        an integer added to every seed the job sets (``commprof try``'s
                                repeats; :mod:`.seeds` lists which seeds); unset or 0: none
==============================  ================================================================

plus what these depend on: ``RANK`` and ``LOCAL_RANK`` (torchrun's) and ``TORCH_FR_BUFFER_SIZE``.
Standard library only; reading never raises (it runs in every process of the job): a value that
does not parse is kept in :attr:`CaptureConfig.problem`, and the agent then refuses to start,
saying why in ``RUN/ranks/bootstrap-<pid>.err``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

ENV_RUN_DIR = "COMMPROF_RUN_DIR"
ENV_FLUSH = "COMMPROF_FLUSH_INTERVAL"
ENV_OWNER = "COMMPROF_OWNER"
ENV_FR_DRAIN = "COMMPROF_FR_DRAIN"
ENV_FR_DRAIN_INTERVAL = "COMMPROF_FR_DRAIN_INTERVAL"
ENV_FAULT = "COMMPROF_FAULT"
ENV_CLOCK_SKEW = "COMMPROF_CLOCK_SKEW"
ENV_GPU_WINDOWS = "COMMPROF_GPU_WINDOWS"
ENV_GPU_TRACE = "COMMPROF_GPU_TRACE"
ENV_GPU_ACTIVITY = "COMMPROF_GPU_ACTIVITY"
ENV_CAPTURE = "COMMPROF_CAPTURE"
ENV_CAPTURE_REQUESTED = "COMMPROF_CAPTURE_REQUESTED"
ENV_NATIVE_SO = "COMMPROF_NATIVE_SO"
ENV_NATIVE_CACHE = "COMMPROF_NATIVE_CACHE"
ENV_NATIVE_DISABLE = "COMMPROF_NATIVE_DISABLE"
ENV_NATIVE_WHY = "COMMPROF_NATIVE_UNAVAILABLE"
ENV_FIXES = "COMMPROF_FIXES"
ENV_FIX_WARMUP = "COMMPROF_FIX_WARMUP"
ENV_MAX_STEPS = "COMMPROF_MAX_STEPS"
ENV_LOSS = "COMMPROF_LOSS"
ENV_SEED_OFFSET = "COMMPROF_SEED_OFFSET"
CAPTURE_PATHS = ("auto", "native", "python")
DEFAULT_CAPTURE = "auto"
DEFAULT_GPU_WINDOWS = (3, 100, 5)  # STEPS/EVERY@AFTER: 3 steps every 100, from step 5 on
GPU_ACTIVITIES = ("cuda", "cpu")  # "cpu": tests of the mechanism on machines without CUDA


@dataclass(frozen=True)
class CaptureConfig:
    """What one process's capture runs with (see the module docstring for each variable)."""

    run_dir: str | None = None
    flush_interval_s: float = 1.0
    owner: str | None = None  # COMMPROF_OWNER
    rank: str | None = None  # RANK, as the environment spells it
    local_rank: str | None = None  # LOCAL_RANK (set for torchrun's workers, not for torchrun)
    flight_recorder: bool = False  # TORCH_FR_BUFFER_SIZE > 0: torch keeps a Flight Recorder
    fr_drain_forced: bool = False
    fr_drain_interval_s: float | None = None
    faults: frozenset[str] = field(default_factory=frozenset)
    clock_skew_ns: int = 0  # this process's skew (COMMPROF_CLOCK_SKEW naming its RANK), else 0
    gpu_windows: tuple[int, int, int] | None = DEFAULT_GPU_WINDOWS  # (steps, every, after); None: off
    gpu_trace: bool = False  # keep Kineto's JSON of each window (COMMPROF_GPU_TRACE=1)
    gpu_activity: str = "cuda"  # COMMPROF_GPU_ACTIVITY (test hook: "cpu")
    capture: str = DEFAULT_CAPTURE  # COMMPROF_CAPTURE: auto, native or python
    capture_requested: str | None = None  # COMMPROF_CAPTURE_REQUESTED
    native_so: str | None = None  # COMMPROF_NATIVE_SO
    native_cache: str | None = None  # COMMPROF_NATIVE_CACHE
    native_disable: str | None = None  # COMMPROF_NATIVE_DISABLE (a reason)
    native_why: str | None = None  # COMMPROF_NATIVE_UNAVAILABLE
    fixes: str | None = None  # COMMPROF_FIXES, as given (commprof.fixes.parse reads it)
    fix_warmup: int = 5  # COMMPROF_FIX_WARMUP
    max_steps: int | None = None  # COMMPROF_MAX_STEPS
    loss: bool = True  # COMMPROF_LOSS != "0"
    seed_offset: int = 0  # COMMPROF_SEED_OFFSET
    problem: str | None = None  # a setting that did not parse: the capture must not start

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "CaptureConfig":
        """Read every setting from ``env`` (default: this process's environment).  Never raises."""
        env = os.environ if env is None else env
        problems = []

        def number(name: str, default):
            text = env.get(name)
            if not text:
                return default
            try:
                return float(text)
            except ValueError:
                problems.append(f"{name}={text!r} is not a number")
                return default

        windows, why = parse_gpu_windows(env.get(ENV_GPU_WINDOWS) or None)
        if why:
            problems.append(f"{ENV_GPU_WINDOWS}={env.get(ENV_GPU_WINDOWS)!r}: {why}")
        activity = (env.get(ENV_GPU_ACTIVITY) or "cuda").strip().lower()
        if activity not in GPU_ACTIVITIES:
            problems.append(f"{ENV_GPU_ACTIVITY}={activity!r} is not one of {', '.join(GPU_ACTIVITIES)}")
            activity = "cuda"
        capture = (env.get(ENV_CAPTURE) or DEFAULT_CAPTURE).strip().lower()
        if capture not in CAPTURE_PATHS:
            problems.append(f"{ENV_CAPTURE}={capture!r} is not one of {', '.join(CAPTURE_PATHS)}")
            capture = DEFAULT_CAPTURE
        return cls(
            run_dir=env.get(ENV_RUN_DIR) or None,
            flush_interval_s=number(ENV_FLUSH, 1.0),
            owner=env.get(ENV_OWNER) or None,
            rank=env.get("RANK"),
            local_rank=env.get("LOCAL_RANK"),
            flight_recorder=env.get("TORCH_FR_BUFFER_SIZE", "0") not in ("", "0"),
            fr_drain_forced=env.get(ENV_FR_DRAIN) == "1",
            fr_drain_interval_s=number(ENV_FR_DRAIN_INTERVAL, None),
            faults=frozenset(s.strip() for s in env.get(ENV_FAULT, "").split(",") if s.strip()),
            clock_skew_ns=_skew_ns(env.get(ENV_CLOCK_SKEW, ""), env.get("RANK")),
            gpu_windows=windows, gpu_trace=env.get(ENV_GPU_TRACE) == "1", gpu_activity=activity,
            capture=capture, capture_requested=env.get(ENV_CAPTURE_REQUESTED) or None,
            native_so=env.get(ENV_NATIVE_SO) or None, native_cache=env.get(ENV_NATIVE_CACHE) or None,
            native_disable=env.get(ENV_NATIVE_DISABLE) or None,
            native_why=env.get(ENV_NATIVE_WHY) or None,
            fixes=env.get(ENV_FIXES) or None,
            fix_warmup=int(number(ENV_FIX_WARMUP, 5)),
            max_steps=int(number(ENV_MAX_STEPS, 0)) or None,
            loss=env.get(ENV_LOSS, "1") != "0",
            seed_offset=int(number(ENV_SEED_OFFSET, 0)),
            problem="; ".join(problems) or None,
        )

    @property
    def clock(self) -> Callable[[], int]:
        """The capture's clock: ``time.perf_counter_ns`` (CLOCK_MONOTONIC on Linux: one time base
        for all processes of a host), shifted by the test skew if one is set."""
        skew = self.clock_skew_ns
        if not skew:
            return time.perf_counter_ns

        def skewed() -> int:
            return time.perf_counter_ns() + skew

        return skewed


def parse_gpu_windows(spec: str | None) -> tuple[tuple[int, int, int] | None, str | None]:
    """``STEPS/EVERY[@AFTER]`` -> ((steps, every, after), None); ``off`` -> (None, None); unset ->
    the default; a bad spec -> (default, why).  EVERY 0: one window only.  Never raises."""
    if spec is None:
        return DEFAULT_GPU_WINDOWS, None
    text = spec.strip().lower()
    if text in ("off", "0", "none", "no"):
        return None, None
    head, _, after = text.partition("@")
    steps, sep, every = head.partition("/")
    try:
        value = (int(steps), int(every) if sep else 0,
                 int(after) if after else DEFAULT_GPU_WINDOWS[2])
    except ValueError:
        return DEFAULT_GPU_WINDOWS, "expected STEPS/EVERY[@AFTER] (e.g. 3/100@5) or off"
    if value[0] < 1 or value[2] < 0 or (value[1] and value[1] < value[0]):
        return DEFAULT_GPU_WINDOWS, "needs STEPS >= 1, EVERY >= STEPS (or 0: once), AFTER >= 0"
    return value, None


def _skew_ns(spec: str, rank: str | None) -> int:
    """``RANK:NS`` -> NS for that rank, else 0 (a malformed value skews nothing)."""
    target, _, ns = spec.partition(":")
    try:
        return int(ns) if spec and target == rank else 0
    except ValueError:
        return 0


def claim_rank(rank: str, pid: int, env: dict | None = None) -> None:
    """Mark process ``pid`` as the one that captures ``rank``: processes it starts inherit the
    claim (``COMMPROF_OWNER``) and are not captured again (spawned DataLoader workers)."""
    (os.environ if env is None else env)[ENV_OWNER] = f"{rank}:{pid}"
