"""One ``commprof run`` on one node, from its run directory to its closing lines.

:class:`RunSession` holds the run's lifecycle: it creates (or joins) the run directory, writes
the bootstrap and the manifest, starts the hang watch, the probe, the node sampler and the live
outputs, runs the job under :mod:`~commprof.launch.supervisor` (signals pass through), finishes
the manifest whatever happened (exit status, signal, hang episodes), reduces this node's
captures into a node summary, adds the loss curve to the manifest of a ``--fix`` run, and prints
the closing lines.  ``commprof run`` (:mod:`commprof.cli.run`) only parses and checks options
into :class:`RunOptions`; what a run needs from layers ``launch`` may not import (the probe, the
node sampler, the live outputs, the report's verdict line) it hands over as :class:`RunHooks`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from commprof.errors import CommprofError, RunDirError, UsageError
from commprof.format import layout
from commprof.format.text import shell_command
from commprof.launch import rundir, supervisor

HANG_EXIT_STATUS = 124  # --kill-on-hang stopped the job (as timeout(1)); the job's own: manifest
SUMMARY_MAX_BYTES = 64 << 20  # larger captures: leave the analysis to `commprof report`


@dataclass
class RunOptions:
    """What ``commprof run`` was asked to do, checked (:func:`commprof.cli.run.run_command`)."""

    command: list[str]
    env: dict = field(default_factory=dict)  # the workers' settings (COMMPROF_*, Flight Recorder)
    out: str | None = None  # --out: the run directory (default: a new one under ./commprof-runs)
    join: bool = False  # --join: several `commprof run` share the directory given by --out
    share_group: bool = False  # --share-group: the directory is readable by the user's group
    quiet: bool = False  # --quiet: no closing verdict line (``hooks.say`` prints nothing either)
    hang_timeout: float | None = None  # --hang-timeout: the hang watch's threshold, s
    kill_on_hang: bool = False  # --kill-on-hang: stop a hung job (exit status HANG_EXIT_STATUS)
    fixes: list[str] | None = None  # --fix: the fixes' specs (manifest["fixes"]; loss in the manifest)
    node_summary: bool = True  # reduce this node's captures into RUN/summaries/ at the end


@dataclass
class RunHooks:
    """What a run does through other layers (given by the CLI; None: not wanted)."""

    say: Callable[[str], None]  # one progress line ("commprof: ..." on stderr), or nothing
    summary_line: Callable[[Path], str]  # the report's verdict of a finished run directory
    probe: Callable[[Path], None] | None = None  # `commprof probe` into the run directory, first
    start_sampler: Callable[[Path], object] | None = None  # the node sampler (None if it cannot start)
    live: object | None = None  # the live view / metrics (commprof.cli.run_live.LiveSetup)


def combine_ticks(ticks: list[tuple[str, object]], say):
    """One supervisor tick calling each ``(name, tick)`` in turn; one that raises is reported
    once and dropped, the others (and the job) go on."""
    active = list(ticks)

    def tick(pgid):
        for name, fn in list(active):
            try:
                fn(pgid)
            except Exception as exc:  # noqa: BLE001 - instrumentation never takes the job down
                active.remove((name, fn))
                say(f"warning: {name} stopped: {type(exc).__name__}: {exc}")
    return tick


class RunSession:
    """One run: :meth:`run` returns (the job's return code, or HANG_EXIT_STATUS; the run directory)."""

    def __init__(self, options: RunOptions, hooks: RunHooks):
        self.options, self.hooks, self.say = options, hooks, hooks.say
        self.run_dir: Path | None = None
        self.manifest: dict = {}
        self.manifest_file = layout.MANIFEST
        self.watch = None  # the hang watch (--hang-timeout)
        self.sampler = None
        self.returncode: int | None = None

    def run(self) -> tuple[int | None, Path]:
        env = self._create()
        t0 = time.time_ns()
        ticks = self._start_watchers()
        try:
            self._supervise(env, ticks)
        finally:
            self._stop(t0)
        if self.hooks.live is not None:
            self.hooks.live.finish(self.say)  # after the workers and the sampler closed their files
            self.hooks.live.close()
        self._close()
        if self.watch is not None and self.watch.stopped and self.returncode is not None:
            return HANG_EXIT_STATUS, self.run_dir
        return self.returncode, self.run_dir

    def _create(self) -> dict:
        """The run directory, its bootstrap and manifest; returns the job's environment."""
        o, out = self.options, self.options.out
        if out:
            out = rundir.expand_out(out)
            if ":" in os.path.abspath(out):  # the bootstrap goes on PYTHONPATH, which ':' separates
                raise UsageError(f"--out {out}: a run directory path cannot contain ':' (it goes on "
                                 "PYTHONPATH, where ':' separates entries)")
        if o.join:
            if not out:
                raise UsageError("--join needs --out DIR (the run directory every node shares)")
            self.run_dir, owner = rundir.join_run_dir(out, o.share_group)
        else:
            self.run_dir, owner = rundir.new_run_dir(out, o.command, o.share_group), True
        self.manifest_file = rundir.manifest_name(owner)
        try:
            boot = supervisor.prepare_bootstrap(self.run_dir)
        except OSError as exc:  # e.g. the run directory was replaced since it was made
            raise RunDirError(f"{self.run_dir}: cannot prepare the bootstrap: "
                              f"{exc.strerror or exc}") from exc
        env = supervisor.job_environment(self.run_dir, boot, extra=o.env)
        self.manifest = rundir.start_manifest(o.command, env)
        if o.fixes is not None:
            self.manifest["fixes"] = list(o.fixes)
        try:
            rundir.write_manifest(self.run_dir, self.manifest, self.manifest_file)
        except OSError as exc:
            raise RunDirError(f"{self.run_dir / self.manifest_file}: cannot write: "
                              f"{exc.strerror or exc}") from exc
        for warning in supervisor.startup_warnings(o.command, env):
            self.say(f"warning: {warning}")
        self.say(f"capturing into {self.run_dir}")
        return env

    def _start_watchers(self) -> list:
        """The hang watch, the probe, the node sampler and the live outputs; their ticks."""
        o, say, run_dir = self.options, self.say, self.run_dir
        if o.hang_timeout is not None:
            from commprof.launch.hangwatch import HangWatch
            self.watch = HangWatch(run_dir, o.hang_timeout, o.kill_on_hang, say)
            say(f"hang watch: reporting collectives pending longer than {o.hang_timeout:g} s")
        if self.hooks.probe is not None:
            self.hooks.probe(run_dir)
        if self.hooks.start_sampler is not None:
            self.sampler = self.hooks.start_sampler(run_dir)
        ticks = [("hang watch", self.watch.tick)] if self.watch is not None else []
        live, sampler, watch = self.hooks.live, self.sampler, self.watch
        if live is not None:
            live.start(run_dir, say, lambda: Path(sampler.path) if sampler is not None else None,
                       lambda: watch.reported if watch is not None else None)
            ticks.append(("live view / metrics", live.tick))
        return ticks

    def _supervise(self, env: dict, ticks: list) -> None:
        """The job, to its end (its return code in ``self.returncode``)."""
        job = {}
        if self.sampler is not None:
            for src in self.sampler.sources:
                if src.name == "tcp":
                    src.job_pids = lambda: supervisor.process_tree(job.get("pid"))
        watch = self.watch
        self.returncode = supervisor.run_job(
            self.options.command, env, tick=combine_ticks(ticks, self.say) if ticks else None,
            tick_interval=min(watch.interval_s, 1.0) if watch else 1.0,
            started=lambda pid: job.update(pid=pid), say=self.say)
        if watch is not None:
            watch.finish()  # a stopped job's workers in their own sessions end too

    def _stop(self, t0: int) -> None:
        """Whatever happened: the outputs and the sampler stopped, the manifest finished."""
        manifest, watch, returncode = self.manifest, self.watch, self.returncode
        if self.hooks.live is not None:
            self.hooks.live.close_panel()
        if self.sampler is not None:
            self.sampler.stop()
        if watch is not None and watch.episodes:
            manifest["hang"] = {"episodes": watch.episodes,
                                "killed": (watch.reported or {}).get("killed")}
        manifest.update(status="finished" if returncode is not None else "launcher-failed",
                        end_wall_ns=time.time_ns(), duration_s=(time.time_ns() - t0) / 1e9)
        if returncode is not None:
            manifest["exit_code"] = returncode if returncode >= 0 else 128 - returncode
            manifest["signal"] = -returncode if returncode < 0 else None
        try:
            rundir.write_manifest(self.run_dir, manifest, self.manifest_file)
        except OSError as exc:  # the job's exit status still passes through
            self.say(f"warning: could not finish {self.run_dir / self.manifest_file}: "
                     f"{exc.strerror or exc}")

    def _close(self) -> None:
        """After the job: the node summary, a --fix run's loss, the closing lines.  Each capture
        is read once: the loss is taken from the node summary's reductions where it has them."""
        o, say, run_dir = self.options, self.say, self.run_dir
        captured = rundir.count_captures(run_dir)
        reduced, summary_lines = ({}, [])
        if captured and o.node_summary:
            reduced, summary_lines = _write_node_summary(run_dir)
        if captured and o.fixes is not None:  # commprof try: the loss curve beside the fix
            self._add_loss_to_manifest(reduced)
        if captured == 0:
            say("warning: no process was captured (did the job import torch? see "
                "docs/troubleshooting.md)")
        say(f"{captured} process capture(s) written to {run_dir}")
        for line in summary_lines:
            say(line)
        if captured and not o.quiet:
            say(_hang_line(self.watch) or self.hooks.summary_line(run_dir))
        say(f"next: {shell_command(['commprof', 'report', _shell_path(run_dir)])}")

    def _add_loss_to_manifest(self, reduced: dict) -> None:
        """``manifest["loss"]``: each step's loss (mean over ranks), for runs small enough to read;
        ``reduced``: capture path -> its reduction (the node summary's), else the capture is read."""
        run_dir, say = self.run_dir, self.say
        if sum(p.stat().st_size for p in layout.capture_paths(run_dir)) > SUMMARY_MAX_BYTES:
            return
        try:
            from commprof.analysis.host.load import open_run, read_rank
            from commprof.analysis.host.training import loss_curve
            per_rank = []
            for path in open_run(run_dir).paths:
                if path in reduced:
                    per_rank.append((reduced[path].rank, reduced[path].part.losses))
                else:
                    rd = read_rank(path)
                    per_rank.append((rd.rank, rd.losses))
            curve = loss_curve(per_rank)
        except (CommprofError, OSError, ValueError) as exc:
            say(f"warning: loss not added to the manifest ({type(exc).__name__}: {exc})")
            return
        if curve is None:
            return
        self.manifest["loss"] = {"steps": curve["steps"], "values": [round(v, 7) for v in curve["values"]],
                                 "final": curve["final"], "ranks": curve["ranks"]}
        try:
            rundir.write_manifest(run_dir, self.manifest, self.manifest_file)
        except OSError as exc:
            say(f"warning: could not add the loss to {run_dir / self.manifest_file}: "
                f"{exc.strerror or exc}")


def _write_node_summary(run_dir: Path) -> tuple[dict, list[str]]:
    """This node's captures reduced into RUN/summaries/ (analysis/scale/node_summary.py): (capture path
    -> its reduction, the lines to print); a failure or Ctrl-C is a warning line: the report then
    reads the captures."""
    from commprof.analysis.scale.node_summary import write_node_summary
    try:
        w = write_node_summary(run_dir)
    except KeyboardInterrupt:
        return {}, ["node summary skipped (interrupted): `commprof report` reads the captures instead"]
    except Exception as exc:  # noqa: BLE001 - the job's exit status must still pass through
        return {}, [f"warning: node summary not written ({type(exc).__name__}: {exc}); `commprof "
                    "report` reads the captures instead"]
    if w.path is None:
        return {}, []
    return dict(zip(w.paths, w.results)), [
        f"node summary: {w.files} capture(s) reduced in {w.seconds:.1f} s into "
        f"{w.path.relative_to(run_dir)} ({w.bytes / 1e6:.1f} MB)"]


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


def _shell_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
