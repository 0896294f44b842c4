"""The collective hooks with the C++ kernel (``kernel.cpp``) on the ``c10d::`` operators.

Everything but the per-call kernel stays the Python path's (:class:`CollectiveHooks`): the
operator specs (argument positions from the schemas), group registration and group frames (the
kernel calls :meth:`CollectiveHooks._group` under the GIL once per new process group), the
``funcol.wait_tensor`` wrapper, the inference-mode fallback (``Work.wait`` and the
``wait_tensor`` kernel are the module's own, in C: :meth:`NativeHooks._patch_work_wait`).
Shared with the kernel: record ids (``rec.next_id`` is the kernel's counter), per-group sequence
numbers and the in-backward and in-wrapper flags (properties over the kernel's).  Once the
capture file exists its record region is the kernel's (``rec.region_native``: the Python hooks
append through it too), and the kernel appends each COLL, DONE and ``wait_tensor`` WAIT record
at once, as the Python path does.  Before that, its records wait in C++ buffers that the region
takes over when it opens (or, where no region could be made, that the flusher moves into
``rec.coll`` / ``rec.done`` / ``rec.wait``: :meth:`NativeHooks.drain`, a ``rec.before_flush``
hook, which also adds the kernel's own measured time to ``rec.self_ns``).
"""
from __future__ import annotations

import os

from commprof.capture.collectives import CollectiveHooks, OpSpec
from commprof.capture.torch_objects import checked_blocking_api_codes
from commprof.format import schema


def spec_tuple(spec: OpSpec) -> tuple:
    """What the C++ kernel needs of an :class:`OpSpec` (the order of ``install`` in kernel.cpp)."""
    nrets = len(spec.op._schema.returns)
    work = -2 if spec.work_index is None else spec.work_index
    single_arg = spec.inputs[0] if spec.single_code is not None and spec.inputs else -1
    return (spec.c10d_name, spec.op_code, -1 if spec.single_code is None else spec.single_code,
            single_arg, spec.p2p, len(spec.op._schema.arguments), spec.pg, list(spec.inputs),
            list(spec.outputs), -1 if spec.peer is None else spec.peer, work, nrets)


def follow_enabled(rec, native) -> None:
    """Make ``rec.enabled`` switch the kernel too: whoever turns recording off (the clock probes'
    barriers, close, a full disk, a forked child) turns the kernel off with it."""
    base = type(rec)

    def get(self):
        return self.__dict__["enabled"]

    def put(self, value):
        self.__dict__["enabled"] = value
        native.set_enabled(bool(value))

    cls = type(f"Native{base.__name__}", (base,), {"enabled": property(get, put), "__slots__": ()})
    rec.__class__ = cls
    native.set_enabled(bool(rec.__dict__.get("enabled", True)))


class NativeHooks(CollectiveHooks):
    """:class:`CollectiveHooks` whose ``c10d::`` kernels are the native module's."""

    path = "native"

    def __init__(self, recorder, torch_module, native, clock_skew_ns: int = 0):
        self.native = native  # before the base class sets in_backward (a property here)
        super().__init__(recorder, torch_module)
        self.clock_skew_ns = clock_skew_ns
        self._taken = (0, 0, 0)  # kernel totals already added: records, self ns, dropped

    @property
    def in_backward(self) -> int:
        return self.native.get_in_backward()

    @in_backward.setter
    def in_backward(self, value: int) -> None:
        self.native.set_in_backward(value)

    @property
    def in_py_wait(self) -> int:
        return self.native.get_in_py_wait()

    @in_py_wait.setter
    def in_py_wait(self, value: int) -> None:
        self.native.set_in_py_wait(value)

    def _install_wait_tensor_kernel(self, op, after) -> None:
        self.native.install_wait_tensor(schema.WAIT_TENSOR)

    def _install_kernels(self, specs: list, after) -> None:
        native, rec, torch = self.native, self.rec, self.torch
        native.set_constants(schema.FLAG_HAS_FUTURE, schema.FLAG_IN_BACKWARD, schema.FLAG_FAILED,
                             schema.DONE_FUTURE, schema.KIND_COLL, schema.KIND_DONE,
                             schema.KIND_WAIT, schema.DONE_WAIT)
        sizes = tuple(schema.struct_for(schema.FIXED_KINDS[k]).size
                      for k in (schema.KIND_COLL, schema.KIND_DONE, schema.KIND_WAIT))
        if tuple(native.record_sizes()) != sizes:
            raise RuntimeError(f"native records are {tuple(native.record_sizes())} bytes, the "
                               f"schema's {sizes}: rebuild (commprof build-native)")
        native.set_dtype_codes([(torch.empty(0, dtype=dt), code) for dt, code in self.dtype_codes.items()])
        native.set_clock_skew(self.clock_skew_ns)
        rec.next_id = native.next_id  # one id sequence for the kernel's and Python's records
        native.install([spec_tuple(s) for s in specs], self._register_group)
        follow_enabled(rec, native)
        rec.before_flush.insert(0, self.drain)
        rec.region_native = native  # the capture file's region is then the kernel's (SIGKILL-safe)
        os.register_at_fork(after_in_child=lambda: native.set_enabled(False))

    def _patch_work_wait(self) -> None:
        """``Work.wait`` is the native module's (``make_wait``): one C call per wait that times
        it, tells torch.distributed's own waits from the user's by the caller's code object, and
        appends the records; what it cannot append (before the region opens, or a Work no kernel
        recorded) it hands to :meth:`_wait_fallback`."""
        Work = self.Work
        codes = list(checked_blocking_api_codes(self.torch, self.rec))
        Work.wait = self.native.make_wait(Work.wait, codes, self._wait_fallback, schema.WAIT_SYNC_API,
                                          schema.WAIT_WORK)

    def _wait_fallback(self, work, t0: int, t1: int, source: int, rid, has_future: bool) -> None:
        try:
            self._waited(work, t0, t1, source, rid, has_future)
        except Exception as exc:  # noqa: BLE001 - recorded, never raised into the job
            self.rec.degrade("work.wait", exc)

    def _register_group(self, pg) -> int:
        """Called by the kernel (GIL held) for a process group it has not seen."""
        self.rec.wants_file = True
        return self._group(pg)

    def _next_seq(self, gid: int, p2p: bool) -> int:
        return self.native.next_seq(gid, p2p)

    def drain(self) -> None:
        """Move the kernel's records into the recorder (the flusher, before it writes)."""
        rec = self.rec
        _, records, self_ns, dropped, errors = self.native.drain(rec.coll.append, rec.done.append,
                                                                 rec.wait.append)
        seen_records, seen_ns, seen_dropped = self._taken
        rec.records += records - seen_records
        rec.self_ns += self_ns - seen_ns
        self._taken = (records, self_ns, dropped)
        # the kernel's clocked windows that were not per-call work (cumulative in C++)
        rec.self_split = dict(zip(("once_calls", "once_ns", "stalled_calls", "stalled_ns"),
                                  self.native.cost_split()))
        for where, count, message in errors:
            for _ in range(count):
                rec.degrade(where, RuntimeError(message))
        for _ in range(dropped - seen_dropped):
            rec.degrade("native.buffer_full", RuntimeError("records dropped: flush too slow"))
        err = self.native.region_error()
        if err:  # a kernel append failed (a full disk): as a Python append's failure
            rec._region_failed(OSError(err, os.strerror(err)))

    def release_all(self) -> None:
        super().release_all()
        self.native.release_all()

    def uninstall(self) -> None:
        """Unregister the kernels (tests); the Python wrappers stay."""
        self.native.uninstall()
