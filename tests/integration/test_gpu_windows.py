"""GPU windows (issue 15, item 4) without a GPU: settings, schedule, yielding, conversion, format.

The schedule and the failure paths run against a fake profiler; conversion against fake Kineto
events (the attributes torch 2.13's ``_KinetoEvent`` has); one test runs torch's real profiler
with CPU activity in this process (the test hook).  The end-to-end run is
tests/integration/test_gpu_windows_integration.py.
"""
from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch

from commprof.analysis.gpu import gpu_activity
from commprof.analysis.host.load import read_rank
from commprof.analysis.outcome.summary import self_overhead
from commprof.capture import gpu_convert, gpu_windows
from commprof.capture.config import (DEFAULT_GPU_WINDOWS, ENV_GPU_ACTIVITY, ENV_GPU_TRACE,
                                     ENV_GPU_WINDOWS, CaptureConfig, parse_gpu_windows)
from commprof.capture.recorder import Recorder
from commprof.format import layout, schema
from runner import commprof


# -- settings -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    (None, DEFAULT_GPU_WINDOWS), ("off", None), ("3/100", (3, 100, 5)), ("2/5@3", (2, 5, 3)),
    ("4", (4, 0, 5)), ("1/0@0", (1, 0, 0)), (" 3/100@7 ", (3, 100, 7)),
])
def test_window_specs(spec, expected):
    assert parse_gpu_windows(spec) == (expected, None)


@pytest.mark.parametrize("spec", ["x/100", "3/2", "0/10", "3/100@-1", "3/1e2"])
def test_bad_window_specs_say_why_and_keep_the_default(spec):
    value, why = parse_gpu_windows(spec)
    assert value == DEFAULT_GPU_WINDOWS and why


def test_the_config_reads_the_gpu_settings():
    c = CaptureConfig.from_env({})
    assert c.gpu_windows == DEFAULT_GPU_WINDOWS and not c.gpu_trace and c.gpu_activity == "cuda"
    c = CaptureConfig.from_env({ENV_GPU_WINDOWS: "2/5@3", ENV_GPU_TRACE: "1", ENV_GPU_ACTIVITY: "CPU"})
    assert (c.gpu_windows, c.gpu_trace, c.gpu_activity, c.problem) == ((2, 5, 3), True, "cpu", None)
    assert CaptureConfig.from_env({ENV_GPU_WINDOWS: "off"}).gpu_windows is None
    bad = CaptureConfig.from_env({ENV_GPU_WINDOWS: "often", ENV_GPU_ACTIVITY: "tpu"})
    assert ENV_GPU_WINDOWS in bad.problem and ENV_GPU_ACTIVITY in bad.problem


def test_run_refuses_a_bad_spec_before_starting_anything(tmp_path):
    proc = commprof("run", "--out", str(tmp_path / "r"), "--gpu-windows", "3/2", "--", "true")
    assert proc.returncode == 2 and "--gpu-windows 3/2" in proc.stderr
    assert not (tmp_path / "r").exists()


# -- schedule, with a fake profiler -------------------------------------------------------------------

class FakeProfiler:
    log: list = []

    def __init__(self):
        self.profiler = types.SimpleNamespace(kineto_results=types.SimpleNamespace(events=lambda: []))

    def start(self):
        FakeProfiler.log.append("start")

    def stop(self):
        FakeProfiler.log.append("stop")


def fake_torch(cuda=True, backend="nccl"):
    dist = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True,
                                 get_backend=lambda: backend)
    return types.SimpleNamespace(
        cuda=types.SimpleNamespace(is_available=lambda: cuda, synchronize=lambda: None),
        distributed=dist, autograd=types.SimpleNamespace(profiler=types.SimpleNamespace()),
        _C=types.SimpleNamespace(_autograd=types.SimpleNamespace(_profiler_enabled=lambda: False)))


def make_windows(tmp_path, spec="2/5@3", torch_module=None, factory=FakeProfiler, **env):
    rec = Recorder(str(tmp_path), lambda: ("rank00000.a0.p1.cpf", {"rank": 0}))
    rec.wants_file = True
    cfg = CaptureConfig.from_env({ENV_GPU_WINDOWS: spec, **env})
    return gpu_windows.GpuWindows(rec, torch_module or fake_torch(), cfg, profiler_factory=factory)


def run_steps(w, n, source="optimizer"):
    opened = []
    for k in range(1, n + 1):
        w.on_step(source, k, 1000 * k)
        if w.window is not None and (not opened or opened[-1][0] != w.window.index):
            opened.append((w.window.index, k))
    return opened


def test_windows_open_after_warm_up_and_every_n_steps(tmp_path):
    w = make_windows(tmp_path, "2/5@3")
    assert [k for k in range(20) if w.due(k)] == [3, 8, 13, 18]
    assert run_steps(w, 14) == [(0, 3), (1, 8), (2, 13)]
    w.drain()
    frames = [e for e in w.rec.json if e["type"] == "gpu_window"]
    assert [(f["window"], f["first_step"], f["steps_ended"], f["end_reason"]) for f in frames] == \
        [(0, 3, 2, "scheduled"), (1, 8, 2, "scheduled")]
    assert w.window is not None and w.window.first_step == 13  # still open: closed at exit
    w.close()
    w.drain()
    assert w.rec.json[-1]["end_reason"] == "exit" and w.rec.gpu_windows == 3


def test_once_and_back_to_back_windows(tmp_path):
    assert run_steps(make_windows(tmp_path, "3/0@2"), 20) == [(0, 2)]
    back = make_windows(tmp_path, "2/2@1")
    assert run_steps(back, 6) == [(0, 1), (1, 3), (2, 5)]


def test_explicit_steps_win_over_optimizer_steps(tmp_path):
    w = make_windows(tmp_path, "1/2@2")
    w.on_step("optimizer", 1, 10)
    w.on_step("optimizer", 2, 20)
    assert w.window is not None  # optimizer step 2 opened window 0
    w.on_step("explicit", 1, 30)  # the job calls commprof.step(): the analysis counts those
    assert w.window is None and w.source == "explicit"
    w.on_step("optimizer", 3, 40)  # ignored from now on
    w.on_step("explicit", 2, 50)
    assert w.window is not None and w.window.first_step == 2
    w.drain()
    assert w.rec.json[0]["end_reason"] == "step_source_changed"


def test_no_windows_on_cpu_jobs_or_without_nccl(tmp_path):
    cpu_job = make_windows(tmp_path, "1/2@1", fake_torch(cuda=False))
    assert run_steps(cpu_job, 5) == [] and cpu_job.off and not cpu_job.rec.json  # silently off
    gloo = make_windows(tmp_path, "1/2@1", fake_torch(backend="gloo"))
    assert run_steps(gloo, 5) == []
    assert gloo.rec.json[0]["event"] == "gpu_windows_off" and "NCCL" in gloo.rec.json[0]["why"]
    forced = make_windows(tmp_path, "1/2@1", fake_torch(cuda=False), **{ENV_GPU_ACTIVITY: "cpu"})
    assert run_steps(forced, 3) == [(0, 1), (1, 3)]


def test_a_failing_profiler_is_degraded_never_raised_and_stops_after_three(tmp_path):
    def broken():
        raise RuntimeError("CUPTI said no")
    w = make_windows(tmp_path, "1/2@1", factory=broken)
    assert run_steps(w, 20) == []
    assert w.rec.degraded["gpu_windows.start"][0] == 3 and "CUPTI said no" in w.rec.degraded["gpu_windows.start"][1]
    assert w.off and w.rec.json[-1]["event"] == "gpu_windows_off"


def test_an_enabled_profiler_the_guard_did_not_see_skips_the_window(tmp_path):
    t = fake_torch()
    t.autograd.profiler._is_profiler_enabled = True
    w = make_windows(tmp_path, "1/2@1", t)
    assert run_steps(w, 2) == []
    assert w.rec.json[0]["event"] == "gpu_window_skipped" and w.rec.json[0]["window"] == 0


# -- the job's own torch.profiler, for real (CPU activity) ----------------------------------------------

def test_the_jobs_own_profiler_wins_and_is_unaffected(tmp_path):
    w = make_windows(tmp_path, "2/3@1", torch, factory=None, **{ENV_GPU_ACTIVITY: "cpu"})
    x = torch.randn(32, 32)
    w.on_step("optimizer", 1, w.rec.clock())
    assert w.window is not None
    torch.mm(x, x)
    user = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    user.start()  # while commprof's window is open: the window closes first
    assert w.window is None
    for k in (2, 3, 4):  # window 1 is due at step 4: skipped while the job's profiler runs
        torch.mm(x, x)
        w.on_step("optimizer", k, w.rec.clock())
    user.stop()
    names = [e.name for e in user.events()]
    assert names.count("aten::mm") == 3
    events = [e.get("event") for e in w.rec.json]
    assert events[:2] == ["gpu_window_yielded", "gpu_window_skipped"]
    assert not w.user  # the session ended
    for k in (5, 6, 7):  # window 2 (step 7) opens again
        w.on_step("optimizer", k, w.rec.clock())
    assert w.window is not None and w.window.index == 2
    torch.mm(x, x)
    w.close()
    w.drain()
    recorded = [e for e in w.rec.json if e["type"] == "gpu_window"]
    assert [(e["window"], e["end_reason"]) for e in recorded] == [(0, "yielded"), (2, "exit")]
    steps = {r[7] for r in w.rec.gpu if w.names.codes and r[6] == 0}
    assert steps == {1}
    assert torch.autograd.profiler._is_profiler_enabled is False


# -- conversion ------------------------------------------------------------------------------------------

class Ev:
    def __init__(self, kind, name, start, end, corr, stream=7, device=0):
        self.v = (kind, name, start, end, corr, stream, device)

    def activity_type(self): return self.v[0]
    def name(self): return self.v[1]
    def start_ns(self): return self.v[2]
    def end_ns(self): return self.v[3]
    def correlation_id(self): return self.v[4]
    def device_resource_id(self): return self.v[5]
    def device_index(self): return self.v[6]


def test_kernels_get_their_launch_and_the_step_they_were_launched_in():
    off = 10_000
    events = [Ev("cuda_runtime", "cudaLaunchKernel", off + 100, off + 110, 1),
              Ev("kernel", "ampere_sgemm", off + 400, off + 900, 1, stream=7),
              Ev("cuda_runtime", "cudaLaunchKernel", off + 190, off + 195, 2),
              Ev("kernel", "ncclDevKernel_AllReduce_Sum_f32_RING_LL", off + 950, off + 2000, 2, stream=13),
              Ev("gpu_memcpy", "Memcpy DtoH (Device -> Pinned)", off + 2100, off + 2200, 3),
              Ev("gpu_memset", "Memset (Device)", off + 2300, off + 2310, 9),
              Ev("cpu_op", "aten::mm", off + 50, off + 60, 4),
              Ev("overhead", "Activity Buffer Request", off + 1, off + 2, 0)]
    names = gpu_convert.Names()
    rows, stats = gpu_convert.convert(events, window=3, first_step=40, step_ends=[150, 5000],
                                      offset_ns=off, names=names, t_open=90, t_close=5100)
    cols = [n for n, _ in schema.GPU_FIELDS]
    got = pd.DataFrame(rows, columns=cols)
    assert got["start_ns"].tolist() == [400, 950, 2100, 2300] and got["end_ns"].tolist()[0] == 900
    assert got["launch_ns"].tolist() == [100, 190, schema.NO_LAUNCH, schema.NO_LAUNCH]
    # launched at 100 (<= the end of step 40 at 150) and at 190: steps 40 and 41, whatever
    # their GPU start; the memcpy has no launch, so its start (2100) places it in step 41
    assert got["step"].tolist() == [40, 41, 41, 41] and set(got["window"]) == {3}
    cats = [schema.GPU_CATEGORIES[c] for c in got["category"]]
    assert cats == ["kernel", "kernel", "memcpy", "memset"] and got["stream"].tolist()[:2] == [7, 13]
    assert stats["other_events"] == 2 and stats["launch_matched"] == 2  # cpu_op only with the hook
    assert stats["clock_check"] == {"cpu_events": 2, "before_open_ns": 0, "after_close_ns": 0}
    assert names.take_new() == {"type": "gpu_names", "first": 0, "names": [
        "ampere_sgemm", "ncclDevKernel_AllReduce_Sum_f32_RING_LL",
        "Memcpy DtoH (Device -> Pinned)", "Memset (Device)"]}
    again, _ = gpu_convert.convert(events[:2], 4, 0, [], off, names)
    assert again[0][5] == 0 and names.take_new() is None  # interned: no new name frame


def test_the_clock_check_sees_events_outside_the_window():
    events = [Ev("cuda_runtime", "cudaLaunchKernel", 50, 60, 1), Ev("kernel", "k", 70, 80, 1)]
    _, stats = gpu_convert.convert(events, 0, 0, [], 0, gpu_convert.Names(), t_open=100, t_close=55)
    assert stats["clock_check"]["before_open_ns"] == 50 and stats["clock_check"]["after_close_ns"] == 0


def test_clock_offset_is_the_wall_clock_minus_the_capture_clock():
    import time
    offset, err = gpu_convert.clock_offset(time.perf_counter_ns)
    assert 0 <= err < 1_000_000
    assert abs(time.time_ns() - time.perf_counter_ns() - offset) < 2_000_000


# -- capture file -> gpu_activity ----------------------------------------------------------------------

def test_records_round_trip_to_the_gpu_activity_frame(tmp_path):
    rec = Recorder(str(tmp_path), lambda: ("rank00002.a0.p9.cpf", {"rank": 2}))
    rec.wants_file = True
    rec.gpu.extend([(400, 900, 100, 1, 7, 0, 3, 40, 0, 1), (950, 2000, -1, 2, 13, 1, 3, 41, 0, 2)])
    rec.json.append({"type": "gpu_names", "first": 0, "names": ["sgemm", "Memcpy HtoD"]})
    rec.json.append({"type": "gpu_window", "window": 3, "first_step": 40, "steps_ended": 2,
                     "end_reason": "scheduled", "activity": "cuda", "t_open": 1, "t_close": 3000,
                     "clock": {"offset_ns": 5, "error_ns": 1}, "stats": {"records": 2},
                     "cost_ns": {"start_ns": 10, "stop_ns": 20}, "trace": None})
    rec.json.append({"type": "event", "event": "gpu_window_skipped", "window": 4,
                     "first_step": 45, "why": "the job's own profiler is active"})
    rec.gpu_windows, rec.gpu_window_ns = 1, 30
    rec.close("exit")
    rd = read_rank(layout.capture_paths(tmp_path)[0])
    g = rd.gpu_activity
    assert list(g.columns[3:]) == gpu_activity.COLUMNS and (g["rank"] == 2).all()
    assert g["name"].tolist() == ["sgemm", "Memcpy HtoD"] and g["name"].dtype == "category"
    assert g["category"].tolist() == ["kernel", "memcpy"]
    assert g["launch_ns"].tolist()[0] == 100 and pd.isna(g["launch_ns"].tolist()[1])
    assert g[["step", "window", "stream"]].values.tolist() == [[40, 3, 7], [41, 3, 13]]
    w = rd.gpu_windows
    assert w["status"].tolist() == ["recorded", "skipped"] and w["cost_ns"].tolist()[0] == 30
    p = rd.process
    assert (p["self_gpu_windows"], p["self_gpu_window_ns"]) == (1, 30)
    assert (p["gpu_windows_recorded"], p["gpu_windows_skipped"]) == (1, 1)


def test_a_lost_name_frame_keeps_the_records():
    arr = np.array([(1, 2, -1, 0, 0, 5, 0, 0, 0, 1)],
                   dtype=[(n, {"q": "<i8", "I": "<u4", "i": "<i4", "B": "u1"}[c]) for n, c in schema.GPU_FIELDS])
    g = gpu_activity.activity_frame(arr, [{"type": "gpu_names", "first": 0, "names": ["a"]}])
    assert g["name"].tolist() == ["<unknown>"]
    assert len(gpu_activity.activity_frame(None, [])) == 0


def test_the_overhead_counts_the_windows():
    part = types.SimpleNamespace(process={"self_calls": 10, "self_record_ns": 10_000,
                                          "self_gpu_windows": 2, "self_gpu_window_ns": 6_000_000},
                                 blocking_calls=0)
    o = self_overhead([part, part], pd.DataFrame({"wall_s": [1.0, 1.0]}))
    assert o["gpu_windows"] == 4 and o["gpu_window_s_per_rank"] == pytest.approx(0.006)
    assert o["estimated_s_per_rank"] > 0.006


def test_the_gpu_windows_fault_site_makes_every_start_fail(tmp_path):
    from commprof.capture import faults
    w = make_windows(tmp_path, "1/2@1")
    agent = types.SimpleNamespace(rec=w.rec, collectives=None, steps=None, gpu_windows=w)
    faults.install(agent, frozenset({"gpu_windows"}))
    assert run_steps(w, 3) == [] and w.rec.degraded["gpu_windows.start"][0] == 2


def test_a_signal_drops_the_open_window_without_touching_the_device(tmp_path):
    FakeProfiler.log = []
    w = make_windows(tmp_path, "2/5@1")
    run_steps(w, 1)
    assert FakeProfiler.log == ["start"]
    w.close(signal=True)
    assert FakeProfiler.log == ["start"] and w.window is None  # not stopped: no device sync
    assert w.rec.json[-1]["event"] == "gpu_window_dropped"
