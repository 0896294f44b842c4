"""``commprof run --live`` and ``--prometheus*``: checking the flags, starting and ending the outputs.

The flags are checked (and the HTTP port bound) before anything is created, so a bad value is
one ``commprof: error:`` line and a non-zero exit before the job starts.  While the job runs,
nothing here may change it: every failure becomes one warning and the output stops.
"""
from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from commprof.errors import UsageError


@dataclass
class LiveOptions:
    live: bool = False
    interval_s: float = 30.0
    steps: int = 20
    prometheus: str | None = None
    textfile: str | None = None
    linger_s: float = 0.0

    @property
    def wanted(self) -> bool:
        return bool(self.live or self.prometheus or self.textfile)


def job_label() -> str | None:
    """The scheduler's job id (SLURM_JOB_ID, else TORCHELASTIC_RUN_ID), or None."""
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID") or None


class LiveSetup:
    """The checked options, the bound exporter, and later the monitor."""

    def __init__(self, opts: LiveOptions):
        if opts.interval_s <= 0:
            raise UsageError(f"--live-interval {opts.interval_s:g}: must be > 0 seconds")
        if opts.steps < 1:
            raise UsageError(f"--live-steps {opts.steps}: must be >= 1")
        if opts.linger_s < 0:
            raise UsageError(f"--prometheus-linger {opts.linger_s:g}: must be >= 0 seconds")
        if opts.linger_s and not opts.prometheus:
            raise UsageError("--prometheus-linger needs --prometheus [HOST:]PORT")
        self.opts = opts
        self.metrics = None
        self.listen = None
        self.textfile: Path | None = None
        self.monitor = None
        if not (opts.prometheus or opts.textfile):
            return
        try:
            import prometheus_client  # noqa: F401
        except ImportError as exc:
            raise UsageError("--prometheus needs the prometheus_client package "
                             "(python -m pip install prometheus_client)") from exc
        from commprof.live.exporter import Metrics, parse_listen, textfile_path
        if opts.prometheus:
            self.listen = parse_listen(opts.prometheus)
        job = job_label() or "commprof"
        if opts.textfile:
            self.textfile = textfile_path(opts.textfile, job if job_label() else f"pid{os.getpid()}")
        self.metrics = Metrics(job)
        if self.listen:
            self.metrics.serve(*self.listen, opts.prometheus)

    def start(self, run_dir: Path, say, sampler_path, hang) -> None:
        """The monitor of ``run_dir`` (ticked by the supervisor)."""
        from commprof.live.monitor import LiveMonitor
        if self.metrics is not None and job_label() is None:
            self.metrics.job = run_dir.name
            if self.textfile is not None:
                from commprof.live.exporter import textfile_path
                self.textfile = textfile_path(str(self.textfile.parent), run_dir.name)
        self.monitor = LiveMonitor(run_dir, say, live=self.opts.live, interval_s=self.opts.interval_s,
                                   window_steps=self.opts.steps, metrics=self.metrics,
                                   textfile=self.textfile, sampler_path=sampler_path, hang=hang)
        if self.listen:
            host, port = self.listen
            shown = f"[{host}]" if ":" in host else host
            say(f"metrics: http://{shown}:{port}/metrics")
        if self.textfile:
            say(f"metrics: textfile {self.textfile}")

    def tick(self, pgid) -> None:
        """The monitor's tick; on failure the panel is taken down before the error goes up."""
        try:
            self.monitor.tick(pgid)
        except BaseException:
            self.monitor.stop_panel()
            raise

    def finish(self, say) -> None:
        """After the job: the final snapshot (counters = the report's), then maybe linger."""
        if self.monitor is None:
            return
        try:
            self.monitor.finish()
        except Exception as exc:  # noqa: BLE001 - the job's exit status still passes through
            self.monitor.stop_panel()
            say(f"warning: live view / metrics: final update failed: {type(exc).__name__}: {exc}")
        if self.metrics is not None and self.listen and self.opts.linger_s > 0:
            say(f"metrics: final values served for {self.opts.linger_s:g} s more "
                "(--prometheus-linger; Ctrl-C or SIGTERM ends it sooner)")
            _linger(self.opts.linger_s)

    def close_panel(self) -> None:
        if self.monitor is not None:
            self.monitor.stop_panel()

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.stop_panel()
        if self.metrics is not None:
            self.metrics.close()


def _linger(seconds: float) -> None:
    """Wait ``seconds``, or until SIGINT / SIGTERM."""
    done = threading.Event()
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, lambda *_: done.set())
    try:
        done.wait(seconds)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
