"""``commprof run --live`` / ``--prometheus``: the loop that ties the aggregator to its outputs.

:meth:`LiveMonitor.tick` is called by the supervisor between waits on the job (with the hang
watch's tick).  About once a second it polls the captures, takes a snapshot, redraws the panel
(a rich ``Live`` on stderr, when stderr is a terminal), hands the snapshot to the exporter and
rewrites the textfile; without a terminal it prints one ``commprof: live: ...`` line every
``interval_s``.  :meth:`LiveMonitor.finish` takes the last snapshot once the job has ended
(every capture closed), so the exported counters are the report's.  Nothing here may stop the
job: the caller turns an exception into one warning and stops calling.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from commprof.analysis.cross.hang_text import hang_lines
from commprof.format import reader
from commprof.live.aggregator import LiveAggregator
from commprof.live.panel import one_line, render

REFRESH_S = 1.0
# At most this share of one core for the refreshes: a refresh that took c CPU seconds is followed
# by the next no sooner than c / CPU_BUDGET seconds later (many ranks: slower refresh, same cost).
CPU_BUDGET = 0.10


class LiveMonitor:
    """Polls, snapshots and shows / exports a run while its job runs."""

    def __init__(self, run_dir: Path, say: Callable[[str], None], live: bool = False,
                 interval_s: float = 30.0, window_steps: int = 20, metrics=None,
                 textfile: Path | None = None, sampler_path: Callable[[], Path | None] = lambda: None,
                 hang: Callable[[], dict | None] = lambda: None, stream=None,
                 horizon_s: float = 10.0, clock=time.monotonic, cpu=time.process_time):
        self.run_dir = Path(run_dir)
        self.say = say
        self.live = live
        self.interval_s = interval_s
        self.window_steps = window_steps
        self.metrics = metrics
        self.textfile = textfile
        self.sampler_path = sampler_path
        self.hang = hang
        self.stream = stream if stream is not None else sys.stderr
        self.horizon_s = horizon_s
        self.clock, self.cpu = clock, cpu
        self.tty = bool(live and getattr(self.stream, "isatty", lambda: False)())
        self.agg: LiveAggregator | None = None
        self._live = None  # rich.live.Live
        self._last = -1e18
        self.refreshes = 0
        self.refresh_s = REFRESH_S  # grows when a refresh costs more than CPU_BUDGET of a core
        self._last_line = clock()
        self._cpu0, self._t0 = cpu(), clock()
        self._cpu_mark = (self._cpu0, self._t0)
        self.cpu_fraction: float | None = None
        self.snap: dict | None = None

    def _aggregator(self) -> LiveAggregator:
        if self.agg is None:  # created at the first tick: the probe (--probe) has run by then
            try:
                probe = reader.read_probe(self.run_dir)
            except Exception:  # noqa: BLE001 - a damaged probe only loses the comparison
                probe = None
            self.agg = LiveAggregator(self.run_dir, self.window_steps, self.horizon_s,
                                      self.sampler_path(), probe)
            self.agg.started = self._t0  # elapsed time counts from the job's start
        return self.agg

    def _hang_text(self) -> list[str]:
        diag = self.hang()
        return hang_lines(diag)[:2] if diag else []

    def tick(self, job_pgid: int | None = None) -> None:
        """Refresh if a second has passed since the last refresh."""
        now = self.clock()
        if now - self._last < self.refresh_s:
            return
        self._last = now
        c0 = time.thread_time()
        self.update(running=True)
        self.refreshes += 1
        self.refresh_s = max(REFRESH_S, (time.thread_time() - c0) / CPU_BUDGET)
        hang = self._hang_text()
        if self.tty and (self._live is not None or self.snap["ranks_seen"]):
            self._draw(hang)  # from the first rank on: the launcher's own start-up lines are out
        elif self.live and now - self._last_line >= self.interval_s:
            self._last_line = now
            self.say(one_line(self.snap, hang))

    def update(self, running: bool) -> dict:
        """Poll, snapshot, export; returns the snapshot."""
        agg = self._aggregator()
        agg.poll()
        snap = agg.snapshot()
        now, cpu = self.clock(), self.cpu()
        t_prev = self._cpu_mark
        if now > t_prev[1]:
            self.cpu_fraction = (cpu - t_prev[0]) / (now - t_prev[1])
        self._cpu_mark = (cpu, now)
        snap["launcher_cpu_s"] = cpu - self._cpu0
        snap["launcher_cpu_fraction"] = self.cpu_fraction
        snap["refresh_s"] = self.refresh_s
        self.snap = snap
        if self.metrics is not None:
            self.metrics.update(snap, hang=bool(self.hang()), running=running)
            if self.textfile is not None:
                self._write_textfile()
        return snap

    def _write_textfile(self) -> None:
        from commprof.live.exporter import write_atomic
        try:
            write_atomic(self.textfile, self.metrics.text())
        except OSError as exc:
            self.say(f"warning: --prometheus-textfile: cannot write {self.textfile}: "
                     f"{exc.strerror or exc}; textfile output stops")
            self.textfile = None

    def _draw(self, hang: list[str]) -> None:
        from rich.console import Console
        from rich.live import Live
        panel = render(self.snap, str(self.run_dir), hang)
        if self._live is None:
            console = Console(file=self.stream, force_terminal=True)
            self._live = Live(panel, console=console, auto_refresh=False, transient=True,
                              redirect_stdout=False, redirect_stderr=True)
            self._live.start(refresh=True)
        else:
            self._live.update(panel, refresh=True)

    def stop_panel(self) -> None:
        """Take the panel off the terminal (the closing lines follow)."""
        if self._live is not None:
            try:
                self._live.stop()
            finally:
                self._live = None

    def finish(self) -> None:
        """The last snapshot, once the job has ended; the panel gives way to one summary line."""
        self.stop_panel()
        snap = self.update(running=False)
        if self.live:
            self.say("final " + one_line(snap, self._hang_text()))
