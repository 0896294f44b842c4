"""One GPU window's Kineto events -> compact GPU records (``schema.GPU_FIELDS``), on the capture's clock.

Kineto (torch 2.13) stamps its events in nanoseconds of the Unix epoch (``_KinetoEvent.start_ns``;
its JSON writes µs relative to ``baseTimeNanoseconds``); the capture's clock is
``time.perf_counter_ns`` (CLOCK_MONOTONIC).  :func:`clock_offset` reads the wall clock between two
reads of the capture's clock: offset = wall − mid-point, error = half the bracket.  A window takes
it when it opens and when it closes; records use the mean, and the window's JSON frame keeps both
(their difference is the wall clock's slew during the window) and a check of the result: how far
the CPU-side events of the window (the CUDA runtime calls, or the CPU ops of the test hook) fall
before the window opened or after it closed (0 when the clocks agree).

Only standard library; the events are duck-typed (``activity_type()``, ``name()``, ``start_ns()``,
``end_ns()``, ``correlation_id()``, ``device_index()``, ``device_resource_id()``), so tests feed
fakes.
"""
from __future__ import annotations

import bisect
import time

from commprof.format import schema

# Kineto's activity type names (libkineto ActivityType.cpp) -> GPU categories.
DEVICE_TYPES = {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}
LAUNCH_TYPES = {"cuda_runtime", "cuda_driver"}  # the CPU side of CUDA activity: launches
CPU_TYPES = {"cpu_op"}  # recorded only with the test hook (COMMPROF_GPU_ACTIVITY=cpu)


def clock_offset(clock) -> tuple[int, int]:
    """(wall − capture clock, error bound) in ns, from one bracketed read of the wall clock."""
    best = None
    for _ in range(3):  # the tightest of three brackets (a preemption widens one)
        m1 = clock()
        wall = time.time_ns()
        m2 = clock()
        if best is None or m2 - m1 < best[1]:
            best = (wall - (m1 + m2) // 2, m2 - m1)
    return best[0], (best[1] + 1) // 2


class Names:
    """The process's name table: each name gets a code once; new names are written as
    ``{"type": "gpu_names", "first": code of the first, "names": [...]}`` JSON frames."""

    def __init__(self):
        self.codes: dict[str, int] = {}
        self._new: list[str] = []

    def code(self, name: str) -> int:
        c = self.codes.get(name)
        if c is None:
            c = self.codes[name] = len(self.codes)
            self._new.append(name)
        return c

    def take_new(self) -> dict | None:
        """The JSON frame of the names added since the last call, or None."""
        if not self._new:
            return None
        new, self._new = self._new, []
        return {"type": "gpu_names", "first": len(self.codes) - len(new), "names": new}


def convert(events, window: int, first_step: int, step_ends: list[int], offset_ns: int,
            names: Names, cpu_ops: bool = False, t_open: int | None = None,
            t_close: int | None = None) -> tuple[list[tuple], dict]:
    """(GPU rows in ``schema.GPU_FIELDS`` order, stats) of one window.

    ``step_ends``: the capture-clock times of the step boundaries seen while the window was
    open (step ``first_step`` ends at the first); a record's step is the one in which it was
    launched (its start where no launch matched), as steps are (boundary k−1, boundary k].
    """
    launches: dict[int, int] = {}
    items = []
    other = 0
    cpu_first = cpu_last = None
    cpu_n = 0
    for ev in events:
        kind = ev.activity_type()
        if kind in LAUNCH_TYPES or (cpu_ops and kind in CPU_TYPES):
            start = ev.start_ns() - offset_ns
            cpu_first = start if cpu_first is None else min(cpu_first, start)
            cpu_last = start if cpu_last is None else max(cpu_last, start)
            cpu_n += 1
            if kind in LAUNCH_TYPES:
                launches[ev.correlation_id()] = start
                continue
        category = DEVICE_TYPES.get(kind) or ("cpu" if cpu_ops and kind in CPU_TYPES else None)
        if category is None:
            other += 1
            continue
        items.append((ev.start_ns() - offset_ns, ev.end_ns() - offset_ns, ev.correlation_id(),
                      ev.device_resource_id(), names.code(ev.name()), ev.device_index(),
                      schema.GPU_CATEGORY_INDEX[category]))
    rows = []
    matched = 0
    for start, end, corr, stream, name, device, category in items:
        launch = launches.get(corr, schema.NO_LAUNCH) if category != schema.GPU_CATEGORY_INDEX["cpu"] \
            else schema.NO_LAUNCH
        matched += launch != schema.NO_LAUNCH
        at = launch if launch != schema.NO_LAUNCH else start
        step = first_step + bisect.bisect_left(step_ends, at)
        rows.append((start, end, launch, corr, stream, name, window, step, device, category))
    stats = {"records": len(rows), "launches": len(launches), "launch_matched": matched,
             "other_events": other}
    if t_open is not None and t_close is not None and cpu_first is not None:
        stats["clock_check"] = {"cpu_events": cpu_n,
                                "before_open_ns": max(0, t_open - cpu_first),
                                "after_close_ns": max(0, cpu_last - t_close)}
    return rows, stats
