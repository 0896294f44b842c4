"""The GPU timeline of PyTorch-profiler (Kineto) traces: reader, kinds, steps, KPIs, sizes.

On the real traces of ../shared/gpu_traces/ (HTA's test data) every KPI is computed here a second
way, independently of commprof's code: the test parses the JSON itself, converts times with
``Decimal`` and paints the intervals on the elementary segments between all their boundaries (no
sorting-and-merging of intervals).  Small synthetic traces written here pin down each rule.
"""
from __future__ import annotations

import gzip
import json
import shutil
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import numpy as np
import pytest

from commprof.analysis.gpu import gpu_collectives, gpu_timeline as gt
from commprof.analysis.measures import intervals
from commprof.errors import TraceFileError
from commprof.format.kineto import read_trace

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "gpu_traces"
REAL = ["hta_nccl_data_rank0.json.gz", "hta_sampled_rank0.json.gz", "hta_amd_mi250_no_comm.json.gz"]
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (real GPU traces) is absent")


# ---- the oracle: independent of commprof ---------------------------------------------------------

BASE = 1_716_000_000_000_000_000  # Unix ns, as Kineto's baseTimeNanoseconds: float64 cannot hold them


def _ns(us) -> int:
    return int((Decimal(repr(us)) * 1000).to_integral_value(ROUND_HALF_EVEN))


def oracle_ops(path: Path) -> tuple[list, dict]:
    """[(start ns, end ns, kind, launch ns or None)], {step: (start, end)} straight from the JSON."""
    doc = json.loads(gzip.decompress(path.read_bytes()))
    base = int(doc.get("baseTimeNanoseconds", 0))
    runtime, steps, ops = {}, {}, []
    for e in doc["traceEvents"]:
        if e.get("ph") != "X":
            continue
        cat, a = e.get("cat"), e.get("args", {})
        if cat in ("cuda_runtime", "cuda_driver") and "correlation" in a:
            runtime.setdefault(a["correlation"], base + _ns(e["ts"]))
        elif cat == "user_annotation" and e["name"].startswith("ProfilerStep#"):
            steps[int(e["name"].split("#")[1])] = (base + _ns(e["ts"]), base + _ns(e["ts"]) + _ns(e["dur"]))
    for e in doc["traceEvents"]:
        cat = e.get("cat")
        if e.get("ph") != "X" or cat not in ("kernel", "gpu_memcpy", "gpu_memset"):
            continue
        a = e.get("args", {})
        func = e["name"].split("(")[0].removeprefix("void ").lower()
        kind = ("mem" if cat != "kernel" else
                "comm" if func.startswith("nccl") or "Collective name" in a else "comp")
        s = base + _ns(e["ts"])
        ops.append((s, s + _ns(e["dur"]), kind, runtime.get(a.get("correlation"))))
    return ops, steps


def paint(ops: list) -> dict:
    """KPIs by painting each kind on the elementary segments between every boundary."""
    if not ops:
        return dict(comm=0, comp=0, overlap=0, mem=0, idle=0, span=0, n_comm=0, n_kernels=0)
    bounds = np.unique([t for s, e, *_ in ops for t in (s, e)])
    seg = np.diff(bounds)
    painted = {k: np.zeros(len(seg), dtype=bool) for k in ("comm", "comp", "mem")}
    for s, e, kind, *_ in ops:
        painted[kind][np.searchsorted(bounds, s):np.searchsorted(bounds, e)] = True
    c, k, m = painted["comm"], painted["comp"], painted["mem"]
    span = max(e for _, e, *_ in ops) - min(s for s, *_ in ops)
    return dict(comm=seg[c].sum(), comp=seg[k].sum(), overlap=seg[c & k].sum(), mem=seg[m].sum(),
                idle=span - seg[c | k | m].sum(), span=span,
                n_comm=sum(o[2] == "comm" for o in ops), n_kernels=sum(o[2] != "mem" for o in ops))


def expect(p: dict) -> dict:
    """The oracle's figures under commprof's names (seconds)."""
    return {"comm_s": p["comm"] / 1e9, "overlap_s": p["overlap"] / 1e9,
            "exposed_comm_s": (p["comm"] - p["overlap"]) / 1e9, "compute_s": p["comp"] / 1e9,
            "memcpy_s": p["mem"] / 1e9, "idle_s": p["idle"] / 1e9, "span_s": p["span"] / 1e9,
            "comm_kernels": p["n_comm"], "kernels": p["n_kernels"]}


@pytest.fixture(scope="module", params=REAL)
def real(request):
    path = SHARED / request.param
    if not path.is_file():
        pytest.skip(f"{path} is absent (real GPU traces live in ../shared/gpu_traces/)")
    trace = read_trace(path, rank=0 if "amd" in path.name else None)
    return path, trace, gt.analyze(trace), oracle_ops(path)


@needs_shared
def test_real_trace_totals_match_the_painting_oracle(real):
    path, _, tl, (ops, _) = real
    want = expect(paint(ops))
    assert set(tl.totals) == set(gt.GPU_KEYS)
    for key, value in want.items():
        assert tl.totals[key] == pytest.approx(value, rel=1e-3, abs=1e-9), (path.name, key)


@needs_shared
def test_real_trace_steps_match_the_oracle_by_launch_time(real):
    path, trace, tl, (ops, steps) = real
    assert sorted(tl.steps["step"]) == sorted(steps)
    for _, row in tl.steps.iterrows():
        lo, hi = steps[row["step"]]
        mine = [o for o in ops if o[3] is not None and lo <= o[3] < hi]
        want = expect(paint(mine))
        for key, value in want.items():
            assert row[key] == pytest.approx(value, rel=1e-3, abs=1e-9), (path.name, row["step"], key)
    assert tl.links["unlinked"] == sum(o[3] is None for o in ops)


@needs_shared
def test_real_trace_metadata_and_collective_sizes(real):
    path, trace, tl, (ops, _) = real
    if "nccl_data" in path.name:
        assert (trace.rank, trace.world_size, trace.device_type, trace.backend) == (0, 2, "cuda", "nccl")
        doc = json.loads(gzip.decompress(path.read_bytes()))
        want = sum(e["args"]["In msg nelems"] * 4 for e in doc["traceEvents"]
                   if e.get("cat") == "kernel" and e["args"].get("Collective name") == "allreduce")
        table = tl.op_table.set_index("op")
        assert table.loc["all_reduce", "count"] == 15 and table.loc["broadcast", "count"] == 6
        assert table.loc["all_reduce", "bytes"] == want
        ar = tl.collectives[tl.collectives["op"] == "all_reduce"]
        assert (ar["bus_factor"] == 1.0).all()  # 2(n-1)/n on 2 ranks
        assert np.allclose(ar["algbw_gbps"], ar["size_bytes"] / ar["duration_ns"])
    elif "sampled" in path.name:
        assert (trace.rank, trace.world_size) == (0, 128)
        assert len(tl.collectives) == 10 and tl.collectives["size_bytes"].isna().all()  # no sizes
    else:
        assert trace.device_type == "rocm" and tl.totals["comm_kernels"] == 0
        assert "rank 0 given by the caller" in trace.notes


@needs_shared
def test_hta_overlap_agrees(real, tmp_path, monkeypatch):
    """HTA's get_comm_comp_overlap, where it is installed (docs/kpis.md records the numbers)."""
    ta = pytest.importorskip("hta.trace_analysis", reason="holistictraceanalysis is not installed")
    path, trace, tl, _ = real
    if not tl.totals["comm_s"]:
        pytest.skip("no communication kernels: HTA's ratio is NaN")
    (tmp_path / "t").mkdir()
    shutil.copy(path, tmp_path / "t" / "rank-0.json.gz")

    def hta(**kw) -> float:
        df = ta.TraceAnalysis(trace_dir=str(tmp_path / "t"), **kw).get_comm_comp_overlap(visualize=False)
        return float(df["comp_comm_overlap_pctg"].iloc[0])

    ours = 100 * tl.totals["overlap_s"] / tl.totals["comm_s"]
    monkeypatch.setenv("HTA_DISABLE_NS_ROUNDING", "1")
    assert hta(include_last_profiler_step=True) == pytest.approx(ours, abs=0.006)
    # HTA's default: kernels launched from the last ProfilerStep's start on are left out, and
    # times are shrunk to whole µs (ts rounded up, end down)
    monkeypatch.delenv("HTA_DISABLE_NS_ROUNDING")
    g = tl.gpu[tl.gpu["launch_ns"] < trace.steps["start_ns"].max()].copy()
    s, e = g["start_ns"] - trace.base_time_ns, g["end_ns"] - trace.base_time_ns
    g["start_ns"], g["end_ns"] = -((-s) // 1000) * 1000, (e // 1000) * 1000
    t = gt.totals(g)
    assert hta() == pytest.approx(100 * t["overlap_s"] / t["comm_s"], abs=0.006)


# ---- synthetic traces ----------------------------------------------------------------------------

def kernel(name, ts, dur, corr=None, stream=7, cat="kernel", **args):
    a = {"device": 0, "stream": stream, **({"correlation": corr} if corr is not None else {}), **args}
    return {"ph": "X", "cat": cat, "name": name, "pid": 0, "tid": stream, "ts": ts, "dur": dur, "args": a}


def launch(corr, ts, tid=1):
    return {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 9, "tid": tid,
            "ts": ts, "dur": 2, "args": {"correlation": corr}}


def step(n, ts, dur):
    return {"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{n}", "pid": 9, "tid": 1,
            "ts": ts, "dur": dur, "args": {}}


def write(tmp_path, events, name="rank-0.json", dist=None, **top) -> Path:
    doc = {"schemaVersion": 1, "traceEvents": events, **top}
    if dist is not False:
        doc["distributedInfo"] = dist or {"backend": "nccl", "rank": 0, "world_size": 2}
    path = tmp_path / name
    data = json.dumps(doc).encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def timeline(tmp_path, events, **kw):
    return gt.analyze(read_trace(write(tmp_path, events, **kw)))


@pytest.mark.parametrize("name", [
    "ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)",
    "ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)",
    "void ncclDevKernel_Generic_4(ncclDevKernelArgsStorage<4096ul>)",
    "nccldevkernel_allgather_ring_ll(nccldevkernelargsstorage<4096ul>)",  # lower-cased
    "ncclDevKernel_AllGather_RING(ncclDevKernelArgsStorage<4096ul>)",    # protocol suffix dropped
    "ncclSymkDevKernel_AllReduce_LDMC(ncclSymkDevWorkArgs4K)",            # a rename to come
    "nccl:all_reduce",                                                     # a kernel named so
    "void ncclKernel<(ncclFunc_t)4, float, FuncSum<float>, 1, 0, 4>(ncclDevComm*, unsigned long, ncclWork*)",
    "ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)",  # RCCL
    "rcclGenericKernel<1>(ncclDevKernelArgsStorage<4096ul>)",
    "mscclKernel_Sum_float_Simple_false(ncclDevComm*, mscclAlgo*, mscclWork*)",
    "void nccl::device::AllReduceKernel<float>(ncclDevComm*)",
])
def test_communication_kernel_names(name):
    assert gt.is_comm_kernel_name(name)


@pytest.mark.parametrize("name", [
    "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float> >(int)",
    "ampere_sgemm_128x64_tn",
    "Cijk_Alik_Bljk_SB_Bias_AS_SAV_UserArgs_MT64x16x32_MI16x16x1_SN",  # ROCm GEMM
    "void at::native::copy_kernel<ncclDevComm>(ncclDevComm*)",            # nccl only in arguments
    "Memcpy DtoD (Device -> Device)",
])
def test_computation_kernel_names(name):
    assert not gt.is_comm_kernel_name(name)


def test_a_renamed_kernel_with_collective_args_is_communication(tmp_path):
    tl = timeline(tmp_path, [
        launch(1, 0), kernel("fabricAllReduceV9(int)", 10, 100, 1, stream=13, **{
            "Collective name": "allreduce", "In msg nelems": 256, "Out msg nelems": 256,
            "dtype": "BFloat16", "Group size": 4, "Process Group Name": "0"}),
        launch(2, 1), kernel("unknownVendorKernel(int)", 50, 100, 2)])
    assert tl.totals["comm_kernels"] == 1 and tl.totals["kernels"] == 2
    assert tl.totals["overlap_s"] == pytest.approx(60e-6)
    c = tl.collectives.iloc[0]
    assert (c["op"], c["size_bytes"], c["bus_factor"], c["size_source"]) == ("all_reduce", 512, 1.5, "kernel")
    assert c["algbw_gbps"] == pytest.approx(512 / 100_000)


def test_annotations_are_never_kernels(tmp_path):
    ann = {"ph": "X", "name": "nccl:all_reduce", "ts": 0, "dur": 500, "args": {}}
    tl = timeline(tmp_path, [
        {**ann, "cat": "user_annotation", "pid": 9, "tid": 1},
        {**ann, "cat": "gpu_user_annotation", "pid": 0, "tid": 7},
        launch(1, 1, tid=2), kernel("void gemm_kernel<float>(float*)", 100, 50, 1)])  # not under it
    assert tl.totals["comm_s"] == 0 and tl.totals["comm_kernels"] == 0
    assert tl.totals["kernels"] == 1 and tl.totals["compute_s"] == pytest.approx(50e-6)
    assert tl.totals["span_s"] == pytest.approx(50e-6) and tl.totals["idle_s"] == 0


def test_a_kernel_belongs_to_the_step_that_launched_it(tmp_path):
    nccl = "ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
    tl = timeline(tmp_path, [
        step(3, 0, 100), step(4, 100, 100),
        launch(1, 90), kernel(nccl, 150, 100, 1, stream=13),          # launched in 3, runs in 4
        launch(2, 110), kernel("void gemm<float>(float*)", 120, 60, 2),  # step 4
        launch(3, 210), kernel("void gemm<float>(float*)", 260, 10, 3),  # after the last step
    ])
    assert list(tl.gpu.sort_values("correlation")["step"]) == [3, 4, -1]
    rows = tl.steps.set_index("step")
    assert rows.loc[3, "comm_s"] == pytest.approx(100e-6) and rows.loc[3, "overlap_s"] == 0
    assert rows.loc[3, "exposed_comm_s"] == pytest.approx(100e-6) and rows.loc[3, "kernels"] == 1
    assert rows.loc[4, "comm_s"] == 0 and rows.loc[4, "compute_s"] == pytest.approx(60e-6)
    # totals take every kernel, in a step or not, and see the overlap across steps
    assert tl.totals["kernels"] == 3 and tl.totals["overlap_s"] == pytest.approx(30e-6)
    assert tl.totals["span_s"] == pytest.approx(150e-6)
    assert tl.totals["idle_s"] == pytest.approx(150e-6 - 140e-6)  # 120–250 and 260–270 busy
    assert tl.links["outside_steps"] == 1
    assert tl.headline["basis"] == "steps"


def test_correlation_first_then_ac2g_flows(tmp_path):
    flow = lambda ph, fid, ts, pid, tid: {"ph": ph, "id": fid, "pid": pid, "tid": tid, "ts": ts,  # noqa: E731
                                          "cat": "ac2g", "name": "ac2g", **({"bp": "e"} if ph == "f" else {})}
    tl = timeline(tmp_path, [
        step(3, 0, 100), step(4, 100, 100),
        launch(1, 10), kernel("void a(int)", 20, 5, 1), flow("f", 1, 20, 0, 7), flow("s", 1, 150, 9, 1),
        kernel("void b(int)", 30, 5), flow("f", 77, 30, 0, 7), flow("s", 77, 120, 9, 1),  # no correlation
        kernel("void c(int)", 40, 5, 999), flow("f", 999, 40, 0, 7), flow("s", 999, 130, 9, 1),
        kernel("void d(int)", 50, 5, 555),                                   # nothing to follow
    ], baseTimeNanoseconds=BASE)
    g = tl.gpu.set_index("name")
    assert list(g.loc[["void a(int)", "void b(int)", "void c(int)", "void d(int)"], "link"]) == \
        ["correlation", "ac2g", "ac2g", ""]
    assert list(g.loc[["void a(int)", "void b(int)", "void c(int)", "void d(int)"], "step"]) == [3, 4, 4, -1]
    assert list(g.loc[["void b(int)", "void c(int)"], "launch_ns"]) == [BASE + 120_000, BASE + 130_000]
    assert tl.links == {"ops": 4, "by_correlation": 1, "by_ac2g": 2, "unlinked": 1, "outside_steps": 1}
    assert any("no launch in the trace" in n for n in tl.notes)


def test_sizes_from_record_param_comms_by_launch_then_external_id(tmp_path):
    rpc = lambda ts, dur, tid, ext, name, n_in, n_out: {  # noqa: E731
        "ph": "X", "cat": "cpu_op", "name": "record_param_comms", "pid": 9, "tid": tid, "ts": ts,
        "dur": dur, "args": {"External id": ext, "Collective name": name, "In msg nelems": n_in,
                             "Out msg nelems": n_out, "dtype": "Float", "Group size": 4,
                             "Process Group Name": "7", "Seq": 3}}
    ag = "ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
    tl = timeline(tmp_path, [
        rpc(0, 50, 1, 11, "_allgather_base", 1024, 4096), launch(1, 10, tid=1),
        kernel(ag, 20, 64, 1, stream=13),
        rpc(0, 5, 2, 12, "reduce_scatter_tensor_coalesced", 4096, 1024),
        kernel("ncclDevKernel_ReduceScatter_Sum_f32_RING_LL(x)", 100, 32, 2, stream=13, **{"External id": 12}),
        kernel("ncclDevKernel_Generic_1(x)", 200, 10, 3, stream=13),
    ], dist={"rank": 1, "world_size": 4, "pg_config": [{"pg_name": "7", "pg_size": 4}]})
    c = tl.collectives.sort_values("start_ns")
    assert list(c["op"]) == ["all_gather", "reduce_scatter_coalesced", "unknown"]
    assert list(c["size_source"]) == ["record_param_comms", "record_param_comms", ""]
    assert list(c["size_bytes"][:2]) == [16384, 16384] and np.isnan(c["size_bytes"].iloc[2])  # unknown
    assert list(c["bus_factor"][:2]) == [0.75, 0.75] and np.isnan(c["bus_factor"].iloc[2])
    assert c["algbw_gbps"].iloc[0] == pytest.approx(16384 / 64_000)
    table = tl.op_table.set_index("op")
    assert table.loc["all_gather", "busbw_gbps"] == pytest.approx(0.75 * 16384 / 64_000)
    by_name = gpu_collectives.op_from_kernel_name
    assert by_name("ncclDevKernel_ReduceScatter_Sum_f32_RING_LL(x)") == "reduce_scatter"
    assert by_name("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(x)") == "unknown"
    for name, op in [("allreduce", "all_reduce"), ("_broadcast_oop", "broadcast"),
                     ("alltoall_base", "all_to_all"), ("send", "send"), ("foo", "unknown"),
                     ("all_gather_into_tensor_coalesced", "all_gather_coalesced")]:
        assert gpu_collectives.normalize_op(name) == op


def test_times_keep_their_nanoseconds(tmp_path):
    tr = read_trace(write(tmp_path, [launch(1, 0), kernel("void k(int)", 4458676983543.183, 41.407, 1)],
                          baseTimeNanoseconds=BASE))
    assert tr.gpu["start_ns"].iloc[0] == BASE + 4458676983543183
    assert tr.gpu["end_ns"].iloc[0] == BASE + 4458676983543183 + 41407


def test_rank_from_the_file_name_with_a_note(tmp_path):
    evs = [launch(1, 0), kernel("void k(int)", 1, 1, 1)]
    for name, rank in [("job_rank-3.json", 3), ("host.rank7.pt.trace.json.gz", 7), ("trace_5.json", 5)]:
        tr = read_trace(write(tmp_path, evs, name=name, dist=False))
        assert tr.rank == rank and any("from the file name" in n for n in tr.notes)
    tr = read_trace(write(tmp_path, evs, name="rank-3.json", dist={"rank": 6}))
    assert tr.rank == 6 and not tr.notes


def _truncated_gz(t):
    p = write(t, [launch(1, 0), kernel("void k(int)", 1, 1, 1)] * 50, name="rank-0.json.gz")
    p.write_bytes(p.read_bytes()[:-40])
    return p


def _text(name, text):
    def make(t):
        (t / name).write_text(text)
        return t / name
    return make


ONE = [launch(1, 0), kernel("void k(int)", 1, 1, 1)]


@pytest.mark.parametrize("make, words", [
    (_truncated_gz, "truncated gzip"),
    (_text("rank-1.json", "<html>not a trace</html>"), "not JSON"),
    (_text("rank-2.json", '{"traceEvents": [{"ph": "X"'), "truncated?"),
    (_text("rank-3.json", '{"schemaVersion": 1}'), "no traceEvents"),
    (lambda t: write(t, [launch(1, 0), step(1, 0, 10)], name="rank-4.json"), "no GPU kernels"),
    (lambda t: write(t, ONE, name="trace.json", dist=False), "no rank"),
    (lambda t: t / "missing.json", "cannot read"),
])
def test_bad_traces_give_one_line_naming_the_file(tmp_path, make, words):
    path = make(tmp_path)
    with pytest.raises(TraceFileError) as e:
        read_trace(path)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{path}: ") and words in text, text


def test_grouped_union_matches_painting():
    rng = np.random.default_rng(7)
    base = BASE
    for _ in range(20):
        n, k = int(rng.integers(1, 60)), int(rng.integers(1, 5))
        s = base + rng.integers(0, 1000, n)
        e = s + rng.integers(-5, 200, n)
        g = rng.integers(-1, k, n)
        got = intervals.union_length_by_group(g, s, e, k)
        for j in range(k):
            ops = [(a, b, "comm") for a, b, gg in zip(s, e, g) if gg == j and b > a]
            assert got[j] == (paint(ops)["comm"] if ops else 0)


def test_a_directory_of_traces_keeps_the_good_ones(tmp_path):
    from commprof.format.kineto import read_traces
    good = [launch(1, 0), kernel("void k(int)", 1, 1, 1)]
    write(tmp_path, good, name="rank-1.json.gz", dist={"rank": 1})
    write(tmp_path, good, name="rank-0.json", dist={"rank": 0})
    write(tmp_path, good, name="copy.json", dist={"rank": 0})
    (tmp_path / "rank-2.json").write_text("{")
    (tmp_path / "notes.txt").write_text("not a trace")
    traces, errors = read_traces(tmp_path)
    assert [t.rank for t in traces] == [0, 1]
    # read in name order: copy.json claims rank 0 first
    assert sorted(Path(e.path).name for e in errors) == ["rank-0.json", "rank-2.json"]
    assert all("\n" not in str(e) for e in errors)
