"""Runs the user's command with capture injected; passes its exit status and signals through.

The command runs in its own process group.  When commprof owns the terminal's foreground, that
group is made the foreground one, so Ctrl-C reaches the job exactly as it would without commprof.
Signals sent to commprof itself (SIGTERM from a scheduler, SIGINT from ``kill``) are forwarded to
the job's process group.  After SIGINT, SIGTERM or SIGHUP, once the job's launcher has exited, any
process of its tree still alive (a worker in its own session, which the launcher left behind) gets
SIGTERM, then SIGKILL after a grace (launch/jobtree.py).  A job killed by signal N makes commprof
die of signal N too.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import commprof
from commprof.errors import UsageError
from commprof.format import layout
from commprof.format.text import printable
from commprof.launch.jobtree import JobTree

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2)
ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # after these, no process may outlive the job
BOOTSTRAP_SRC = Path(commprof.__file__).parent / "_bootstrap" / layout.BOOTSTRAP_MODULE


def prepare_bootstrap(run_dir: Path) -> Path:
    """A private directory holding only ``sitecustomize.py`` and a link to this commprof package
    (:func:`commprof.launch.rundir.prepare_bootstrap`: written through the run directory's
    checked descriptor, atomically, safe for several ``commprof run --join`` at once)."""
    from commprof.launch import rundir
    return rundir.prepare_bootstrap(run_dir, BOOTSTRAP_SRC, Path(commprof.__file__).parent)


def job_environment(run_dir: Path, boot: Path, base: dict | None = None,
                    extra: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(boot)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["COMMPROF_RUN_DIR"] = str(run_dir)
    env.update(extra or {})
    return env


def startup_warnings(command: list[str], env: dict) -> list[str]:
    """Why capture may not reach some processes of ``command`` (``python -I``, ``-E``, ``-S``)."""
    out = []
    for i, arg in enumerate(command):
        if os.path.basename(arg).startswith("python"):
            for flag in command[i + 1:]:
                if not flag.startswith("-") or flag in ("-m", "-c"):
                    break
                if flag.startswith("--"):
                    continue
                for letter, why in (("I", "isolated mode ignores PYTHONPATH"),
                                    ("E", "-E ignores PYTHONPATH"),
                                    ("S", "-S skips site, so sitecustomize never runs")):
                    if letter in flag[1:]:
                        out.append(f"`{arg} {flag}`: {why}; that process will not be captured")
    return out


def check_command(command: list[str], env: dict | None = None) -> None:
    """Refuse an empty or unknown command before anything is created."""
    if not command:
        raise UsageError("no command given: use `commprof run [OPTIONS] -- COMMAND ...`")
    path = (env or os.environ).get("PATH")
    if shutil.which(command[0], path=path) is None and not os.path.exists(command[0]):
        raise UsageError(f"{command[0]}: command not found")


def run_job(command: list[str], env: dict, tick=None, tick_interval: float = 1.0,
            started=None, say=None) -> int:
    """Run ``command``; return its exit code, or ``-N`` if signal N killed it.

    ``tick(pgid)``, when given, is called every ``tick_interval`` seconds while the job runs (the
    hang watch); an exception from it is reported once and the ticks stop — the job goes on.
    ``started(pid)`` is called once the job's process exists.  ``say(msg)`` tells what commprof
    did to processes the job's launcher left behind after a forwarded SIGINT/SIGTERM/SIGHUP.
    """
    check_command(command, env)
    tty = _foreground_tty()
    proc = subprocess.Popen(command, env=env, process_group=0)
    if started is not None:
        started(proc.pid)
    if tty is not None:
        _set_foreground(tty, proc.pid)
    tree = JobTree(proc.pid)
    ending = []

    def forward(signum, frame):
        if signum in ENDING and proc.returncode is None:
            tree.refresh()  # the tree as it is now: once the launcher is gone, orphans are not its
            ending.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        returncode = _wait(proc, tick, tick_interval)
        if ending:
            _end_leftovers(tree, say)
        return returncode
    finally:
        if tty is not None:
            _set_foreground(tty, os.getpgrp())
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait(proc: subprocess.Popen, tick, tick_interval: float) -> int:
    while True:
        try:
            if tick is None:
                return proc.wait()
            try:
                return proc.wait(timeout=tick_interval)
            except subprocess.TimeoutExpired:
                pass
            try:
                tick(proc.pid)
            except Exception as exc:  # noqa: BLE001 - the watch never takes the job down
                print(printable(f"commprof: warning: hang watch stopped: {type(exc).__name__}: {exc}"),
                      file=sys.stderr)
                tick = None
        except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled by `forward`
            continue


def _end_leftovers(tree: JobTree, say) -> None:
    """The job was told to end and its launcher has: what of its tree still lives ends too."""
    left = tree.alive()
    if not left:
        return
    if say is not None:
        say(f"{len(left)} process(es) of the job outlived its launcher: sending SIGTERM "
            "(SIGKILL to any left after the grace)")
    tree.terminate()
    killed = tree.finish()
    if killed and say is not None:
        say(tree.killed_line())


def _foreground_tty() -> int | None:
    try:
        fd = sys.stdin.fileno()
        if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _set_foreground(fd: int, pgid: int) -> None:
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def die_like(returncode: int) -> int:
    """Exit status for commprof: the job's code, or re-raise the signal that killed it."""
    if returncode < 0:
        sig = -returncode
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL/SIGSTOP: always default
            pass
        os.kill(os.getpid(), sig)
        time.sleep(1)  # the signal is delivered before this returns
        return 128 + sig
    return returncode


def process_tree(pid: int | None) -> list[int]:
    """``pid`` and all its descendants (the job's processes), or [] before the job started."""
    if pid is None:
        return []
    import psutil
    try:
        root = psutil.Process(pid)
        return [pid] + [c.pid for c in root.children(recursive=True)]
    except psutil.Error:
        return []
