"""``drain()`` of the native kernel (capture/native) is re-entrant: a drain that runs inside
another drain's call into Python -- SIGTERM's close interrupting the exit flush, on the same
thread -- hands over only the records that arrived after the outer drain began, and the outer
one hands over its own, each record exactly once.

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


def _drain_into(native, rows: dict, on_first_coll=None):
    """native.drain into ``rows`` ({"coll", "done", "wait"}: lists); ``on_first_coll`` runs
    inside the drain, while it hands over its first COLL record."""
    def coll(row):
        rows["coll"].append(row)
        if on_first_coll is not None and len(rows["coll"]) == 1:
            on_first_coll()

    return native.drain(coll, rows["done"].append, rows["wait"].append)


def _new_rows() -> dict:
    return {"coll": [], "done": [], "wait": []}


def _ids(rows: dict, kind: str) -> list[int]:
    return [row[0] for row in rows[kind]]


def test_a_drain_inside_a_drain_hands_over_each_record_once(fresh):
    native, torch, dist = fresh
    n_before, n_during = 5, 3
    for _ in range(n_before):
        _collective(torch, dist)
    outer, inner = _new_rows(), _new_rows()

    def nested():
        for _ in range(n_during):  # records that arrive after the outer drain began
            _collective(torch, dist)
        _drain_into(native, inner)

    _drain_into(native, outer, on_first_coll=nested)
    after = _new_rows()
    _drain_into(native, after)
    # the outer drain took what was buffered when it began, the inner one what came after, and
    # nothing is left or handed over twice
    assert len(outer["coll"]) == n_before
    assert len(inner["coll"]) == n_during
    assert after["coll"] == []
    all_ids = _ids(outer, "coll") + _ids(inner, "coll")
    assert len(set(all_ids)) == len(all_ids) == n_before + n_during
    assert min(_ids(inner, "coll")) > max(_ids(outer, "coll"))
    # one DONE per collective (gloo's futures complete them), none twice, none before its COLL
    done_ids = _ids(outer, "done") + _ids(inner, "done") + _ids(after, "done")
    assert sorted(done_ids) == sorted(all_ids)
    assert set(_ids(outer, "done")) <= set(_ids(outer, "coll"))


def test_sigterm_inside_a_flush_drains_once_on_the_native_path(fresh):
    """SIGTERM's Python handler runs in the main thread between two bytecodes: here inside the
    drain's call into Python, as when it interrupts the exit flush.  The handler drains (what
    the agent's close does through the flush) and the interrupted drain then goes on."""
    native, torch, dist = fresh
    n_before = 6
    for _ in range(n_before):
        _collective(torch, dist)
    outer, in_handler = _new_rows(), _new_rows()
    handled = []

    def on_sigterm(signum, frame):
        handled.append(signum)
        _drain_into(native, in_handler)

    def raise_sigterm():
        _collective(torch, dist)  # one record that arrives during the flush
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before this function returns

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        _drain_into(native, outer, on_first_coll=raise_sigterm)
    finally:
        signal.signal(signal.SIGTERM, previous)
    after = _new_rows()
    _drain_into(native, after)
    assert handled == [signal.SIGTERM]
    assert len(outer["coll"]) == n_before
    assert len(in_handler["coll"]) == 1
    assert after["coll"] == []
    all_ids = _ids(outer, "coll") + _ids(in_handler, "coll")
    assert len(set(all_ids)) == n_before + 1
    done_ids = _ids(outer, "done") + _ids(in_handler, "done") + _ids(after, "done")
    assert sorted(done_ids) == sorted(all_ids)
