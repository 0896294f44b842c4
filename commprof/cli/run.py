"""``commprof run [OPTIONS] -- COMMAND ...``: the options, checked before anything starts; the run
itself is a :class:`commprof.launch.session.RunSession`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from commprof.capture import compat
from commprof.capture.config import (ENV_FIXES, ENV_FLUSH, ENV_GPU_TRACE, ENV_GPU_WINDOWS,
                                     parse_gpu_windows)
from commprof.errors import CommprofError, UsageError
from commprof.format import layout
from commprof.format.text import printable
from commprof.launch import supervisor
from commprof.launch.session import SUMMARY_MAX_BYTES, RunHooks, RunOptions, RunSession


def run_command(command: list[str], out: str | None = None, flush_interval: float = 1.0,
                quiet: bool = False, hang_timeout: float | None = None,
                kill_on_hang: bool = False, sample_hz: float = 10.0, probe: bool = False,
                probe_sizes: str = "8B:16MiB:4", join: bool = False,
                gpu_timing: bool = True, gpu_windows: str | None = None,
                gpu_trace: bool = False, capture: str = "auto", fix: str | None = None,
                fix_warmup: int = 5, max_steps: int | None = None,
                live=None, node_summary: bool = True, share_group: bool = False) -> tuple[int, Path]:
    """Run ``command`` under capture.  Returns (job return code, run directory).

    ``live``: a :class:`commprof.cli.run_live.LiveOptions` (``--live``, ``--prometheus*``)."""
    supervisor.check_command(command)
    fix_env = _fix_environment(fix, fix_warmup, max_steps)
    probe_prefix = _probe_launcher(command, probe_sizes) if probe else None
    _check_options(flush_interval, sample_hz, hang_timeout, kill_on_hang, gpu_windows)
    from commprof.cli.run_live import LiveSetup
    outputs = LiveSetup(live) if live is not None else None  # checks the flags, binds the port
    if outputs is not None and not live.wanted:
        outputs = None
    from commprof.cli.native import capture_environment
    say = (lambda msg: None) if quiet else (lambda msg: print(f"commprof: {printable(msg)}", file=sys.stderr))
    capture_env = capture_environment(capture, say)  # builds the native kernel, once, if asked
    untested = compat.support_line(compat.installed_torch())
    if untested:
        say(f"note: {untested}")
    options = RunOptions(
        command, env=_worker_environment(flush_interval, {**capture_env, **fix_env}, gpu_windows,
                                         gpu_trace, gpu_timing),
        out=out, join=join, share_group=share_group, quiet=quiet, hang_timeout=hang_timeout,
        kill_on_hang=kill_on_hang, fixes=fix_env[ENV_FIXES].split(",") if fix else None,
        node_summary=node_summary)
    hooks = RunHooks(
        say, summary_line=_one_line_summary, live=outputs,
        probe=((lambda run_dir: _probe_before(probe_prefix, run_dir, probe_sizes, say, quiet))
               if probe_prefix is not None else None),
        start_sampler=(lambda run_dir: _start_sampler(run_dir, sample_hz, say)) if sample_hz > 0 else None)
    return RunSession(options, hooks).run()


def _check_options(flush_interval: float, sample_hz: float, hang_timeout: float | None,
                   kill_on_hang: bool, gpu_windows: str | None) -> None:
    """The numeric options' ranges (a bad one is a usage error before anything starts)."""
    if flush_interval <= 0:
        raise UsageError(f"--flush-interval {flush_interval}: must be > 0")
    if sample_hz < 0 or sample_hz > 1000:
        raise UsageError(f"--sample-hz {sample_hz}: must be between 0 (off) and 1000")
    if kill_on_hang and hang_timeout is None:
        raise UsageError("--kill-on-hang needs --hang-timeout SECONDS")
    if hang_timeout is not None and hang_timeout < 2 * flush_interval:
        raise UsageError(f"--hang-timeout {hang_timeout}: must be at least twice --flush-interval "
                         f"({flush_interval} s), or records still in the workers' buffers read as stuck")
    if gpu_windows is not None and parse_gpu_windows(gpu_windows)[1]:
        raise UsageError(f"--gpu-windows {gpu_windows}: {parse_gpu_windows(gpu_windows)[1]}")


def _worker_environment(flush_interval: float, extra: dict, gpu_windows: str | None,
                        gpu_trace: bool, gpu_timing: bool) -> dict:
    """The workers' settings besides the bootstrap's: flush interval, capture path and fixes
    (``extra``), GPU windows and trace, and Flight Recorder's timing unless the user set it."""
    env = {ENV_FLUSH: str(flush_interval), **extra}
    if gpu_windows is not None:  # else the workers' default (capture/config.py)
        env[ENV_GPU_WINDOWS] = gpu_windows
    if gpu_trace:
        env[ENV_GPU_TRACE] = "1"
    if gpu_timing:  # PyTorch's Flight Recorder with CUDA-event timing (capture/flight_recorder.py)
        for key, value in (("TORCH_FR_BUFFER_SIZE", "2000"), ("TORCH_NCCL_ENABLE_TIMING", "1")):
            if key not in os.environ and not (key == "TORCH_FR_BUFFER_SIZE"
                                              and "TORCH_NCCL_TRACE_BUFFER_SIZE" in os.environ):
                env[key] = value
    return env


def _probe_launcher(command: list[str], sizes: str) -> list[str]:
    """The job's torchrun launcher, to run the probe with (refused before anything starts)."""
    from commprof.cli.probe import check_options, torchrun_prefix
    check_options(sizes, "all_reduce", None, 1, 1, 1.0)
    prefix = torchrun_prefix(command)
    if prefix is None:
        raise UsageError("--probe needs a torchrun command (`torchrun ...` or "
                         "`python -m torch.distributed.run ...`): it runs the probe with the "
                         "job's own launcher")
    return prefix


def _probe_before(prefix: list[str], run_dir: Path, sizes: str, say, quiet: bool = False) -> None:
    """``commprof probe`` with the job's launcher, into RUN/probe.json; a failure is a warning."""
    from commprof.cli.probe import probe_environment, run_probe, worker_args
    out = layout.probe_path(run_dir)
    ops = "all_reduce,all_gather,reduce_scatter,sendrecv"
    say(f"probing the fabric first ({ops} at {sizes}) into {out}")
    cmd = prefix + worker_args(out, sizes, ops, None, 10, 1.0, quiet=quiet)
    try:
        run_probe(cmd, out, env=probe_environment(prefix))
    except CommprofError as exc:
        say(f"warning: probe skipped: {exc}")


def _start_sampler(run_dir: Path, hz: float, say):
    """The node sampler (NIC, InfiniBand, NVML, TCP RTT), or None if it cannot start."""
    from commprof.sampling.sampler import NodeSampler, default_sources
    try:
        sampler = NodeSampler(run_dir, default_sources(job_pids=lambda: []), hz=hz)
    except OSError as exc:
        say(f"warning: link sampling off: {exc}")
        return None
    sampler.start()
    return sampler


def _one_line_summary(run_dir: Path) -> str:
    """The report's verdict, for runs small enough to analyse in a moment."""
    size = sum(p.stat().st_size for p in layout.capture_paths(run_dir))
    if size > SUMMARY_MAX_BYTES:
        return f"captured {size / 1e6:.0f} MB"
    from commprof.cli.report import build_report
    try:
        return build_report(str(run_dir), warmup=2).verdict
    except Exception as exc:  # noqa: BLE001 - the job's exit status must still pass through
        return f"summary unavailable ({type(exc).__name__}: {exc}); try `commprof report`"


def _fix_environment(fix: str | None, fix_warmup: int, max_steps: int | None) -> dict:
    """The workers' settings for ``--fix`` / ``--max-steps`` (checked here, before anything runs)."""
    from commprof.capture.config import ENV_FIX_WARMUP, ENV_MAX_STEPS
    env = {}
    if fix:
        from commprof.fixes import parse
        env[ENV_FIXES] = ",".join(f.spec for f in parse(fix, fix_warmup))
        if fix_warmup < 0:
            raise UsageError(f"--fix-warmup {fix_warmup}: must be >= 0")
        env[ENV_FIX_WARMUP] = str(fix_warmup)
    if max_steps is not None:
        if max_steps < 1:
            raise UsageError(f"--max-steps {max_steps}: must be >= 1")
        env[ENV_MAX_STEPS] = str(max_steps)
    return env
