"""SIGTERM ends a worker as fast as without commprof, and its capture is closed on the way out.

CPython runs a Python signal handler only in the main thread, between bytecodes: a rank blocked
inside a collective (gloo's or NCCL's C++ wait, the GIL released) never gets there, so with a
Python handler alone a ``kill -TERM`` waited for the process group's timeout (minutes).  The
C-level handler CPython installs for a Python handler does run at once, and writes the signal's
number to the wakeup fd (:func:`signal.set_wakeup_fd`).  A daemon thread reads that fd: on SIGTERM
it closes the capture (the final flush and the trailer "SIGTERM") and raises SIGTERM again with
the default action, so the process dies of SIGTERM, as it would without commprof.  The Python
handler does the same when it runs first; a lock lets exactly one of them do it.

Where the wakeup fd is someone else's (already set when the agent starts, or replaced later, as
asyncio's ``add_signal_handler`` does), only the Python handler is left, and SIGTERM waits for the
main thread's return to Python (recorded as a degraded ``sigterm.watch``).  A forked child
(a DataLoader worker) drops the wakeup fd: its signals must not reach its parent's watcher.
Standard library only.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Callable


class Terminator:
    """SIGTERM's handler and its watcher thread for one worker process."""

    def __init__(self, close: Callable[[], None], degrade: Callable[[str, BaseException], None]):
        self.close = close  # closes the capture; called once, from the main thread or the watcher
        self.degrade = degrade
        self._once = threading.Lock()
        self._fds: tuple[int, int] | None = None  # (read, write) of the wakeup pipe, while ours

    def install(self) -> bool:
        """Take SIGTERM if its action is the default one (else the job's handler stays, alone).
        Must run in the main thread (``ValueError`` otherwise).  Returns whether it was taken."""
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self._start_watcher()
        except (ValueError, OSError) as exc:  # the Python handler alone: still correct, slower
            self.degrade("sigterm.watch", exc)
        os.register_at_fork(after_in_child=self._after_fork_in_child)
        return True

    @property
    def watching(self) -> bool:
        """Whether the watcher thread reads the wakeup fd (SIGTERM is then prompt anywhere)."""
        return self._fds is not None

    def _start_watcher(self) -> None:
        read_fd, write_fd = os.pipe()  # close-on-exec: exec'd children do not inherit them
        try:
            os.set_blocking(write_fd, False)  # set_wakeup_fd requires it
            previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
            if previous != -1:  # someone else's wakeup fd: leave it in place
                signal.set_wakeup_fd(previous)
                raise ValueError(f"the wakeup fd is already set ({previous})")
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        self._fds = (read_fd, write_fd)
        threading.Thread(target=self._watch, args=(read_fd,), name="commprof-sigterm",
                         daemon=True).start()

    def _watch(self, read_fd: int) -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:  # closed (after fork in a child): nothing left to watch
                return
            if not data:
                return
            if signal.SIGTERM in data and signal.getsignal(signal.SIGTERM) == self._on_signal:
                self._terminate(in_main_thread=False)

    def _on_signal(self, signum, frame) -> None:
        self._terminate(in_main_thread=True)

    def _terminate(self, in_main_thread: bool) -> None:
        """Close the capture, then die of SIGTERM (the first caller does; a second returns)."""
        if not self._once.acquire(blocking=False):
            return
        try:
            self.close()
        except Exception as exc:  # noqa: BLE001 - nothing may keep the process from dying
            self.degrade("sigterm.close", exc)
        _default_action(in_main_thread)
        os.kill(os.getpid(), signal.SIGTERM)  # die exactly as without commprof

    def _after_fork_in_child(self) -> None:
        """The child's signals must not reach the parent's watcher through the inherited pipe."""
        fds, self._fds = self._fds, None
        if fds is None:
            return
        read_fd, write_fd = fds
        try:
            current = signal.set_wakeup_fd(-1)
            if current != write_fd:  # not ours any more: leave it as found
                signal.set_wakeup_fd(current)
            os.close(write_fd)
        except (ValueError, OSError):  # cannot unset it here: the fd number becomes /dev/null,
            _to_dev_null(write_fd)  # so it neither reaches the parent nor lands in a reused fd
        try:
            os.close(read_fd)
        except OSError:
            pass


def _to_dev_null(fd: int) -> None:
    try:
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.dup2(null, fd, inheritable=False)
    except OSError:
        pass
    finally:
        os.close(null)


def _default_action(in_main_thread: bool) -> None:
    """SIGTERM's action back to the default.  ``signal.signal`` works only in the main thread;
    the watcher thread sets it through libc.  Without ctypes: exit with status 128 + 15."""
    if in_main_thread:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.signal.restype = ctypes.c_void_p
        libc.signal(int(signal.SIGTERM), None)  # SIG_DFL is the null handler
    except (ImportError, OSError, AttributeError):
        os._exit(128 + signal.SIGTERM)
