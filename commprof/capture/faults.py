"""Injected failures, for testing that commprof never breaks the job (``COMMPROF_FAULT``).

``COMMPROF_FAULT`` (read into :attr:`commprof.capture.config.CaptureConfig.faults`) is a
comma-separated list of sites:

* ``collective`` — recording every collective call raises (inside commprof's hook);
* ``steps`` — the optimizer-step hook raises;
* ``writer`` — every capture write after the first fails with ENOSPC (a disk that fills up);
* ``gpu_windows`` — starting a GPU window raises (after 3 failures the windows stop).

Nothing is wrapped when the variable is unset: zero cost in normal runs.
"""
from __future__ import annotations

import errno

from commprof.capture.config import ENV_FAULT

SITES = ("collective", "steps", "writer", "gpu_windows")


def install(agent, sites: frozenset[str]) -> None:
    """Wrap the ``sites`` of ``agent`` so that they fail."""
    unknown = sites - set(SITES)
    if unknown:
        agent.rec.degrade("faults", ValueError(f"unknown {ENV_FAULT} site(s): {sorted(unknown)}"))
    if "collective" in sites and agent.collectives is not None:
        def failing_record(*args, **kwargs):
            raise RuntimeError("injected fault: collective")
        agent.collectives.record = failing_record
    if "steps" in sites and agent.steps is not None:
        agent.steps.optimizers = _FailingDict()
    if "writer" in sites:
        _fail_writes_after_first(agent.rec)
    if "gpu_windows" in sites and agent.gpu_windows is not None:
        def failing_profiler():
            raise RuntimeError("injected fault: gpu_windows")
        agent.gpu_windows.factory = failing_profiler


class _FailingDict(dict):
    def get(self, *args, **kwargs):
        raise RuntimeError("injected fault: steps")


def _fail_writes_after_first(rec) -> None:
    from commprof.format import writer as writer_mod
    original = writer_mod.CaptureWriter.write
    calls = {"n": 0}

    def write(self, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "injected fault: No space left on device")
        original(self, data)

    writer_mod.CaptureWriter.write = write
