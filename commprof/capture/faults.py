"""Injected failures, for testing that commprof never breaks the job (``COMMPROF_FAULT``).

``COMMPROF_FAULT`` (read into :attr:`commprof.capture.config.CaptureConfig.faults`) is a
comma-separated list of sites:

* ``collective`` — recording every collective call raises (inside commprof's hook);
* ``steps`` — the optimizer-step hook raises;
* ``writer`` — a disk that fills up: the capture's region grows by one page at a time and every
  growth after the first fails with ENOSPC (in the v2 stream fallback: every write after the
  first);
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
        native = getattr(agent.collectives, "native", None)
        if native is not None:  # the C++ kernel records without calling record()
            native.set_fault(True)
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
    import mmap

    from commprof.format import region as region_mod
    from commprof.format import writer as writer_mod
    rec.chunk_bytes = mmap.ALLOCATIONGRANULARITY
    for cls, name in ((writer_mod.CaptureWriter, "write"), (region_mod.RegionWriter, "_grow")):
        _fail_after_first(cls, name)
    if rec.region_native is not None:  # the native kernel's region grows in C++
        rec.region_native.region_fail_after(1, errno.ENOSPC)


def _fail_after_first(cls, name: str) -> None:
    original = getattr(cls, name)
    calls = {"n": 0}

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "injected fault: No space left on device")
        return original(self, *args)

    setattr(cls, name, failing)
