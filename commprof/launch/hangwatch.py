"""``commprof run --hang-timeout S``: watch the captures as they grow and report a hang.

The supervisor calls :meth:`HangWatch.tick` between waits on the job.  Each tick tails the new
frames of every capture file (workers flush every ``--flush-interval`` seconds), feeds them to
:class:`commprof.analysis.cross.hang.HangTracker`, and when a collective has been pending longer than
``S`` writes ``hang.json`` into the run directory, prints a summary once, and — only with
``--kill-on-hang`` — stops the job: SIGTERM to every process of its tree (launch/jobtree.py:
workers in their own sessions too; each closes its capture on the way out), SIGKILL to what is
left after a grace period, also once the launcher has exited (:meth:`HangWatch.finish`).  Runs in
the supervisor process: nothing is added to the workers.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Callable

from commprof.analysis.cross.hang import HangTracker
from commprof.analysis.cross.hang_text import hang_lines
from commprof.format import layout
from commprof.format.reader import CaptureTail
from commprof.launch.jobtree import KILL_GRACE_S, JobTree
from commprof.launch.rundir import write_json_atomic
from commprof.launch.stepwatch import StepWatch


class HangWatch:
    """Tails a run directory's captures and reports collectives stuck longer than ``timeout_s``."""

    def __init__(self, run_dir: Path, timeout_s: float, kill: bool,
                 say: Callable[[str], None], clock: Callable[[], int] = time.perf_counter_ns):
        self.run_dir = Path(run_dir)
        self.timeout_s = timeout_s
        self.kill = kill
        self.say = say
        self.clock = clock
        self.tracker = HangTracker()
        self.steps = StepWatch(timeout_s)  # steps that stop with nothing pending (stepwatch.py)
        self.tails: dict[Path, CaptureTail] = {}
        self.rank_of: dict[Path, int] = {}
        self.reported: dict | None = None  # the diagnosis last written
        self.episodes = 0
        self.tree: JobTree | None = None  # the job's processes, once --kill-on-hang stopped it
        self.host = socket.gethostname()

    @property
    def interval_s(self) -> float:
        """How often to tick: often enough to report within ~10% of the timeout."""
        return max(0.2, min(1.0, self.timeout_s / 10))

    def tick(self, job_pgid: int | None = None) -> None:
        """Read what the workers wrote since the last tick; report (and maybe stop) a hang."""
        self._discover()
        for path, tail in self.tails.items():
            arrays, objects = tail.poll()
            if path not in self.rank_of:
                if tail.header is None:
                    continue
                self._start_rank(path, tail.header)
            if self.rank_of.get(path) is not None and (objects or any(len(a) for a in arrays.values())):
                self.tracker.feed(self.rank_of[path], arrays, objects)
                self.steps.feed(self.rank_of[path], arrays.get("mark"), arrays.get("coll"))
        if self.tree is not None:  # the report stands as written when the job was stopped
            self._stop(job_pgid)
            return
        now = self.clock()
        diagnosis = self.tracker.diagnose(now, self.timeout_s)
        if diagnosis is None:
            if self.reported is not None:
                self.say("the stuck collectives finished (completed or failed); the job goes on")
                self.reported["resolved_wall_ns"] = time.time_ns()
                self._write(self.reported)
                self.reported = None
            else:  # has the job stopped stepping (a new stall only while it runs)?
                line = self.steps.check(now, job_running=job_pgid is not None)
                if line is not None:
                    self.say(line)
            return
        if self.reported is not None:
            _keep_evidence(self.reported, diagnosis)
        if self.reported is None or _shape(self.reported) != _shape(diagnosis):
            first = self.reported is None
            if first:
                self.episodes += 1
            elif "killed" in self.reported:
                diagnosis["killed"] = self.reported["killed"]
            diagnosis["episode"] = self.episodes
            diagnosis["detected_wall_ns"] = (time.time_ns() if first
                                             else self.reported["detected_wall_ns"])
            self._write(diagnosis)
            self.reported = diagnosis
            if first:
                for line in hang_lines(diagnosis):
                    self.say(line)
                self.say(f"hang report: {layout.hang_path(self.run_dir)}" + (
                    "" if self.kill else " (the job is left running; --kill-on-hang stops it)"))
        if self.kill and job_pgid is not None:
            self._stop(job_pgid)

    def _discover(self) -> None:
        for path in layout.capture_paths(self.run_dir):
            if path not in self.tails:
                self.tails[path] = CaptureTail(path)

    def _start_rank(self, path: Path, header: dict) -> None:
        rank = int(header.get("rank", -1))
        # A newer attempt (torchrun restart) or process of the same rank replaces the older one.
        for other, r in list(self.rank_of.items()):
            if r == rank:
                self.rank_of[other] = None
        self.rank_of[path] = rank
        self.tracker.add_rank(rank, header, self._clock_offset(header))
        self.steps.add_rank(rank, self._clock_offset(header))

    def _clock_offset(self, header: dict) -> int:
        """Watcher clock minus the rank's clock (0 on this host: one CLOCK_MONOTONIC)."""
        anchor = header.get("clock") or {}
        if header.get("host") == self.host or "wall_ns" not in anchor:
            return 0
        return (self.clock() - time.time_ns()) - (int(anchor["mono_ns"]) - int(anchor["wall_ns"]))

    def _write(self, diagnosis: dict) -> None:
        path = layout.hang_path(self.run_dir)
        try:
            write_json_atomic(path, diagnosis)
        except OSError as exc:
            self.say(f"warning: cannot write {path}: {exc.strerror or exc}")

    @property
    def stopped(self) -> bool:
        """Whether ``--kill-on-hang`` stopped the job."""
        return self.tree is not None

    def _stop(self, pgid: int | None) -> None:
        """SIGTERM to the job's whole tree, once; SIGKILL to what is left after the grace."""
        if pgid is None:
            return
        if self.tree is None:
            self.tree = JobTree(pgid)
            self.tree.refresh()
            self.say(f"--kill-on-hang: sending SIGTERM to the job's {len(self.tree.alive())} "
                     f"process(es) (SIGKILL in {KILL_GRACE_S:.0f} s to any left)")
            self.reported["killed"] = "SIGTERM"
            self._write(self.reported)
            self.tree.terminate()
        elif self.tree.kill_if_due():
            self._killed()

    def finish(self) -> None:
        """After the job's launcher exited: the rest of a stopped job's tree ends too (a worker
        in its own session outlives its launcher's process group); else one last read, so a
        hang that resolved just before the job ended is not left standing."""
        if self.tree is None:
            try:
                self.tick(None)
            except Exception as exc:  # noqa: BLE001 - the job has ended; its status passes through
                self.say(f"warning: hang watch's last read failed: {type(exc).__name__}: {exc}")
        elif not self.tree.killed and self.tree.finish():
            self._killed()

    def _killed(self) -> None:
        self.say(self.tree.killed_line())
        self.reported["killed"] = "SIGKILL"
        self._write(self.reported)


def _keep_evidence(before: dict, now: dict) -> None:
    """Within one hang episode, a rank that had not arrived stays named: when it arrives at last
    (its record can reach the disk before the others' completions do), it moves to
    ``arrived_late`` instead of vanishing from the report."""
    prev = {_op_key(b): b for b in before.get("blocked", [])}
    for b in now.get("blocked", []):
        old = prev.get(_op_key(b))
        if old is None:
            continue
        missing = set(old.get("never_arrived", [])) | set(old.get("arrived_late", []))
        late = sorted(missing - set(b["never_arrived"]))
        if late:
            b["arrived_late"] = late
            b["never_arrived"] = sorted(set(b["never_arrived"]) | (missing - set(late)))


def _op_key(blocked: dict) -> tuple:
    op = blocked["op"]
    return (op.get("group"), op.get("op"), op.get("seq"), op.get("peer"), op.get("p2p_ordinal"))


def _shape(diagnosis: dict) -> list:
    """What identifies a hang (ages aside): which collectives are blocked on whom."""
    return [(b["op"].get("group"), b["op"].get("seq"), b["op"].get("p2p_ordinal"),
             b["waiting_ranks"], b["never_arrived"]) for b in diagnosis["blocked"]]
