"""Every process of the job, to end all of them: ``--kill-on-hang`` and a signal to commprof.

A signal to the launcher's process group is not enough: torchrun starts its workers with
``start_new_session=True``, so ``killpg`` of torchrun's group misses them, and a worker whose
launcher was SIGKILLed lives on, orphaned, holding its devices until the process group's timeout.
:class:`JobTree` remembers the leader's descendants (psutil ``children(recursive=True)``, taken
while the leader lives: an orphan is no longer anyone's child) as ``psutil.Process`` objects,
which check the process's start time before signalling, so a reused pid is never hit.
"""
from __future__ import annotations

import os
import signal
import time

KILL_GRACE_S = 10.0  # SIGTERM first; SIGKILL to whatever is still alive this long after


class JobTree:
    """The job's leader (its process group) and every descendant seen."""

    def __init__(self, leader_pid: int):
        self.leader_pid = leader_pid
        self.known: dict = {}  # pid -> psutil.Process
        self.term_at: float | None = None  # monotonic time of the SIGTERM, once sent
        self.killed = 0  # processes that needed SIGKILL
        self.killed_pids: list[int] = []  # which: every one alive when the grace ended

    def refresh(self) -> None:
        """Remember the leader and its descendants now alive (workers in other sessions too)."""
        import psutil
        try:
            leader = psutil.Process(self.leader_pid)
            procs = [leader] + leader.children(recursive=True)
        except psutil.Error:
            return
        for proc in procs:
            self.known.setdefault(proc.pid, proc)

    def alive(self) -> list:
        """The known processes still running (zombies are dead: only their parent's wait is left)."""
        import psutil
        out = []
        for proc in self.known.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
            except psutil.Error:
                continue
        return out

    def signal(self, sig: int) -> int:
        """``sig`` to the leader's process group and to every known process alive; how many."""
        import psutil
        self.refresh()
        leader = self.known.get(self.leader_pid)
        try:
            # Only while the leader's pid is still its own (alive, or a zombie not yet reaped): a
            # reaped leader's pid, and so the group id, may be another process's by now.
            if leader is not None and leader.is_running():
                os.killpg(self.leader_pid, sig)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
        sent = 0
        for proc in self.alive():
            try:
                proc.send_signal(sig)
                sent += 1
            except psutil.Error:
                continue
        return sent

    def terminate(self) -> None:
        """SIGTERM to the whole tree, once (the grace counts from here)."""
        if self.term_at is None:
            self.term_at = time.monotonic()
            self.signal(signal.SIGTERM)

    def kill_if_due(self, grace_s: float = KILL_GRACE_S) -> int:
        """SIGKILL to what still lives ``grace_s`` after the SIGTERM; how many got it (once)."""
        if self.term_at is None or self.killed or time.monotonic() - self.term_at < grace_s:
            return 0
        left = self.alive()
        if left:
            # Counted before the signal, not by what it reached: a launcher that dies of the
            # group's SIGKILL first is no less a process that outlived the SIGTERM.
            self.killed_pids = sorted(proc.pid for proc in left)
            self.killed = len(left)
            self.signal(signal.SIGKILL)
        return self.killed

    def killed_line(self) -> str:
        """The one line that says what needed SIGKILL, naming the pids."""
        pids = ", ".join(str(pid) for pid in self.killed_pids)
        return (f"{self.killed} process(es) of the job outlived SIGTERM: sent SIGKILL "
                f"(pid {pids})")

    def finish(self, grace_s: float = KILL_GRACE_S, poll_s: float = 0.1) -> int:
        """After the leader exited: wait for the rest of the tree until the grace ends, SIGKILL
        what is left and wait (briefly) for it to go.  Returns how many needed SIGKILL."""
        if self.term_at is None:
            return 0
        while self.alive() and time.monotonic() - self.term_at < grace_s:
            time.sleep(poll_s)
        killed = self.kill_if_due(grace_s)
        deadline = time.monotonic() + 5.0
        while killed and self.alive() and time.monotonic() < deadline:
            time.sleep(poll_s)
        return killed
