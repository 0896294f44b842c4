"""launch/jobtree.py and the supervisor: every process of the job ends, including those in their
own sessions (torchrun's workers) that a signal to the launcher's group misses.  No torch."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from commprof.launch.jobtree import JobTree

from runner import ended, kill_if_alive

# A launcher that starts a worker in its own session (as torchrun does), then sleeps.  The worker
# writes its pid (to argv[1]) once its signal disposition is set: the test signals only then.
LAUNCHER = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1]], start_new_session=True)
time.sleep(3600)
"""
WORKER = """
import os, signal, sys, time
if globals().get("DEAF"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1] + ".tmp", "w") as fh:
    fh.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(3600)
"""
DEAF_WORKER = "DEAF = True" + WORKER
PLAIN_WORKER = WORKER


def _worker_pid(pid_file: Path, proc) -> int:
    deadline = time.monotonic() + 30
    while not pid_file.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    return int(pid_file.read_text())


def test_a_worker_in_its_own_session_that_ignores_sigterm_is_killed(tmp_path):
    pid_file = tmp_path / "worker.pid"
    leader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LAUNCHER), str(pid_file),
                               DEAF_WORKER], process_group=0)
    worker = _worker_pid(pid_file, leader)
    try:
        tree = JobTree(leader.pid)
        tree.refresh()
        assert worker in tree.known
        tree.terminate()
        leader.wait(timeout=10)  # the leader dies of SIGTERM; the deaf worker, orphaned, lives
        assert not ended(worker)
        assert tree.finish(grace_s=0.5) == 1
        assert ended(worker)
    finally:
        kill_if_alive(worker)


def test_sigterm_to_commprof_run_ends_workers_the_launcher_leaves_behind(tmp_path):
    """The launcher dies of the forwarded SIGTERM without ending its worker (in its own session,
    so the group's SIGTERM missed it): commprof ends it once the launcher is gone."""
    pid_file = tmp_path / "worker.pid"
    proc = subprocess.Popen([sys.executable, "-m", "commprof", "run", "--out", str(tmp_path / "run"),
                             "--sample-hz", "0", "--", sys.executable, "-c",
                             textwrap.dedent(LAUNCHER), str(pid_file), PLAIN_WORKER],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = _worker_pid(pid_file, proc)
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGTERM, err  # the launcher's own death, passed through
        assert ended(worker), "the worker outlived commprof run"
        assert "1 process(es) of the job outlived its launcher: sending SIGTERM" in err
    finally:
        kill_if_alive(worker)
