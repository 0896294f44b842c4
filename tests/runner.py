"""Run jobs under ``commprof run`` for integration tests (real processes, real gloo)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: Path | str, *args: str, nproc: int = 2) -> list[str]:
    """A torchrun command line (via ``python -m torch.distributed.run``) on a free port."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
            "--master-addr=127.0.0.1", f"--master-port={free_port()}", "--max-restarts=0",
            str(script), *args]


# Commands that only read files and print (and may write the files they are told to): the
# harness runs them in this process, through the CLI's own entry point, unless a test asks for a
# process.  A fresh interpreter costs ~0.8 s of CPU importing pandas and commprof, about as much
# as the command's own work; the suite calls these a few hundred times.
IN_PROCESS = frozenset({"report", "gate", "compare", "whatif"})


def commprof(*args: str, env: dict | None = None, timeout: float = 180,
             cwd: str | os.PathLike | None = None,
             process: bool = False) -> subprocess.CompletedProcess:
    """``commprof ARGS`` with captured output: ``python -m commprof ARGS`` in a subprocess, or,
    for a command of :data:`IN_PROCESS` run in this working directory (no ``cwd``) and not asked
    for as a ``process``, :func:`in_process`.  ``env`` is added to this process's environment (a
    value of None removes the variable).  ``timeout`` bounds a subprocess only: pytest-timeout
    bounds the test."""
    if not process and cwd is None and args and args[0] in IN_PROCESS:
        return in_process(*args, env=env)
    return subprocess.run([sys.executable, "-m", "commprof", *args], capture_output=True,
                          text=True, timeout=timeout, env=_environ(env), cwd=cwd)


def _environ(env: dict | None) -> dict:
    """This process's environment with ``env`` applied (:func:`_apply`), for a subprocess."""
    full = dict(os.environ)
    _apply(full, env or {})
    return full


def _apply(environ, values: dict) -> None:
    """Set each variable of ``values`` in ``environ``; a value of None removes it."""
    for name, value in values.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value


def in_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``commprof ARGS`` run by :func:`commprof.cli.main` (the only place errors become exit
    codes, as in ``python -m commprof``) with stdout and stderr captured as text and ``env``
    applied to ``os.environ`` for the call: what a subprocess would give.  Stdout and stderr
    are not terminals here, as in a subprocess with pipes, so the commands choose the same
    width, colour and progress output."""
    import contextlib
    import io

    from commprof.cli import main
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env or {}}
    _apply(os.environ, env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # as the interpreter turns it into a status
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        _apply(os.environ, saved)
    return subprocess.CompletedProcess(["commprof", *args], code, out.getvalue(), err.getvalue())


def side_by_side(calls: dict, workers: int = 2) -> dict:
    """``{name: call()}`` for every ``call`` of ``calls``, ``workers`` at a time (threads; each
    call starts its own processes): for a fixture's runs that are checked for what they record,
    never for how long they take.  A 2-rank job leaves much of a 2-core machine idle (torchrun's
    start-up before its workers, the workers' exit, ``commprof run``'s closing), which a second
    job beside it uses.  The first call that raised raises here, after every call has ended."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
    return {name: future.result() for name, future in futures.items()}


def report_json(run_dir: Path, *extra: str) -> dict:
    proc = commprof("report", str(run_dir), "--format", "json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def cpu_seconds() -> tuple[float, float]:
    """(machine-wide busy CPU seconds incl. steal, this process's + reaped children's): their
    difference over an interval is what *other* processes used (tests that compare wall times of
    separate runs skip when it is large, instead of judging a loaded machine)."""
    import resource
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    own = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return busy, own


# Above a quarter of a core used by other processes, wall times of separate runs are not
# comparable on a 2-core machine (tests that compare them re-run or skip, saying how busy).
MAX_FOREIGN_CORES = 0.25


class ForeignLoad:
    """The CPU that processes other than this one and its descendants used over a with-block, in
    cores: ``.cores`` over the whole block, ``.peak`` over its busiest ``window_s`` (a burst that
    slows a few seconds of one run is diluted in the mean by the run's start-up and exit).

    A thread samples /proc/stat's busy time and the CPU time of this process tree (live
    descendants from psutil, their reaped children included) every ``period_s``."""

    cores: float = 0.0
    peak: float = 0.0

    def __init__(self, window_s: float = 2.0, period_s: float = 0.25):
        self.window_s, self.period_s = window_s, period_s

    def _own(self) -> float | None:
        """This process tree's CPU seconds; None when a process started or was reaped while it was
        read (a reaped child's time moves into its parent's, so a read across a reap can miss or
        double it)."""
        import psutil
        before = {c.pid: c for c in psutil.Process().children(recursive=True)}
        total = sum(cpu_seconds()[1:])
        for child in before.values():
            try:
                t = child.cpu_times()
            except psutil.Error:
                return None
            total += t.user + t.system + t.children_user + t.children_system
        after = {c.pid for c in psutil.Process().children(recursive=True)}
        return total if after == set(before) else None

    def _sample(self) -> None:
        import time
        t, busy, own = time.monotonic(), cpu_seconds()[0], self._own()
        if own is not None:
            self._samples.append((t, busy, own))

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def __enter__(self) -> "ForeignLoad":
        import threading
        self._samples: list[tuple[float, float, float]] = []
        while not self._samples:
            self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        n = len(self._samples)
        while len(self._samples) == n:
            self._sample()
        (t0, b0, o0), (t1, b1, o1) = self._samples[0], self._samples[-1]
        self.cores = max(0.0, (b1 - b0) - (o1 - o0)) / max(t1 - t0, 1e-9)
        self.peak = self.cores
        j = 0
        for i, (ti, bi, oi) in enumerate(self._samples):  # each window ending at a sample
            while self._samples[j + 1][0] <= ti - self.window_s:
                j += 1
            tj, bj, oj = self._samples[j]
            if ti - tj >= self.window_s:
                self.peak = max(self.peak, max(0.0, (bi - bj) - (oi - oj)) / (ti - tj))


def on_a_quiet_machine(run, attempts: int = 3, limit: float = MAX_FOREIGN_CORES):
    """``run(attempt)`` until one attempt ran while other processes used at most ``limit`` cores in
    its busiest 2 s, at most ``attempts`` times: (the last attempt's result, the peak loads of all
    attempts).  Each run is judged by its own load, at its peak: a burst that slows a few seconds
    of one run is neither averaged away over several runs nor diluted by a run's start-up."""
    loads = []
    for attempt in range(attempts):
        with ForeignLoad() as load:
            result = run(attempt)
        loads.append(load.peak)
        if load.peak <= limit:
            break
    return result, loads


def ended(pid: int) -> bool:
    """No such process, or a zombie (only its parent's wait is left)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until_ended(pids, timeout_s: float, since: float | None = None) -> list[int]:
    """Poll until every pid in ``pids`` has :func:`ended`, at most ``timeout_s`` after ``since``
    (a ``time.monotonic()``; default now); the pids still alive then (empty: all ended)."""
    import time
    start = time.monotonic() if since is None else since
    while not all(ended(p) for p in pids) and time.monotonic() - start < timeout_s:
        time.sleep(0.05)
    return [p for p in pids if not ended(p)]


def kill_if_alive(pid: int) -> None:
    """SIGKILL ``pid`` unless it has :func:`ended` (a test's clean-up of the processes it left)."""
    import signal
    if not ended(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
