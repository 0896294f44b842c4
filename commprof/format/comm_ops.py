"""One vocabulary for communication ops, whatever recorded them, and the seam for GPU timing sources.

Every source of communication timing names ops its own way: the ``c10d::`` dispatcher operators
commprof's capture hooks (``allreduce_``, ``_allgather_base_``), ``record_param_comms``'
``Collective name`` (``allreduce``, ``all_to_allv``), Flight Recorder's profiling names
(``nccl:all_reduce``), CPU ops of a profiler trace (``_c10d_functional::all_gather_into_tensor``,
``symm_mem::multimem_all_reduce_``) and GPU kernels (``ncclDevKernel_ReduceScatter_Sum_f32_RING_LL``,
``multimem_all_reduce_kernel<c10::BFloat16, 16>``).  :func:`canonical_op` maps any of them to an op
of :data:`commprof.format.schema.OPS` ("unknown" when the name says none: NCCL's ``Generic`` and
``SendRecv`` kernels run several ops).

What counts as communication on a GPU timeline is decided here too:

* :func:`comm_range_family` — a CPU range (profiler op or annotation) inside which every kernel
  launched is communication: ``c10d::``, ``_c10d_functional::``, ``symm_mem::`` (not its fused
  matmul ops, whose GEMMs are computation), ``record_param_comms``, NVSHMEM, DeepEP, ``nccl:``;
* :func:`kernel_family` — the fallback by a kernel's own name: NCCL, RCCL, MSCCL/MSCCL++, NVSHMEM,
  symmetric-memory ``multimem_*``, one-/two-shot all-reduce, vLLM's custom all-reduce, DeepEP.

**Adding a GPU timing source** (an NCCL profiler plugin, torch's c10d hooks, ...) is one module:
parse the source, name its ops with :func:`canonical_op`, and return a frame of
:data:`COMM_INTERVAL_COLUMNS` (:func:`intervals_frame` builds and checks it).  The existing ones:
``analysis.gpu.gpu_collectives.comm_intervals`` (profiler traces), ``analysis.gpu.gpu_times.comm_intervals``
(Flight Recorder durations) and ``analysis.gpu.gpu_activity.comm_intervals`` (``commprof run``'s GPU
windows); docs/architecture.md, "Where to add a GPU timing source".
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from commprof.format import schema

if TYPE_CHECKING:  # the capture imports this module inside the job's workers: no pandas there
    import pandas as pd

# c10d dispatcher operator (without "c10d::") -> canonical op: the operators commprof's capture hooks
C10D_OPS = {
    "allreduce_": "all_reduce", "allreduce_coalesced_": "all_reduce_coalesced",
    "allgather_": "all_gather", "_allgather_base_": "all_gather",
    "allgather_coalesced_": "all_gather_coalesced",
    "allgather_into_tensor_coalesced_": "all_gather_coalesced",
    "reduce_scatter_": "reduce_scatter", "_reduce_scatter_base_": "reduce_scatter",
    "reduce_scatter_tensor_coalesced_": "reduce_scatter_coalesced",
    "alltoall_": "all_to_all", "alltoall_base_": "all_to_all",
    "broadcast_": "broadcast", "reduce_": "reduce", "gather_": "gather", "scatter_": "scatter",
    # torch >= 2.14: dist.gather_single / gather_into_tensor (gloo does not implement it)
    "gather_into_tensor_": "gather",
    "barrier": "barrier", "monitored_barrier_": "monitored_barrier",
    "send": "send", "recv_": "recv", "recv_any_source_": "recv",
}

# (words run together, lower case) -> op; first match wins, so longer names come first
_JOINED = (("reducescatter", "reduce_scatter"), ("allreduce", "all_reduce"),
           ("allgather", "all_gather"), ("alltoall", "all_to_all"), ("broadcast", "broadcast"),
           ("monitoredbarrier", "monitored_barrier"), ("barrier", "barrier"),
           ("sendrecv", "unknown"), ("crossdevicereduce", "all_reduce"),
           ("onerankreduce", "all_reduce"))
_WORDS = {"reduce": "reduce", "gather": "gather", "scatter": "scatter", "send": "send",
          "isend": "send", "recv": "recv", "irecv": "recv"}
_COALESCED = {"all_reduce", "all_gather", "reduce_scatter"}
_DEEP_EP_OP = re.compile(r"deep_?ep\W.*(dispatch|combine)", re.I)


def function_name(name: str) -> str:
    """A kernel's or op's bare function name: no return type, namespaces, arguments or template
    arguments (``void (anonymous namespace)::multimem_all_reduce_kernel<c10::BFloat16, 16>(...)``
    -> ``multimem_all_reduce_kernel``; ``nccl:all_reduce`` -> ``all_reduce``)."""
    s = str(name).strip().replace("(anonymous namespace)::", "")
    s = re.sub(r"^void\s+", "", s)
    s = re.split(r"[(<\s]", s, maxsplit=1)[0]
    return s.rsplit("::", 1)[-1].rsplit(":", 1)[-1]


def canonical_op(name: str) -> str:
    """The op of :data:`~commprof.format.schema.OPS` that a source's name says ("unknown" if none).

    Accepts c10d operator names with or without namespace, ``Collective name``s, Flight Recorder
    profiling names, functional-collective and symmetric-memory op names, kernel names.
    """
    if _DEEP_EP_OP.search(str(name)):
        return "all_to_all"  # DeepEP's dispatch / combine: expert-parallel all-to-all
    bare = function_name(name).lower()
    joined = re.sub(r"[^a-z]", "", bare)
    op = next((o for key, o in _JOINED if key in joined), None)
    if op is None:
        words = [w for w in re.split(r"[^a-z]+", bare) if w]
        op = next((_WORDS[w] for w in words if w in _WORDS), "unknown")
    return f"{op}_coalesced" if op in _COALESCED and "coalesced" in joined else op


# ---- what is communication on a GPU timeline ------------------------------------------------------

_RANGE_PREFIXES = (("c10d::", "c10d"), ("_c10d_functional::", "c10d_functional"),
                   ("c10d_functional::", "c10d_functional"),
                   ("_c10d_functional_autograd::", "c10d_functional"),
                   ("symm_mem::", "symm_mem"), ("nccl:", "nccl_annotation"))
_FUSED_COMPUTE = re.compile(r"matmul|_mm\b|_mm_|scaled_mm|gemm", re.I)
_NVSHMEM = re.compile(r"nvshmem", re.I)
_DEEP_EP_RANGE = re.compile(r"deep_?ep\W.*(dispatch|combine)", re.I)

# name families of communication kernels: (family, pattern over the whole name)
KERNEL_FAMILIES = (
    # the function name, after a return type and namespaces: ncclKernel_*, ncclDevKernel_*,
    # nccl::device::*, rcclGenericKernel, mscclKernel_*, mscclpp::*, NCCL's one-rank reduction
    ("nccl", re.compile(r"^\s*(?:void\s+)?(?:[A-Za-z_]\w*::)*(?:nccl|oneRankReduce)", re.I)),
    ("rccl", re.compile(r"^\s*(?:void\s+)?(?:[A-Za-z_]\w*::)*rccl", re.I)),
    ("msccl", re.compile(r"^\s*(?:void\s+)?(?:[A-Za-z_]\w*::)*msccl", re.I)),
    ("nvshmem", re.compile(r"^\s*(?:void\s+)?(?:[A-Za-z_]\w*::)*nvshmem", re.I)),
    ("symm_mem", re.compile(r"(?:^|[\s:])multimem_\w+", re.I)),
    ("one_two_shot_all_reduce", re.compile(r"(?:^|[\s:_])(?:one|two)_?shot_?all_?reduce", re.I)),
    ("vllm_custom_all_reduce", re.compile(r"(?:^|[\s:])cross_device_reduce_\w+", re.I)),
    ("deep_ep", re.compile(r"(?:^|[\s:])deep_ep::\w+(?:::\w+)*::\w*(?:dispatch|combine)", re.I)),
)


def comm_range_family(name: str) -> str | None:
    """The family of a CPU range whose launches are communication, or None.

    ``c10d::``, ``_c10d_functional::``, ``symm_mem::`` (except fused matmul ops), ``nccl:``
    annotations, ``record_param_comms``, anything naming NVSHMEM, DeepEP's dispatch/combine.
    """
    s = str(name)
    if s == "record_param_comms":
        return "record_param_comms"
    for prefix, family in _RANGE_PREFIXES:
        if s.startswith(prefix):
            return None if family == "symm_mem" and _FUSED_COMPUTE.search(s) else family
    if _NVSHMEM.search(s):
        return "nvshmem"
    if _DEEP_EP_RANGE.search(s):
        return "deep_ep"
    return None


def kernel_family(name: str) -> str | None:
    """The communication family a kernel's name belongs to (:data:`KERNEL_FAMILIES`), or None."""
    s = str(name)
    return next((family for family, pattern in KERNEL_FAMILIES if pattern.search(s)), None)


# ---- the seam: one frame for any GPU timing source -------------------------------------------------

#: One row per communication op timed on the GPU.  ``rank`` int; ``op`` a schema op
#: (:func:`canonical_op`); ``group`` the process group's name ("" unknown); ``start_ns``/``end_ns``
#: Int64 ns on the source's clock (NA when the source has durations only, as Flight Recorder);
#: ``duration_ns`` Int64 (GPU time of the op); ``name`` the source's own name for it; ``source``
#: which source ("trace", "flight_recorder", "gpu_window", ...).
COMM_INTERVAL_COLUMNS = ["rank", "op", "group", "start_ns", "end_ns", "duration_ns", "name", "source"]


class GpuTimingSource(Protocol):
    """What a GPU timing source provides: its communication ops as :data:`COMM_INTERVAL_COLUMNS`."""

    def comm_intervals(self) -> pd.DataFrame:
        """The source's communication ops, one row each."""


def intervals_frame(rank, op, group, start_ns, end_ns, duration_ns, name, source: str) -> pd.DataFrame:
    """A :data:`COMM_INTERVAL_COLUMNS` frame from column values (scalars broadcast), checked:
    ops are canonical, durations are not negative, ``end − start`` is the duration where both are
    known.  ``op`` may be the source's names: they pass through :func:`canonical_op`."""
    import pandas as pd
    df = pd.DataFrame({"name": pd.Series(name, dtype=object)})
    n = len(df)
    df["rank"] = pd.Series(rank, index=df.index).astype("int64") if n else pd.Series(dtype="int64")
    ops = pd.Series(op, index=df.index, dtype=object) if n else pd.Series(dtype=object)
    df["op"] = [o if o in schema.OP_INDEX else canonical_op(o) for o in ops]
    df["group"] = pd.Series(group, index=df.index, dtype=object).fillna("").astype(str) if n else ""
    for col, values in (("start_ns", start_ns), ("end_ns", end_ns), ("duration_ns", duration_ns)):
        df[col] = _ns_column(values, df.index)
    df["source"] = source
    both = df["start_ns"].notna() & df["end_ns"].notna()
    dur = df["duration_ns"].fillna(0).to_numpy("int64")
    if (dur < 0).any() or (both & (df["end_ns"] - df["start_ns"] != df["duration_ns"])).any():
        raise ValueError(f"{source}: a communication interval's duration is negative or not end − start")
    return df[COMM_INTERVAL_COLUMNS]


def _ns_column(values, index) -> pd.Series:
    """Int64 ns (NA unknown) from ints (exact: Unix-epoch ns do not fit float64), floats (rounded)
    or None."""
    import pandas as pd
    if values is None:
        return pd.Series(pd.NA, index=index, dtype="Int64")
    v = pd.Series(values.to_numpy() if isinstance(values, pd.Series) else values, index=index)
    return (v.round() if v.dtype.kind == "f" else v).astype("Int64")
