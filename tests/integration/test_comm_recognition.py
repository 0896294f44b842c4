"""Communication recognised by what launched it, one op vocabulary, and the GPU timing source seam.

The expected classifications are written from the definitions (docs/kpis.md, "GPU timeline"): a
kernel whose launch lies inside a communication op on the same CPU thread is communication, the
name families are the fallback.  On the B200 trace the oracle reads the JSON itself: it follows
each kernel's correlation to its runtime call and looks for an enclosing ``symm_mem::``/``c10d::``
op on that thread, with no commprof code.
"""
from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from commprof.analysis.gpu import comm_kernels, gpu_activity, gpu_collectives, gpu_times
from commprof.capture import collectives as capture_collectives
from commprof.format import comm_ops, schema
from test_gpu_timeline import SHARED, kernel, launch, paint, timeline

B200 = SHARED / "tracelens_b200_eager_rank0.json.gz"


def cpu(name, ts, dur, tid=1, cat="cpu_op", **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": 9, "tid": tid, "ts": ts, "dur": dur, "args": args}


# ---- the vocabulary ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, op", [
    # c10d operators (capture), with and without namespace
    ("c10d::allreduce_", "all_reduce"), ("_allgather_base_", "all_gather"),
    ("c10d::reduce_scatter_tensor_coalesced_", "reduce_scatter_coalesced"),
    ("alltoall_base_", "all_to_all"), ("recv_any_source_", "recv"), ("monitored_barrier_", "monitored_barrier"),
    # record_param_comms' Collective name
    ("allreduce", "all_reduce"), ("all_to_allv", "all_to_all"), ("_broadcast_oop", "broadcast"),
    ("all_gather_into_tensor_coalesced", "all_gather_coalesced"), ("send", "send"), ("gather", "gather"),
    # Flight Recorder profiling names, annotations
    ("nccl:all_reduce", "all_reduce"), ("nccl:_reduce_scatter_base", "reduce_scatter"),
    ("nccl:all_to_all", "all_to_all"),
    # functional collectives, symmetric memory
    ("_c10d_functional::all_gather_into_tensor", "all_gather"),
    ("_c10d_functional::reduce_scatter_tensor", "reduce_scatter"),
    ("symm_mem::multimem_all_reduce_", "all_reduce"), ("symm_mem::two_shot_all_reduce_", "all_reduce"),
    # kernel names
    ("ncclDevKernel_ReduceScatter_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "reduce_scatter"),
    ("ncclKernel_Broadcast_RING_LL_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)", "broadcast"),
    ("void (anonymous namespace)::multimem_all_reduce_kernel<c10::BFloat16, 16>(c10::BFloat16*)", "all_reduce"),
    ("void deep_ep::intranode::combine<8>(int)", "all_to_all"),
    # names that say no one op
    ("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclDevComm*)", "unknown"),
    ("ncclDevKernel_Generic(ncclDevKernelArgsStorage<4096ul>)", "unknown"),
    ("_c10d_functional::wait_tensor", "unknown"), ("foo", "unknown"),
])
def test_every_source_name_maps_to_the_canonical_op(name, op):
    assert comm_ops.canonical_op(name) == op
    assert op in schema.OPS


def test_the_capture_and_flight_recorder_use_the_one_vocabulary():
    assert capture_collectives.C10D_OPS is comm_ops.C10D_OPS
    for c10d_name, op in comm_ops.C10D_OPS.items():
        assert comm_ops.canonical_op(c10d_name) == op == comm_ops.canonical_op(f"c10d::{c10d_name}")
    entries = [{"profiling_name": f"nccl:{n}", "duration_ms": 1.0, "process_group": ["0", "d"],
                "time_created_ns": 5} for n in ("allreduce", "_allgather_base", "alltoall_base", "send")]
    fr, _ = gpu_times.fr_frame([{"type": "fr", "entries": entries}])
    assert list(fr["op"]) == ["all_reduce", "all_gather", "all_to_all", "send"]


@pytest.mark.parametrize("name, family", [
    ("c10d::allreduce_", "c10d"), ("_c10d_functional::all_reduce", "c10d_functional"),
    ("symm_mem::multimem_all_reduce_", "symm_mem"), ("record_param_comms", "record_param_comms"),
    ("nvshmem_putmem_on_stream", "nvshmem"), ("deep_ep/buffer.py(412): dispatch", "deep_ep"),
    ("nccl:all_reduce", "nccl_annotation"),
    ("symm_mem::fused_all_gather_matmul", None),     # its GEMMs are computation
    ("symm_mem::fused_scaled_matmul_reduce_scatter", None),
    ("aten::mm", None), ("vllm::all_reduce", None), ("ProfilerStep#3", None),
])
def test_communication_ranges(name, family):
    assert comm_ops.comm_range_family(name) == family


@pytest.mark.parametrize("name, family", [
    ("void (anonymous namespace)::multimem_all_reduce_kernel<c10::BFloat16, 16>(c10::BFloat16*)", "symm_mem"),
    ("void c10d::symmetric_memory::one_shot_all_reduce_kernel<float, 8>(float*)", "one_two_shot_all_reduce"),
    ("void twoShotAllReduceKernel<half>(half*)", "one_two_shot_all_reduce"),
    ("void vllm::cross_device_reduce_1stage<half, 8>(half*)", "vllm_custom_all_reduce"),
    ("void deep_ep::internode_ll::dispatch<3, 7168>(void*)", "deep_ep"),
    ("void c10d::nvshmem_extension::allToAllV(void*)", "nvshmem"),
    ("void mscclpp::allreduce_allpairs<float>(float*)", "msccl"),   # MSCCL++'s namespace
    ("void mscclKernel_Sum_float_Simple_false(int)", "msccl"),
    ("void at::native::reduce_kernel<512, 1>(float*)", None),
    ("void at::native::copy_kernel<ncclDevComm>(ncclDevComm*)", None),
])
def test_kernel_name_families(name, family):
    assert comm_ops.kernel_family(name) == family


# ---- classification by the launching op, on synthetic traces -------------------------------------

RENAMED = "void nv::coll::symkAllGather_LDMC<float>(ncclSymkDevWorkArgs4K)"  # a rename to come


def test_a_kernel_of_any_name_launched_inside_a_c10d_op_is_communication(tmp_path):
    assert comm_ops.kernel_family(RENAMED) is None and comm_ops.kernel_family("fabricXferV9(int)") is None
    tl = timeline(tmp_path, [
        cpu("c10d::allreduce_", 0, 40), launch(1, 10), kernel("fabricXferV9(int)", 100, 50, 1, stream=13),
        cpu("c10d::allgather_", 200, 40), launch(2, 210),
        kernel(RENAMED, 300, 20, 2, stream=13),                                         # renamed NCCL
        launch(3, 60), kernel("unknownVendorKernel(int)", 120, 100, 3),                  # outside any
        cpu("c10d::broadcast_", 400, 40, tid=2), launch(4, 410),                          # other thread
        kernel("void gemm(float*)", 450, 10, 4)])
    g = tl.gpu.set_index("correlation")
    assert list(g.loc[[1, 2, 3, 4], "kind"]) == ["comm", "comm", "compute", "compute"]
    assert list(g.loc[[1, 2], "comm_rule"]) == ["launched_by_comm_op"] * 2
    assert list(g.loc[[1, 2], "comm_via"]) == ["c10d::allreduce_", "c10d::allgather_"]
    # KPIs from the definition: comm = 100–150 ∪ 300–320, compute 120–220 ∪ 450–460
    assert tl.totals["comm_s"] == pytest.approx(70e-6) and tl.totals["overlap_s"] == pytest.approx(30e-6)
    assert tl.totals["comm_kernels"] == 2
    assert list(tl.collectives.sort_values("start_ns")["op"]) == ["all_reduce", "all_gather"]
    assert list(tl.collectives.sort_values("start_ns")["op_source"]) == ["launched_by"] * 2


def test_nested_ranges_external_ids_memcpy_and_fused_matmuls(tmp_path):
    copy = dict(cat="gpu_memcpy")
    tl = timeline(tmp_path, [
        cpu("c10d::allgather_", 0, 100),                       # outer
        cpu("record_param_comms", 5, 10), cpu("aten::copy_", 6, 4),
        launch(1, 7), kernel("void copy_kernel(int)", 200, 5, 1),          # innermost comm: rpc
        cpu("aten::empty", 20, 5), launch(2, 50),                          # sibling ended: outer
        kernel("void fill_kernel(int)", 210, 5, 2),
        launch(3, 60), kernel("Memcpy DtoD (Device -> Device)", 220, 5, 3, **copy),  # memory
        cpu("symm_mem::fused_all_gather_matmul", 300, 100),
        launch(4, 310), kernel("sm90_xmma_gemm_bf16(int)", 400, 30, 4),              # computation
        launch(5, 320), kernel("void multimem_all_gather_kernel(int)", 440, 10, 5, stream=13),
        cpu("c10d::send", 500, 10, **{"External id": 77}),
        kernel("mysteryP2P(int)", 600, 10, 999, stream=13, **{"External id": 77}),  # launch not in trace
    ])
    g = tl.gpu.set_index("correlation")
    assert list(g.loc[[1, 2, 3, 4, 5, 999], "kind"]) == ["comm", "comm", "memory", "compute", "comm", "comm"]
    assert list(g.loc[[1, 2, 5, 999], "comm_via"]) == ["record_param_comms", "c10d::allgather_",
                                                       "symm_mem", "c10d::send"]
    assert list(g.loc[[5, 999], "comm_rule"]) == ["kernel_name", "launched_by_comm_op"]


def test_the_report_lists_each_counted_kernel_and_its_rule(tmp_path):
    from commprof.cli.report import build_report
    from test_gpu_timeline import write
    nccl = "ncclDevKernel_AllReduce_Sum_f32_RING_LL(x)"
    path = write(tmp_path, [
        cpu("c10d::allreduce_", 0, 40), launch(1, 10), kernel("fabricXferV9(int)", 100, 50, 1, stream=13),
        launch(2, 60), kernel(nccl, 200, 30, 2, stream=13),
        launch(3, 70), kernel("k(int)", 300, 20, 3, stream=13, **{"Collective name": "broadcast"}),
        launch(4, 80), kernel("void gemm(float*)", 400, 10, 4)], name="rank-0.json")
    doc = build_report(str(path), 0).to_dict()
    rules = {r["rule"]: (r["kernels"], r["time_s"]) for r in doc["gpu_comm"]["rules"]}
    assert rules == {"launched_by_comm_op": (1, pytest.approx(50e-6)),
                     "collective_args": (1, pytest.approx(20e-6)),
                     "kernel_name": (1, pytest.approx(30e-6))}
    kernels = {k["name"]: (k["rule"], k["via"], k["op"], k["kernels"]) for k in doc["gpu_comm"]["kernels"]}
    assert kernels == {"fabricXferV9(int)": ("launched_by_comm_op", "c10d::allreduce_", "all_reduce", 1),
                       nccl: ("kernel_name", "nccl", "all_reduce", 1),
                       "k(int)": ("collective_args", "broadcast", "broadcast", 1)}
    (note,) = [n for n in doc["notes"] if n.startswith("communication kernels:")]
    assert "1 launched by a communication op" in note and "not named like" in note
    assert "fabricXferV9" in note and "ncclDevKernel" not in note


# ---- the B200 trace: torch symmetric memory --------------------------------------------------------

def _b200_oracle():
    """(kernels launched inside a symm_mem::/c10d:: op on their thread, all kernels) from the JSON."""
    doc = json.loads(gzip.decompress(B200.read_bytes()))
    ev = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
    runtime = {e["args"]["correlation"]: e for e in ev
               if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    ops = [e for e in ev if e.get("cat") == "cpu_op" and e["name"].startswith(("symm_mem::", "c10d::"))]
    kernels = [e for e in ev if e.get("cat") == "kernel"]
    inside = []
    for k in kernels:
        r = runtime.get(k["args"].get("correlation"))
        if r and any(o["pid"] == r["pid"] and o["tid"] == r["tid"] and o["ts"] <= r["ts"] < o["ts"] + o["dur"]
                     for o in ops):
            inside.append(k)
    return inside, kernels, doc.get("baseTimeNanoseconds", 0)


@pytest.mark.skipif(not B200.is_file(), reason=f"{B200} is absent (../shared/gpu_traces/)")
def test_symmetric_memory_kernels_of_the_b200_trace_are_communication():
    from commprof.analysis.gpu import gpu_timeline as gt
    from commprof.format.kineto import read_trace
    inside, kernels, _ = _b200_oracle()
    multimem = [k for k in kernels if "multimem_all_reduce_kernel" in k["name"]]
    assert len(multimem) == 73 and all(k in inside for k in multimem)
    tl = gt.analyze(read_trace(B200))
    comm = tl.gpu[tl.gpu["kind"] == "comm"]
    assert comm["name"].str.contains("multimem_all_reduce_kernel").sum() == 73
    # comm time = the union of the kernels the oracle found inside communication ops (+ NCCL by name)
    ops = [(round(k["ts"] * 1000), round((k["ts"] + k["dur"]) * 1000),
            "comm" if (k in inside or k["name"].startswith("nccl")) else "comp") for k in kernels]
    assert tl.totals["comm_s"] == pytest.approx(paint(ops)["comm"] / 1e9, abs=2e-9)
    assert tl.totals["comm_kernels"] == sum(o[2] == "comm" for o in ops)
    summed = sum(k["dur"] for k in multimem) / 1e6
    got = tl.comm.set_index("rule").loc["launched_by_comm_op"]
    assert got[got["name"].str.contains("multimem")]["time_s"].sum() == pytest.approx(summed, rel=1e-9)


# ---- the seam: one frame for any GPU timing source -------------------------------------------------

def test_every_gpu_timing_source_gives_the_same_interval_frame(tmp_path):
    tl = timeline(tmp_path, [
        cpu("c10d::allreduce_", 0, 40), launch(1, 10), kernel("fabricXferV9(int)", 100, 50, 1, stream=13)])
    trace = gpu_collectives.comm_intervals(tl.collectives)
    fr, _ = gpu_times.fr_frame([{"type": "fr", "entries": [
        {"profiling_name": "nccl:allreduce", "duration_ms": 0.25, "process_group": ["3", "d"],
         "time_created_ns": 5}]}])
    flight = gpu_times.comm_intervals(fr, rank=2)
    window = gpu_activity.comm_intervals(pd.DataFrame({
        "start_ns": [10, 30], "end_ns": [20, 90], "category": ["kernel", "kernel"],
        "name": pd.Categorical(["ncclDevKernel_AllGather_RING_LL(x)", "void gemm(int)"])}), rank=1)
    for frame in (trace, flight, window):
        assert list(frame.columns) == comm_ops.COMM_INTERVAL_COLUMNS
        assert set(frame["op"]) <= set(schema.OPS)
    assert (trace["op"].iloc[0], trace["duration_ns"].iloc[0], trace["source"].iloc[0]) == \
        ("all_reduce", 50_000, "trace")
    assert (flight["op"].iloc[0], flight["group"].iloc[0], flight["duration_ns"].iloc[0]) == \
        ("all_reduce", "3", 250_000)
    assert flight["start_ns"].isna().all()  # Flight Recorder has durations only
    assert list(window["op"]) == ["all_gather"] and window["duration_ns"].iloc[0] == 10
    with pytest.raises(ValueError):
        comm_ops.intervals_frame(0, ["allreduce"], "", [10], [5], [-5], ["x"], "broken")
    rule, _ = comm_kernels.classify(pd.DataFrame({"name": ["a"], "category": ["kernel"]}))
    assert list(rule) == [""] and np.dtype(rule.dtype) == object


def test_the_capture_gets_the_vocabulary_without_pandas():
    """capture/ runs inside the job's workers: standard library and torch only."""
    import subprocess
    import sys
    code = "import sys, commprof.capture.collectives; print(sorted({'pandas', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
