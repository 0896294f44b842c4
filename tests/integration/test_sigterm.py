"""capture/sigterm.py: SIGTERM closes the capture and ends the process at once, wherever its main
thread is blocked; a forked child's SIGTERM stays its own.  Real processes, no torch."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The main thread blocks in C, where no Python handler can run: it locks a pthread mutex it already
# holds (glibc's default mutex deadlocks; signals do not interrupt it), the GIL released, like a
# wait inside gloo.
BLOCKED = """
import ctypes, os, sys
from commprof.capture.sigterm import Terminator
closed = sys.argv[1]
def close():
    with open(closed, "w") as fh:
        fh.write("closed")
t = Terminator(close, lambda where, exc: print("degraded", where, exc, flush=True))
assert t.install() and t.watching
libc = ctypes.CDLL(None)
mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER
assert libc.pthread_mutex_lock(mutex) == 0
print("blocked", flush=True)
libc.pthread_mutex_lock(mutex)
print("never", flush=True)
"""


def _python(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_sigterm_ends_a_process_blocked_in_c_after_closing(tmp_path):
    closed = tmp_path / "closed"
    proc = _python(BLOCKED, str(closed))
    assert proc.stdout.readline().strip() == "blocked"
    time.sleep(0.2)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("SIGTERM did not end a process blocked in C (30 s)")
    assert time.monotonic() - start < 5, "SIGTERM waited for the main thread"
    assert proc.returncode == -signal.SIGTERM, err  # died of SIGTERM, as without a handler
    assert closed.read_text() == "closed"
    assert "degraded" not in out


FORK = """
import os, signal, sys, threading, time
from commprof.capture.sigterm import Terminator
closed = []
t = Terminator(lambda: closed.append(os.getpid()), lambda where, exc: None)
assert t.install()
forked = []
def fork():
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    forked.append(child)
if sys.argv[1] == "thread":  # a child forked by another thread than the main one
    thread = threading.Thread(target=fork)
    thread.start()
    thread.join()
else:
    fork()
child = forked[0]
time.sleep(0.3)
os.kill(child, signal.SIGTERM)
_, status = os.waitpid(child, 0)
time.sleep(0.5)  # a byte in the parent's wakeup pipe would have ended the parent by now
print("child", os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
print("parent closed", bool(closed), flush=True)
"""


@pytest.mark.parametrize("where", ["main", "thread"])
def test_a_forked_childs_sigterm_does_not_reach_the_parent(where):
    proc = _python(FORK, where)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.split("\n")[:2] == [f"child {int(signal.SIGTERM)}", "parent closed False"]


JOBS_HANDLER = """
import signal
from commprof.capture.sigterm import Terminator
def mine(signum, frame):
    pass
signal.signal(signal.SIGTERM, mine)
t = Terminator(lambda: None, lambda where, exc: None)
print(t.install(), signal.getsignal(signal.SIGTERM) is mine, t.watching)
"""


def test_the_jobs_own_handler_is_left_alone():
    out, err = _python(JOBS_HANDLER).communicate(timeout=30)
    assert out.split() == ["False", "True", "False"], err


TAKEN_FD = """
import os, signal
from commprof.capture.sigterm import Terminator
r, w = os.pipe()
os.set_blocking(w, False)
signal.set_wakeup_fd(w)
seen = []
t = Terminator(lambda: None, lambda where, exc: seen.append(where))
print(t.install(), t.watching, seen, signal.set_wakeup_fd(-1) == w)
"""


def test_a_wakeup_fd_in_use_is_left_in_place_and_said():
    out, err = _python(TAKEN_FD).communicate(timeout=30)
    assert out.split() == ["True", "False", "['sigterm.watch']", "True"], err
