"""``commprof run [OPTIONS] -- COMMAND ...``"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from commprof.capture import compat
from commprof.capture.config import ENV_FLUSH, ENV_GPU_TRACE, ENV_GPU_WINDOWS, parse_gpu_windows
from commprof.errors import CommprofError, RunDirError, UsageError
from commprof.format import layout
from commprof.format.text import printable, shell_command
from commprof.launch import rundir, supervisor


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
    from commprof.cli.run_live import LiveSetup, combine_ticks
    outputs = LiveSetup(live) if live is not None else None  # checks the flags, binds the port
    if outputs is not None and not live.wanted:
        outputs = None
    from commprof.cli.native import capture_environment
    say = (lambda msg: None) if quiet else (lambda msg: print(f"commprof: {printable(msg)}", file=sys.stderr))
    capture_env = capture_environment(capture, say)  # builds the native kernel, once, if asked
    untested = compat.support_line(compat.installed_torch())
    if untested:
        say(f"note: {untested}")
    if out:
        out = rundir.expand_out(out)
        if ":" in os.path.abspath(out):  # the bootstrap goes on PYTHONPATH, which ':' separates
            raise UsageError(f"--out {out}: a run directory path cannot contain ':' (it goes on "
                             "PYTHONPATH, where ':' separates entries)")
    if join:
        if not out:
            raise UsageError("--join needs --out DIR (the run directory every node shares)")
        run_dir, owner = rundir.join_run_dir(out, share_group)
    else:
        run_dir, owner = rundir.new_run_dir(out, command, share_group), True
    manifest_file = rundir.manifest_name(owner)
    try:
        boot = supervisor.prepare_bootstrap(run_dir)
    except OSError as exc:  # e.g. the run directory was replaced since it was made
        raise RunDirError(f"{run_dir}: cannot prepare the bootstrap: {exc.strerror or exc}") from exc
    extra = {ENV_FLUSH: str(flush_interval), **capture_env, **fix_env}
    if gpu_windows is not None:  # else the workers' default (capture/config.py)
        extra[ENV_GPU_WINDOWS] = gpu_windows
    if gpu_trace:
        extra[ENV_GPU_TRACE] = "1"
    if gpu_timing:  # PyTorch's Flight Recorder with CUDA-event timing (capture/flight_recorder.py)
        for key, value in (("TORCH_FR_BUFFER_SIZE", "2000"), ("TORCH_NCCL_ENABLE_TIMING", "1")):
            if key not in os.environ and not (key == "TORCH_FR_BUFFER_SIZE"
                                              and "TORCH_NCCL_TRACE_BUFFER_SIZE" in os.environ):
                extra[key] = value
    env = supervisor.job_environment(run_dir, boot, extra=extra)
    manifest = rundir.start_manifest(command, env)
    if fix:
        from commprof.capture.config import ENV_FIXES
        manifest["fixes"] = fix_env[ENV_FIXES].split(",")
    try:
        rundir.write_manifest(run_dir, manifest, manifest_file)
    except OSError as exc:
        raise RunDirError(f"{run_dir / manifest_file}: cannot write: {exc.strerror or exc}") from exc
    for warning in supervisor.startup_warnings(command, env):
        say(f"warning: {warning}")
    say(f"capturing into {run_dir}")
    t0 = time.time_ns()
    returncode = None
    watch = None
    if hang_timeout is not None:
        from commprof.launch.hangwatch import HangWatch
        watch = HangWatch(run_dir, hang_timeout, kill_on_hang, say)
        say(f"hang watch: reporting collectives pending longer than {hang_timeout:g} s")
    if probe_prefix is not None:
        _probe_before(probe_prefix, run_dir, probe_sizes, say, quiet)
    sampler = _start_sampler(run_dir, sample_hz, say) if sample_hz > 0 else None
    ticks = [("hang watch", watch.tick)] if watch is not None else []
    if outputs is not None:
        outputs.start(run_dir, say, lambda: Path(sampler.path) if sampler is not None else None,
                      lambda: watch.reported if watch is not None else None)
        ticks.append(("live view / metrics", outputs.tick))
    job = {}
    if sampler is not None:
        for src in sampler.sources:
            if src.name == "tcp":
                src.job_pids = lambda: supervisor.process_tree(job.get("pid"))
    try:
        returncode = supervisor.run_job(command, env, tick=combine_ticks(ticks, say) if ticks else None,
                                        tick_interval=min(watch.interval_s, 1.0) if watch else 1.0,
                                        started=lambda pid: job.update(pid=pid), say=say)
        if watch is not None:
            watch.finish()  # a stopped job's workers in their own sessions end too
    finally:
        if outputs is not None:
            outputs.close_panel()
        if sampler is not None:
            sampler.stop()
        if watch is not None and watch.episodes:
            manifest["hang"] = {"episodes": watch.episodes,
                                "killed": (watch.reported or {}).get("killed")}
        manifest.update(status="finished" if returncode is not None else "launcher-failed",
                        end_wall_ns=time.time_ns(), duration_s=(time.time_ns() - t0) / 1e9)
        if returncode is not None:
            manifest["exit_code"] = returncode if returncode >= 0 else 128 - returncode
            manifest["signal"] = -returncode if returncode < 0 else None
        try:
            rundir.write_manifest(run_dir, manifest, manifest_file)
        except OSError as exc:  # the job's exit status still passes through
            say(f"warning: could not finish {run_dir / manifest_file}: {exc.strerror or exc}")
    if outputs is not None:
        outputs.finish(say)  # after the workers and the sampler closed their files
        outputs.close()
    captured = rundir.count_captures(run_dir)
    if captured and fix:  # commprof try: the loss curve beside the fix, in the manifest too
        _add_loss_to_manifest(run_dir, manifest, manifest_file, say)
    if captured == 0:
        say("warning: no process was captured (did the job import torch? see "
            "docs/troubleshooting.md)")
    say(f"{captured} process capture(s) written to {run_dir}")
    if captured and node_summary:
        _write_node_summary(run_dir, say)
    if captured and not quiet:
        say(_hang_line(watch) or _one_line_summary(run_dir))
    say(f"next: {shell_command(['commprof', 'report', _shell_path(run_dir)])}")
    if watch is not None and watch.stopped and returncode is not None:
        return HANG_EXIT_STATUS, run_dir
    return returncode, run_dir


HANG_EXIT_STATUS = 124  # --kill-on-hang stopped the job (as timeout(1)); the job's own: manifest


def _hang_line(watch) -> str | None:
    """The closing line of a run that hung: what commprof did, and no performance verdict (the
    steps' timings of a job that stopped progressing say nothing of its communication)."""
    if watch is None or (watch.reported is None and not watch.stopped):
        return None
    if watch.stopped:
        return ("the job hung and --kill-on-hang stopped it: any error report of its launcher above "
                "(torchrun's traceback) is a consequence of that stop, not another failure; "
                f"no performance verdict for a hung run; exit status {HANG_EXIT_STATUS}")
    return ("the job ended while collectives were still stuck (see the hang report): no "
            "performance verdict for a hung run")


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


def _write_node_summary(run_dir: Path, say) -> None:
    """This node's captures reduced into RUN/summaries/ (analysis/scale/node_summary.py); a failure or
    Ctrl-C is a warning: the report then reads the captures."""
    from commprof.analysis.scale.node_summary import write_node_summary
    try:
        w = write_node_summary(run_dir)
    except KeyboardInterrupt:
        say("node summary skipped (interrupted): `commprof report` reads the captures instead")
        return
    except Exception as exc:  # noqa: BLE001 - the job's exit status must still pass through
        say(f"warning: node summary not written ({type(exc).__name__}: {exc}); `commprof report` "
            "reads the captures instead")
        return
    if w.path is not None:
        say(f"node summary: {w.files} capture(s) reduced in {w.seconds:.1f} s into "
            f"{w.path.relative_to(run_dir)} ({w.bytes / 1e6:.1f} MB)")


SUMMARY_MAX_BYTES = 64 << 20  # larger captures: leave the analysis to `commprof report`


def _one_line_summary(run_dir: Path) -> str:
    """The report's verdict, for runs small enough to analyse in a moment."""
    size = sum(p.stat().st_size for p in layout.capture_paths(run_dir))
    if size > SUMMARY_MAX_BYTES:
        return f"captured {size / 1e6:.0f} MB"
    from commprof.cli.report import build_document
    try:
        return build_document(str(run_dir), warmup=2)["verdict"]
    except Exception as exc:  # noqa: BLE001 - the job's exit status must still pass through
        return f"summary unavailable ({type(exc).__name__}: {exc}); try `commprof report`"


def _add_loss_to_manifest(run_dir: Path, manifest: dict, manifest_file: str, say) -> None:
    """``manifest["loss"]``: each step's loss (mean over ranks), for runs small enough to read."""
    size = sum(p.stat().st_size for p in layout.capture_paths(run_dir))
    if size > SUMMARY_MAX_BYTES:
        return
    try:
        from commprof.analysis.host.load import open_run
        from commprof.analysis.host.training import loss_curve
        src = open_run(run_dir)
        curve = loss_curve([(rd.rank, rd.losses) for rd in src.iter_ranks()])
    except (CommprofError, OSError, ValueError) as exc:
        say(f"warning: loss not added to the manifest ({type(exc).__name__}: {exc})")
        return
    if curve is None:
        return
    manifest["loss"] = {"steps": curve["steps"], "values": [round(v, 7) for v in curve["values"]],
                        "final": curve["final"], "ranks": curve["ranks"]}
    try:
        rundir.write_manifest(run_dir, manifest, manifest_file)
    except OSError as exc:
        say(f"warning: could not add the loss to {run_dir / manifest_file}: {exc.strerror or exc}")


def _shell_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _fix_environment(fix: str | None, fix_warmup: int, max_steps: int | None) -> dict:
    """The workers' settings for ``--fix`` / ``--max-steps`` (checked here, before anything runs)."""
    from commprof.capture.config import ENV_FIX_WARMUP, ENV_FIXES, ENV_MAX_STEPS
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
