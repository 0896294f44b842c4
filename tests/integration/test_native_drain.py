"""``drain()`` of the native kernel (capture/native/bindings.cpp) is re-entrant: a drain that
runs inside another drain's call into Python -- SIGTERM's close interrupting the exit flush, on
the same thread -- hands over what the interrupted drain had not handed over yet, then what
arrived since; the interrupted one then has nothing left.  Each record is handed over exactly
once, and a DONE never before its COLL, whether or not the interrupted drain resumes (after
SIGTERM's close the process dies inside the nested drain's caller).

It matters while the kernel buffers its records: before the capture file's mapped region opens,
or where the file cannot be mapped.  Checked in this process with the real kernel on a
one-rank gloo group (no region is opened, so every record is buffered).  Skipped where the
native module cannot be built (failed in CI: COMMPROF_TEST_REQUIRE_NATIVE=1).
"""
from __future__ import annotations

import os
import signal

import pytest

from test_capture_coverage import _NATIVE, require_native


class _Degrades:
    """The recorder's ``degrade`` for :func:`discover_specs` (an unknown operator is not this
    test's business, but it must not pass silently into the kernel either)."""

    def __init__(self):
        self.seen = []

    def degrade(self, where, exc):
        self.seen.append(where)


@pytest.fixture(scope="module")
def kernel():
    """(native module, torch, torch.distributed) with the C++ kernels on every c10d operator and
    a one-rank gloo group; recording is on, the region closed (records are buffered)."""
    require_native()
    import torch
    import torch.distributed as dist

    from commprof.capture import native as native_mod
    from commprof.capture.collectives import discover_specs
    from commprof.capture.native.hooks import spec_tuple
    from commprof.format import schema

    native = native_mod.load(_NATIVE["so"])
    assert not native.region_is_open()
    specs, _ = discover_specs(torch, _Degrades())
    native.set_constants(schema.FLAG_HAS_FUTURE, schema.FLAG_IN_BACKWARD, schema.FLAG_FAILED,
                         schema.DONE_FUTURE, schema.KIND_COLL, schema.KIND_DONE, schema.KIND_WAIT,
                         schema.DONE_WAIT)
    if dist.is_initialized():  # another test of this process left its group: not this test's
        pytest.skip("torch.distributed is already initialized in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    native.install([spec_tuple(s) for s in specs], lambda pg: 0)
    try:
        yield native, torch, dist
    finally:
        native.set_enabled(False)
        native.uninstall()
        native.release_all()
        native.drain(lambda r: None, lambda r: None, lambda r: None)
        dist.destroy_process_group()


def _collective(torch, dist) -> None:
    dist.all_reduce(torch.ones(4))


@pytest.fixture
def fresh(kernel):
    """The kernel with nothing buffered (what an earlier test left is drained away)."""
    native, torch, dist = kernel
    native.set_enabled(True)
    native.drain(lambda r: None, lambda r: None, lambda r: None)
    yield native, torch, dist
    native.set_enabled(False)


def _drain_into(native, rows: dict, log: list, on_first_coll=None):
    """native.drain into ``rows`` ({"coll", "done", "wait"}: lists); ``log`` gets (kind, id) of
    every record handed over by any drain, in order; ``on_first_coll`` runs inside this drain,
    while it hands over its first COLL record."""
    def sink(kind):
        def append(row):
            rows[kind].append(row)
            log.append((kind, row[0]))
            if kind == "coll" and on_first_coll is not None and len(rows["coll"]) == 1:
                on_first_coll()
        return append

    return native.drain(sink("coll"), sink("done"), sink("wait"))


def _new_rows() -> dict:
    return {"coll": [], "done": [], "wait": []}


def _ids(rows: dict, kind: str) -> list[int]:
    return [row[0] for row in rows[kind]]


def _each_once_done_after_coll(log: list, n_collectives: int) -> None:
    """Every collective's COLL and DONE handed over exactly once, the DONE after the COLL."""
    colls = [i for kind, i in log if kind == "coll"]
    dones = [i for kind, i in log if kind == "done"]
    assert len(colls) == len(set(colls)) == n_collectives
    assert sorted(dones) == sorted(colls)  # gloo's futures completed every one
    position = {(kind, i): k for k, (kind, i) in enumerate(log)}
    assert all(position[("done", i)] > position[("coll", i)] for i in colls)


def test_a_drain_inside_a_drain_hands_over_each_record_once(fresh):
    native, torch, dist = fresh
    n_before, n_during = 5, 3
    for _ in range(n_before):
        _collective(torch, dist)
    outer, inner, log = _new_rows(), _new_rows(), []

    def nested():
        for _ in range(n_during):  # records that arrive after the outer drain took its own
            _collective(torch, dist)
        _drain_into(native, inner, log)

    _drain_into(native, outer, log, on_first_coll=nested)
    after = _new_rows()
    _drain_into(native, after, log)
    # the outer drain was interrupted after its first COLL: the inner one handed over the
    # outer's other records first, then its own; nothing is left, nothing came twice
    assert len(outer["coll"]) == 1 and outer["done"] == []
    assert len(inner["coll"]) == n_before - 1 + n_during
    assert _ids(inner, "coll") == sorted(_ids(inner, "coll"))
    assert after == _new_rows()
    _each_once_done_after_coll(log, n_before + n_during)


def test_sigterm_inside_a_flush_drains_once_on_the_native_path(fresh):
    """SIGTERM's Python handler runs in the main thread between two bytecodes: here inside the
    drain's call into Python, as when it interrupts the exit flush.  The handler drains (what
    the agent's close does through the flush); the process would die there, so what the
    handler's drain handed over must be everything, and the interrupted drain must add nothing
    twice when it resumes."""
    native, torch, dist = fresh
    n_before = 6
    for _ in range(n_before):
        _collective(torch, dist)
    outer, in_handler, log = _new_rows(), _new_rows(), []
    handled, at_handler_end = [], []

    def on_sigterm(signum, frame):
        handled.append(signum)
        _drain_into(native, in_handler, log)
        at_handler_end.extend(log)  # a SIGTERM handler's close ends the process about here

    def raise_sigterm():
        _collective(torch, dist)  # one record that arrives during the flush
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before this function returns

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        _drain_into(native, outer, log, on_first_coll=raise_sigterm)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert handled == [signal.SIGTERM]
    # by the handler's end every record was handed over, once; the interrupted drain added none
    _each_once_done_after_coll(at_handler_end, n_before + 1)
    assert len(outer["coll"]) == 1 and outer["done"] == []
    after = _new_rows()
    _drain_into(native, after, log)
    assert after == _new_rows() and log == at_handler_end


_DIES_IN_FLUSH = r"""
import errno, os, signal, sys
import torch
import torch.distributed as dist
import commprof.capture.recorder as recorder
from commprof.capture import native as native_mod
from commprof.capture.native.hooks import NativeHooks


class NoSharedMaps:  # a file system without shared writable maps: the v2 stream is written
    def __init__(self, *args, **kwargs):
        raise OSError(errno.ENODEV, "no shared writable maps here")


recorder.RegionWriter = NoSharedMaps
so, run_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rec = recorder.Recorder(run_dir, lambda: ("rank00000.a0.p1.cpf", {"rank": 0}))
NativeHooks(rec, torch, native_mod.load(so)).install()
dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
for _ in range(n):  # buffered in the kernel (no region to append to) until the flush
    dist.all_reduce(torch.ones(4))


def on_sigterm(signum, frame):  # the agent's close, then death by SIGTERM
    rec.close("SIGTERM")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


signal.signal(signal.SIGTERM, on_sigterm)
append_done = rec.done.append


def done_then_sigterm(row):  # the kernel's drain hands the first DONE: SIGTERM arrives
    append_done(row)
    os.kill(os.getpid(), signal.SIGTERM)


rec.done.append = done_then_sigterm
rec.flush()
sys.exit("still alive after SIGTERM")
"""


def test_a_worker_killed_by_sigterm_inside_its_flush_keeps_each_record_once(tmp_path):
    """The whole native path in a process of its own, where the capture file cannot be mapped
    (the kernel buffers its records until each flush drains them): SIGTERM's close runs inside
    the flush's drain, and the process dies of SIGTERM there.  The capture has its trailer and
    each collective's COLL and DONE exactly once."""
    import subprocess
    import sys

    import numpy as np

    from commprof.format.reader import capture_paths, read_capture

    require_native()
    n = 7
    proc = subprocess.run([sys.executable, "-c", _DIES_IN_FLUSH, _NATIVE["so"], str(tmp_path), str(n)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    (path,) = capture_paths(tmp_path)
    cap = read_capture(path)
    assert cap.complete and cap.trailer["reason"] == "SIGTERM"
    coll, done = cap.arrays["coll"]["id"], cap.arrays["done"]["id"]
    assert sorted(coll.tolist()) == sorted(set(coll.tolist())) and len(coll) == n
    assert np.array_equal(np.sort(done), np.sort(coll))
