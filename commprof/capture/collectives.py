"""Interposition on every ``c10d::`` operator: what each rank sends, on which group, and when.

Mechanism (see docs/architecture.md): a Python kernel registered with ``torch.library`` on the
``ADInplaceOrView`` dispatch key for each ``c10d::`` collective/P2P operator.  Every
ProcessGroup method — called from Python, from DDP's C++ Reducer, FSDP, functional collectives or
DTensor — dispatches through these operators, so one hook sees them all exactly once.  The kernel
re-dispatches below its key (no deadlock: the GIL is not held inside gloo), records issue/return
times, and subscribes to completion through the Work's future, or through ``Work.wait`` for the
Works that have no future (gloo send/recv and reduce-scatter).
"""
from __future__ import annotations

import sys
import threading
import warnings
import weakref

from commprof.capture.recorder import Recorder
from commprof.capture.torch_objects import checked_blocking_api_codes
from commprof.capture.torch_objects import safe as _safe, tensor_sizes as _tensor_sizes
from commprof.format import comm_ops, schema

# c10d operator -> canonical op name (the one op vocabulary: commprof/format/comm_ops.py)
C10D_OPS = comm_ops.C10D_OPS
# c10d operators that move no data between ranks (not captured, and not a gap)
NOT_COMMUNICATION = frozenset({"check_for_nan"})
# operators a newer torch added (2.14: gather_into_tensor_): an older torch lacking them is no gap
ADDED_LATER = frozenset({"gather_into_tensor_"})
_INPUT_ARGS = {"input_tensors", "input_tensor", "input", "inputs", "input_list"}
_OUTPUT_ARGS = {"output_tensors", "output_tensor", "output", "outputs", "output_lists"}
_PEER_ARGS = {"dst", "src", "root_rank"}
_PENDING_SOFT_CAP = 64  # beyond this, finished future-less Works are released
_PENDING_HARD_CAP = 1024  # beyond this, the oldest Works are forgotten (their wait goes unmatched)


class OpSpec:
    """Where one operator's schema keeps its inputs, outputs, group, peer and Work."""

    def __init__(self, c10d_name: str, op, name: str | None = None):
        self.c10d_name = c10d_name
        self.name = name or C10D_OPS[c10d_name]
        self.op_code = schema.OP_INDEX[self.name]
        # A coalesced call on one tensor is the plain operation (functional collectives issue
        # single-tensor all_gather / reduce_scatter through the coalesced operators).
        base = self.name.removesuffix("_coalesced")
        self.single_code = schema.OP_INDEX[base] if base != self.name else None
        self.op = op
        names = [a.name for a in op._schema.arguments]
        self.pg = names.index("process_group")
        inplace = names.index("tensors") if "tensors" in names else None
        self.inputs = [i for i, n in enumerate(names) if n in _INPUT_ARGS]
        self.outputs = [i for i, n in enumerate(names) if n in _OUTPUT_ARGS]
        if inplace is not None:
            if self.name != "recv":
                self.inputs.append(inplace)
            if self.name != "send":
                self.outputs.append(inplace)
        self.p2p = self.name in ("send", "recv")
        peers = [i for i, n in enumerate(names) if n in _PEER_ARGS]
        self.peer = peers[0] if peers else None
        rets = op._schema.returns
        works = [i for i, r in enumerate(rets) if "Work" in str(r.type)]
        self.work_index = None if not works else (-1 if len(rets) == 1 else works[0])


def discover_specs(torch, rec, known: dict | None = None) -> tuple[list, list[str]]:
    """The :class:`OpSpec` of each ``known`` c10d operator (default :data:`C10D_OPS`) this torch
    has, and the names it lacks (an older torch).  A schema commprof cannot read degrades that
    operator (``op.NAME``); operators this torch has and commprof does not know degrade as
    ``ops.unknown`` (a newer torch: their calls pass uncaptured).  Never raises."""
    known = C10D_OPS if known is None else known
    available = {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names()
                 if n.startswith("c10d::")}
    specs, missing = [], [name for name in known if name not in available and name not in ADDED_LATER]
    for c10d_name in (name for name in known if name in available):
        try:
            specs.append(OpSpec(c10d_name, getattr(torch.ops.c10d, c10d_name).default, known[c10d_name]))
        except Exception as exc:  # noqa: BLE001 - a schema this torch changed: that op degrades
            rec.degrade(f"op.{c10d_name}", RuntimeError(
                f"c10d::{c10d_name} has a schema commprof does not know ({type(exc).__name__}: "
                f"{exc}); its calls are not captured"))
    unknown = sorted(available - set(known) - NOT_COMMUNICATION)
    if unknown:
        rec.degrade("ops.unknown", RuntimeError(
            f"c10d operators this torch has and commprof does not capture: {', '.join(unknown)}"))
    return specs, missing


class CollectiveHooks:
    """Registers the kernels and turns each call into records in a :class:`Recorder`."""

    path = "python"  # which kernel runs (the capture_path event); capture/native/hooks.py: "native"

    def __init__(self, recorder: Recorder, torch_module):
        self.rec = recorder
        self.torch = torch_module
        c10d = torch_module._C._distributed_c10d
        self.Work = c10d.Work
        self.ProcessGroup = c10d.ProcessGroup
        self.groups: dict[int, tuple[int, object]] = {}  # id(pybind pg) -> (group id, weakref)
        self.group_names: dict[str, int] = {}  # group_name -> group id
        self.next_gid = 0
        self.seq: dict[tuple[int, bool], int] = {}  # (group id, is p2p) -> next sequence number
        self.pending: dict[int, tuple] = {}  # id(Work) -> (record id, Work, has a future)
        self.completed: list[int] = []  # ids of pending Works whose future completed
        self.no_future: set[tuple[int, int]] = set()  # (op code, id(group)) whose Works lack futures
        self.dtype_codes = {}
        for name, code in schema.DTYPE_INDEX.items():
            dt = getattr(torch_module, name, None)
            if isinstance(dt, torch_module.dtype):
                self.dtype_codes[dt] = code
        self.backends: set[str] = set()  # backends of the groups seen ("gloo", "nccl", ...)
        self.in_backward = 0  # maintained by the step hooks
        self.in_py_wait = 0  # inside the Python functional-collectives wait_tensor wrapper
        self._lib = None
        self.missing: list[str] = []

    # -- installation -------------------------------------------------------------------------
    def install(self) -> None:
        torch = self.torch
        after = torch._C._after_ADInplaceOrView_keyset
        specs, self.missing = discover_specs(torch, self.rec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
            self._install_kernels(specs, after)
            self._install_wait_tensor(after)
        self._patch_work_wait()
        try:
            from commprof.capture import inference_mode
            inference_mode.install(self, torch)
        except Exception as exc:  # noqa: BLE001 - that fallback degrades, visibly
            self.rec.degrade("install.inference_mode", exc)

    def _install_kernels(self, specs: list, after) -> None:
        """The Python kernels (capture/native/hooks.py registers the C++ one instead)."""
        self._lib = self.torch.library.Library("c10d", "IMPL")
        for spec in specs:
            self._lib.impl(spec.c10d_name, self._make_kernel(spec, after), "ADInplaceOrView",
                           with_keyset=True)

    def _make_kernel(self, spec: OpSpec, after):
        redispatch = spec.op.redispatch
        on_call = self._on_call
        rec = self.rec
        clock = rec.clock

        def kernel(keyset, *args, **kwargs):
            t0 = clock()
            try:
                out = redispatch(keyset & after, *args, **kwargs)
            except BaseException:
                if rec.enabled:
                    try:
                        on_call(spec, args, None, t0, clock(), schema.FLAG_FAILED)
                    except Exception as exc:  # noqa: BLE001 - recorded, never raised
                        rec.degrade("collective", exc)
                raise
            if rec.enabled:
                t1 = clock()
                try:
                    on_call(spec, args, out, t0, t1, 0)
                except Exception as exc:  # noqa: BLE001 - recorded, never raised
                    rec.degrade("collective", exc)
                rec.self_ns += clock() - t1  # commprof's own work in this call (self-reported)
            return out

        return kernel

    def _install_wait_tensor(self, after) -> None:
        try:
            op = self.torch.ops._c10d_functional.wait_tensor.default
        except (AttributeError, RuntimeError) as exc:
            self.rec.degrade("wait_tensor", exc)
            return
        self._install_wait_tensor_kernel(op, after)
        rec, clock, hooks, get_ident = self.rec, self.rec.clock, self, threading.get_ident
        # AsyncCollectiveTensor waits from inside __torch_dispatch__, where keys above Python
        # (ADInplaceOrView included) are excluded: wrap the Python helper it calls as well.
        try:
            from torch.distributed import _functional_collectives as funcol
        except ImportError as exc:
            self.rec.degrade("wait_tensor.python", exc)
            return
        original = funcol.wait_tensor

        def py_wait_tensor(*args, **kwargs):
            t0 = clock()
            hooks.in_py_wait += 1
            try:
                return original(*args, **kwargs)
            finally:
                hooks.in_py_wait -= 1
                if rec.enabled:
                    rec.wait.append((-1, get_ident(), t0, clock(), schema.WAIT_TENSOR))

        py_wait_tensor.__wrapped__ = original
        py_wait_tensor.__commprof_original__ = original
        funcol.wait_tensor = py_wait_tensor

    def _install_wait_tensor_kernel(self, op, after) -> None:
        """The ``_c10d_functional::wait_tensor`` kernel (capture/native/hooks.py: the C++ one)."""
        self._flib = self.torch.library.Library("_c10d_functional", "IMPL")
        redispatch, rec, hooks, get_ident, clock = op.redispatch, self.rec, self, threading.get_ident, self.rec.clock

        def wait_tensor(keyset, *args, **kwargs):
            if hooks.in_py_wait:  # already timed by the Python wrapper (_install_wait_tensor)
                return redispatch(keyset & after, *args, **kwargs)
            t0 = clock()
            try:
                return redispatch(keyset & after, *args, **kwargs)
            finally:
                if rec.enabled:
                    rec.wait.append((-1, get_ident(), t0, clock(), schema.WAIT_TENSOR))

        self._flib.impl("wait_tensor", wait_tensor, "ADInplaceOrView", with_keyset=True)

    def _patch_work_wait(self) -> None:
        """Replace torch's ``Work.wait`` with one that times each wait (the native path
        installs its C twin instead: capture/native/hooks.py)."""
        Work = self.Work
        original = Work.wait
        rec = self.rec
        clock = rec.clock
        api_codes = checked_blocking_api_codes(self.torch, rec)
        getframe = sys._getframe
        waited = self._waited
        sync_api, work_api = schema.WAIT_SYNC_API, schema.WAIT_WORK

        def wait(self, *args, **kwargs):
            t0 = clock()
            try:
                return original(self, *args, **kwargs)
            finally:
                if rec.enabled:
                    # Called by torch.distributed itself: the wait of a blocking (async_op=False) call.
                    waited(self, t0, clock(), sync_api if getframe(1).f_code in api_codes else work_api)

        wait.__doc__ = original.__doc__
        wait.__commprof_original__ = original
        Work.wait = wait

    def _waited(self, work, t0: int, t1: int, source: int, rid: int | None = None,
                has_future: bool = False) -> None:
        """The records of one ``Work.wait``: the WAIT span, and the DONE record when no future
        gives completion.  ``rid`` None: the Work's record is looked up among the pending ones
        (a Work no kernel recorded gets a WAIT with id -1)."""
        rec = self.rec
        if rid is None:
            entry = self.pending.pop(id(work), None)
            rid, has_future = (entry[0], entry[2]) if entry is not None and entry[1] is work else (-1, False)
        rec.wait.append((rid, threading.get_ident(), t0, t1, source))
        if rid >= 0 and not has_future:  # else the future gives completion
            rec.done.append((rid, t1, schema.DONE_WAIT))

    # -- per call -------------------------------------------------------------------------------
    def _group(self, pg) -> int:
        """Group id of a (pybind) process group; registers new groups."""
        entry = self.groups.get(id(pg))
        if entry is not None and entry[1]() is pg:
            return entry[0]
        # Unknown wrapper: the same group seen through another wrapper keeps its id (by name).
        name = _safe(lambda: pg.group_name)
        gid = self.group_names.get(name) if name is not None else None
        if gid is None:
            gid = self.next_gid
            self.next_gid += 1
            if name is not None:
                self.group_names[name] = gid
            self.rec.json.append(self._describe_group(gid, pg))
        self.groups[id(pg)] = (gid, weakref.ref(pg))  # weak: never keep a destroyed group alive
        return gid

    def _describe_group(self, gid: int, pg) -> dict:
        info = {"type": "group", "id": gid}
        for key, fn in (("name", lambda: pg.group_name), ("desc", lambda: pg.group_desc),
                        ("size", pg.size), ("rank", pg.rank), ("backend", pg.name)):
            try:
                info[key] = fn()
            except Exception as exc:  # noqa: BLE001 - a missing attribute degrades, visibly
                self.rec.degrade(f"group.{key}", exc)
        self.backends.update(str(info.get("backend", "")).lower().split(":"))
        try:
            ranks = self.torch.distributed.distributed_c10d._world.pg_group_ranks.get(pg)
            if ranks:
                info["ranks"] = [g for g, _ in sorted(ranks.items(), key=lambda kv: kv[1])]
        except Exception as exc:  # noqa: BLE001
            self.rec.degrade("group.ranks", exc)
        return info

    def _on_call(self, spec: OpSpec, args, out, t0: int, t1: int, flags: int) -> None:
        op_code = spec.op_code
        if spec.single_code is not None and len(args[spec.inputs[0]]) == 1:
            op_code = spec.single_code
        work = None
        if out is not None and spec.work_index is not None:
            work = self.Work.unbox(out if spec.work_index == -1 else out[spec.work_index])
        self.record(op_code, spec.p2p, self.ProcessGroup.unbox(args[spec.pg]),
                    [args[i] for i in spec.inputs], [args[i] for i in spec.outputs],
                    args[spec.peer] if spec.peer is not None else -1, work, t0, t1, flags)

    def record(self, op_code: int, p2p: bool, pg, inputs: list, outputs: list, peer, work,
               t0: int, t1: int, flags: int) -> None:
        """Append one COLL record (``pg`` and ``work`` are pybind objects, ``peer`` group-local)."""
        rec = self.rec
        rec.wants_file = True
        gid = self._group(pg)
        seq = self._next_seq(gid, p2p)
        in_n, in_b, dtype = _tensor_sizes(inputs)
        out_n, out_b, out_dtype = _tensor_sizes(outputs)
        if self.in_backward:
            flags |= schema.FLAG_IN_BACKWARD
        rid = rec.next_id()
        if work is not None:
            flags |= self._track_work(op_code, rid, work, pg)
        rec.coll.append((rid, op_code, gid, seq, self.dtype_codes.get(dtype or out_dtype, 0), flags,
                         -1 if peer is None else peer, in_n, in_b, out_n, out_b,
                         threading.get_ident(), t0, t1))
        rec.records += 1

    def _next_seq(self, gid: int, p2p: bool) -> int:
        key = (gid, p2p)
        seq = self.seq.get(key, 0)
        self.seq[key] = seq + 1
        return seq

    def _track_work(self, op_code: int, rid: int, work, pg) -> int:
        pending = self.pending
        if self.completed or len(pending) >= _PENDING_SOFT_CAP:
            self._release()
        key = id(work)
        # Keeps the pybind wrapper alive so that wait() sees this very object.
        pending[key] = (rid, work, False)
        fkey = (op_code, id(pg))
        if fkey in self.no_future:
            return 0
        try:
            fut = work.get_future()
        except RuntimeError:  # "Work::getFuture not implemented" (gloo send/recv, reduce-scatter)
            self.no_future.add(fkey)
            return 0
        pending[key] = (rid, work, True)
        done = self.rec.done
        clock = self.rec.clock
        completed = self.completed

        def on_done(_fut, rid=rid, key=key):
            # Runs on a backend thread: append only; the Work is released on the main thread.
            done.append((rid, clock(), schema.DONE_FUTURE))
            completed.append(key)

        fut.add_done_callback(on_done)
        return schema.FLAG_HAS_FUTURE

    def _release(self) -> None:
        """Drop our references to finished Works (on the issuing thread, never a backend's).

        A kept Work keeps its tensors alive, so references must not outlive completion by long.
        """
        pending = self.pending
        completed = self.completed  # appended to by backend threads: drain in place
        n = len(completed)
        keys = completed[:n]
        del completed[:n]
        for key in keys:
            pending.pop(key, None)
        if len(pending) >= _PENDING_SOFT_CAP:
            for key in [k for k, (_, w, _) in pending.items() if w.is_completed()]:
                del pending[key]
            while len(pending) >= _PENDING_HARD_CAP:
                del pending[next(iter(pending))]

    def release_all(self) -> None:
        """Forget every Work (at exit, before the interpreter finalizes)."""
        self.pending.clear()
        del self.completed[:]
