"""A fix's projection from the baseline alone (issue 25 items 2 and 3, docs/try.md,
"Projections"): PowerSGD's bytes from the DDP model's shapes the baseline recorded, the compute a
fix adds (PowerSGD's compression) or keeps (local SGD's steps that do not synchronize), and the
what-if's arithmetic with them — oracles from the definitions, on synthetic inputs."""
from __future__ import annotations

import types

import pytest
import torch

from commprof.analysis.outcome import whatif
from commprof.fixes import model_shapes, parse
from commprof.fixes.projection import (change_for, compressed_matrices, powersgd_bytes_ratio,
                                       time_powersgd, whatif_keywords)

MODEL = {"device": "cpu", "params": [{"shape": [512, 256], "element_size": 4, "count": 1},
                                     {"shape": [512], "element_size": 4, "count": 2},
                                     {"shape": [10, 512], "element_size": 4, "count": 1},
                                     {"shape": [16, 3, 3, 3], "element_size": 4, "count": 1}]}


def test_powersgd_bytes_come_from_the_recorded_shapes():
    # rank 1: 512x256 -> (512 + 256) values; 10x512 -> (10 + 512) (1044 < 5120); 16x27 -> 43
    # (86 < 432); the two 512-vectors whole
    before = 512 * 256 + 2 * 512 + 10 * 512 + 16 * 27
    after = (512 + 256) + 2 * 512 + (10 + 512) + (16 + 27)
    assert powersgd_bytes_ratio(MODEL, 1) == pytest.approx(after / before, rel=1e-12)
    # rank 8: 10x512 sends min(10, 8) = 8 columns: (10 + 512)·8 = 4176, ·2 ≥ 5120: whole
    after8 = (512 + 256) * 8 + 2 * 512 + 10 * 512 + 16 * 27
    assert powersgd_bytes_ratio(MODEL, 8) == pytest.approx(after8 / before, rel=1e-12)
    assert compressed_matrices(MODEL, 8) == [(512, 256, 8, 1)]
    assert powersgd_bytes_ratio(None, 1) is None


def _base(all_reduce=(1000.0, 900.0), model=MODEL) -> dict:
    return {"ops": {"all_reduce": {"bytes": all_reduce[0], "backward": all_reduce[1]}}, "ddp_model": model}


def test_the_change_of_each_fix_from_the_baseline_alone():
    (ps,) = parse("powersgd:1")
    ratio = powersgd_bytes_ratio(MODEL, 1)
    change = change_for([ps], _base(), {"powersgd:1": 0.004})
    # the gradients' 900 B shrink by the ratio, the job's own 100 B stay
    assert change["bytes_div"] == pytest.approx(1000 / (100 + 900 * ratio))
    assert change["compute_add_s"] == 0.004 and change["compute_known"] is True
    gpu = change_for([ps], _base(model=dict(MODEL, device="cuda")), {"powersgd:1": None})
    assert gpu["compute_known"] is False and gpu["compute_add_s"] == 0
    assert change_for([ps], _base(model=None)) == {}  # no shapes: nothing to project from
    (bf16,) = parse("bf16-compress")
    assert change_for([bf16], _base())["bytes_div"] == pytest.approx(1000 / (100 + 900 * 0.5))
    (local,) = parse("local-sgd:4")
    assert whatif_keywords(change_for([local], _base())) == {"sync_every": 4, "keep_compute": True}


def test_the_what_if_adds_compute_and_keeps_it_on_steps_that_do_not_synchronize():
    # one rank-step: T = 100, C = 90 in flight, E = 80 exposed, no waiting
    b = whatif.Baseline([0.100], [0.090], [0.080])
    # a step that does not synchronize: T − C = 10 ms (host clocks: hidden transfer competed
    # with compute) or, keeping compute, T − E = 20 ms; one in 4 synchronizes (100 ms)
    assert whatif.project(b, sync_every=4)["step_time_s"] == pytest.approx((0.100 + 3 * 0.010) / 4)
    assert whatif.project(b, sync_every=4, keep_compute=True)["step_time_s"] == pytest.approx((0.100 + 3 * 0.020) / 4)
    # compute added to every step, serially: bytes ÷ 10 shortens the transfer 90 -> 9 ms, which
    # takes the 81 ms saved off the 80 ms exposed: max(compute 20 + 0, transfer 9) = 20 ms, + 5 ms
    assert whatif.project(b, bytes_div=10, compute_add_s=0.005)["step_time_s"] == pytest.approx(0.020 + 0.005)
    assert whatif.project(b)["step_time_s"] == pytest.approx(0.100)  # no change: the step


def test_the_compression_is_timed_on_the_cpu_only():
    small = {"device": "cpu", "params": [{"shape": [64, 32], "element_size": 4, "count": 3}]}
    one = time_powersgd({**small, "params": [dict(small["params"][0], count=1)]}, 2)
    assert one is not None and one > 0
    assert time_powersgd({**small, "device": "cuda"}, 2) is None and time_powersgd(None, 2) is None


def test_every_ddp_model_records_its_gradient_shapes():
    events, degraded = [], []

    class FakeDDP:
        def __init__(self, module, bucket_cap_mb=25):
            self.module = module
            self.bucket_bytes_cap = int(bucket_cap_mb * 2 ** 20)

    fake_torch = types.SimpleNamespace(nn=types.SimpleNamespace(parallel=types.SimpleNamespace(
        DistributedDataParallel=FakeDDP)))
    model_shapes.install(fake_torch, events.append, lambda where, exc: degraded.append(where))
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    net[0].bias.requires_grad_(False)
    FakeDDP(net, bucket_cap_mb=1)
    (e,) = events
    assert e["event"] == "ddp_model" and e["device"] == "cpu" and e["bucket_cap_mb"] == 1.0
    assert e["params"] == [{"shape": [4, 8], "element_size": 4, "count": 1},
                           {"shape": [4, 4], "element_size": 4, "count": 2},
                           {"shape": [4], "element_size": 4, "count": 2}]
    FakeDDP(object())  # no .parameters(): recorded as degraded, never raised
    assert degraded == ["fixes.model_shapes"] and len(events) == 1


def test_the_projection_calibrated_on_the_first_run_is_judged_on_the_later_runs():
    from commprof.cli.try_checks import calibrated, projection_lines

    def side(*kpis):  # the runs' reports: only their KPIs are read
        return types.SimpleNamespace(docs=[types.SimpleNamespace(kpis=types.SimpleNamespace(
            step_time_s=t, exposed_comm_s_per_step=e)) for t, e in kpis])
    base = side((0.100, 0.080))  # compute per step: 20 ms
    fix = side((0.050, 0.020), (0.060, 0.025))  # run 1's compute: 30 ms (+10 ms)

    def projector(**change):  # a what-if that takes 40 ms under the change, plus the compute added
        assert change["bytes_div"] == 2
        return 0.040 + change.get("compute_add_s", 0.0)
    cal = calibrated(base, fix, {"bytes_div": 2, "compute_add_s": 0.001, "compute_known": True}, projector)
    assert cal["compute_add_s"] == pytest.approx(0.010)
    assert cal["projected_step_time"] == pytest.approx(0.050)
    assert cal["later_runs_step_time"] == 0.060  # run 2 only: run 1 calibrated it
    assert cal["measured_vs_projected"] == pytest.approx(0.060 / 0.050)
    assert calibrated(base, side((0.050, 0.020)), {"bytes_div": 2}, projector) is None  # one run
    text = "\n".join(projection_lines({"projected_step_time": 0.041, "measured_vs_projected": 1.5,
                                       "projection": {"bytes_ratio": 0.023, "compute_known": True,
                                                      "compute_add_s": 0.001}, "calibrated": cal}))
    assert "PowerSGD's bytes x0.023 from the model's shapes" in text and "measured/projected 1.500" in text
    assert "with run 1's measured compute" in text and ": 1.200" in text
