"""The savings model (docs/whatif.md) on synthetic inputs: what shrinks with what, the caps, the
verdict's bounds, and recommendations that follow the parallelism.  Expected values are written
from the model's definitions, not read from the code."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from commprof.analysis.outcome import advice, parallelism
from commprof.analysis.outcome.verdict import assess
from commprof.analysis.outcome.whatif import (Baseline, bounds, link_share, project, scenarios,
                                      step_components, step_waits)
from commprof.analysis.result.model import Report

DDP_APIS = ("no_sync", "register_comm_hook", "bf16_compress_hook", "DDP", "bucket_cap_mb")
GOLDEN_DEMO = Path(__file__).resolve().parents[1] / "golden" / "reports" / "demo.json"


def _meas(rows):
    """rank, step, duration_s, comm_s, exposed_s, ops."""
    return pd.DataFrame(rows, columns=["rank", "step", "duration_s", "comm_s", "exposed_s", "ops"])


def test_bandwidth_and_bytes_shorten_the_transfer_never_the_waiting():
    # 100 ms step, 60 ms blocking communication of which 40 ms waiting for a late rank
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.060, straggler_wait_s=0.040)
    transfer = 0.060 - 0.040
    assert project(b, bandwidth=2)["step_time_s"] == pytest.approx(0.100 - transfer / 2)
    assert project(b, bytes_div=10)["step_time_s"] == pytest.approx(0.100 - transfer * 0.9)
    assert project(b, bandwidth=1e9)["step_time_s"] >= 0.100 - transfer - 1e-12
    assert project(b, no_straggler=True)["step_time_s"] == pytest.approx(0.060)


def test_the_measured_wait_of_every_rank_counts_without_a_significant_straggler():
    meas = _meas([(0, 5, 0.100, 0.060, 0.060, 1), (1, 5, 0.100, 0.030, 0.030, 1)])
    ranks = pd.DataFrame({"rank": [0, 1], "wait_s": [3.0, 0.0], "comm_s": [4.0, 2.0]})
    b = Baseline.from_steps(meas, [], None, 1.0, ranks=ranks)
    # rank 0 waited 3/4 of its communication time, rank 1 none
    waits = [0.75 * 0.060, 0.0]
    transfers = [0.060 - waits[0], 0.030]
    expect = np.mean([0.100 - transfers[0] / 2, 0.100 - transfers[1] / 2])
    assert project(b, bandwidth=2)["step_time_s"] == pytest.approx(expect)
    assert b.inputs()["wait_s_per_step"] == pytest.approx(np.mean(waits))


def test_a_steps_own_measured_wait_wins_over_the_rank_share():
    meas = _meas([(0, 5, 0.100, 0.060, 0.060, 1), (0, 6, 0.100, 0.060, 0.060, 1)])
    ranks = pd.DataFrame({"rank": [0], "wait_s": [1.0], "comm_s": [2.0]})
    cross = {"per_step": [{"step": 5, "ranks": [0, 1], "wait_s": [0.010, 0.0]}]}
    b = Baseline.from_steps(meas, [], None, 1.0, ranks=ranks, step_wait=step_waits(cross))
    assert b.wait().tolist() == pytest.approx([0.010, 0.030])  # step 6: the share, 0.5 × 60 ms


def test_a_probe_caps_what_a_faster_link_can_add():
    # one bucket: 2 MB of bus bytes in 2 ms of calls (1 GB/s); the probe measured 10 GB/s there
    sizes = pd.DataFrame({"op": ["all_reduce"], "group_size": [2], "bucket": [20], "count": [2],
                          "bytes": [2e6], "bus_bytes": [2e6], "time_ns": [2e6]})
    probe = {"results": [{"op": "all_reduce", "size_bytes": 1e5, "busbw_gbps": 10.0},
                         {"op": "all_reduce", "size_bytes": 1e7, "busbw_gbps": 10.0}]}
    eps = link_share(sizes, probe)
    assert eps == pytest.approx((2e6 / 10.0) / 2e6)  # link time (bytes ÷ bytes/ns) ÷ call time
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.060, link_share=eps)
    # only the link's share of the 60 ms halves; fewer bytes still shrink all of it
    assert project(b, bandwidth=2)["step_time_s"] == pytest.approx(0.100 - eps * 0.060 / 2)
    assert project(b, bytes_div=2)["step_time_s"] == pytest.approx(0.100 - 0.030)
    assert link_share(sizes, None) is None


def test_overlap_hides_only_behind_work_that_exists():
    # the MI300X trace's shape: 18.8 ms steps, 15.7 ms in flight, 11.76 ms of it exposed
    t, c, e = 0.0188, 0.0157, 0.01176
    b = Baseline(step_s=t, comm_s=c, exposed_s=e, exposed_only=True)
    hidden, bound = bounds(b)
    assert hidden == pytest.approx(t / max(t - e, c))  # 1.20x, not 1/(1 − 0.62)
    assert bound == pytest.approx(t / (t - e))  # the compute that ran under it stays
    kpis = {"comm_fraction": c / t, "exposed_comm_fraction": e / t, "time_basis": "gpu_trace"}
    v = assess(kpis, b)
    assert (v.speedup_if_hidden, v.speedup_bound) == (hidden, bound)
    assert assess(kpis).speedup_if_hidden == pytest.approx(hidden)  # same formulas without one


def test_host_clocks_remove_all_communication_a_gpu_timeline_its_exposed_part():
    host = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.020)
    gpu = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.020, exposed_only=True)
    # sync every 4: 3 steps in 4 without communication
    assert project(host, sync_every=4)["step_time_s"] == pytest.approx((0.100 + 3 * 0.040) / 4)
    assert project(gpu, sync_every=4)["step_time_s"] == pytest.approx((0.100 + 3 * 0.080) / 4)


def test_skipping_gradient_sync_keeps_what_is_not_a_gradient_reduction():
    # by bytes (a run's first collectives carry the start-up skew in their time)
    ops = [{"op": "all_gather", "group_size": 2, "time_s": 1.0, "bytes": 3e6},
           {"op": "reduce_scatter", "group_size": 2, "time_s": 1.0, "bytes": 1e6}]
    kept = parallelism.kept_share(ops, 2)
    assert kept == pytest.approx(0.75)
    no_sizes = [{**o, "bytes": None} for o in ops]
    assert parallelism.kept_share(no_sizes, 2) == pytest.approx(0.5)  # by time, sizes unknown
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.060, kept_share=kept)
    local = 0.100 - 0.25 * 0.060  # FSDP's all-gathers stay
    assert project(b, sync_every=4)["step_time_s"] == pytest.approx((0.100 + 3 * local) / 4)


@pytest.mark.parametrize("seed", range(40))
def test_no_what_if_row_exceeds_the_verdicts_bounds(seed):
    rng = np.random.default_rng(seed)
    n = 6
    t = rng.uniform(0.01, 0.2, n)
    c = t * rng.uniform(0, 1, n)
    e = c * rng.uniform(0, 1, n)
    b = Baseline(step_s=t, comm_s=c, exposed_s=e, straggler_wait_s=c * rng.uniform(0, 1, n),
                 latency_floor_s=float(rng.uniform(0, 0.01)),
                 link_share=None if seed % 3 == 0 else float(rng.uniform(0, 1)),
                 kept_share=float(rng.uniform(0, 1)), exposed_only=bool(seed % 2))
    hidden, bound = bounds(b)
    floor = t - (e if b.exposed_only else c)
    assert bound == pytest.approx(t.mean() / floor.mean())
    for w in scenarios(b):
        assert w["speedup"] <= bound * (1 + 1e-12), w["name"]
        if w["name"] == "perfect overlap":
            assert w["speedup"] == pytest.approx(hidden)
    assert project(b)["step_time_s"] == pytest.approx(t.mean())  # no change: the measured step


def test_the_parts_of_a_step_add_up_and_are_named():
    meas = _meas([(0, 5, 0.100, 0.060, 0.040, 1), (1, 5, 0.100, 0.020, 0.020, 1)])
    ranks = pd.DataFrame({"rank": [0, 1], "wait_s": [1.0, 0.0], "comm_s": [2.0, 1.0]})
    b = Baseline.from_steps(meas, [], None, 1.0, ranks=ranks)
    p = step_components(b, {})
    hidden = np.mean([0.020, 0.0])
    assert p["no_comm_s_per_step"] == pytest.approx(np.mean([0.040, 0.080]))
    assert p["wait_s_per_step"] == pytest.approx(np.mean([0.030, 0.0]))  # half of rank 0's 60 ms
    assert (p["no_comm_s_per_step"] + hidden + p["exposed_transfer_s_per_step"]
            + p["wait_s_per_step"]) == pytest.approx(0.100)
    unmeasured = step_components(Baseline.from_steps(meas, [], None, 1.0), {})
    assert unmeasured["wait_s_per_step"] is None and unmeasured["transfer_s_per_step"] is None


# -- recommendations ---------------------------------------------------------------------------

def _report(ops, baseline, world=2, **kw) -> Report:
    """A report of ``ops`` with ``baseline``'s what-if rows and KPIs, ``world`` ranks and no ranks
    or stragglers of note.  What advice.recommendations reads is the test's; the committed demo
    report fills the keys it does not read (and each op row's other columns)."""
    doc = json.loads(GOLDEN_DEMO.read_text())
    i = baseline.inputs()
    doc["kpis"].update(step_time_s=i["step_s"], exposed_comm_fraction=i["exposed_s_per_step"] / i["step_s"],
                       exposed_comm_s_per_step=i["exposed_s_per_step"], bytes_per_step=1e6)
    doc["run"].update(world_size=world, commprof_version=None)  # the golden copy leaves the version out
    doc.update(ops=[{**doc["ops"][0], **o} for o in ops], ranks=[], stragglers=[],
               whatif=scenarios(baseline), **kw)
    return Report.from_dict(doc)


FSDP_OPS = [{"op": "all_gather", "group_size": 2, "time_s": 2.0, "bytes": 2e6, "dtype": "float32"},
            {"op": "reduce_scatter", "group_size": 2, "time_s": 1.0, "bytes": 1e6, "dtype": "float32"}]


def test_fsdp_gets_fsdps_knobs_and_no_ddp_api():
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.050,
                 kept_share=parallelism.kept_share(FSDP_OPS, 2))
    recs = advice.recommendations(_report(FSDP_OPS, b))
    text = " ".join(r["action"] + " " + r["evidence"] for r in recs)
    assert parallelism.detect(FSDP_OPS, 2)["kind"] == "fsdp"
    assert not any(api in text for api in DDP_APIS), text
    assert "MixedPrecisionPolicy" in text and "set_modules_to_forward_prefetch" in text
    assert "set_requires_gradient_sync" in text and "all-gathers stay" in text


def test_expert_parallel_all_to_all_is_not_told_to_add_a_gradient_hook():
    ops = [{"op": "all_to_all", "group_size": 8, "time_s": 2.0, "bytes": 2e6, "dtype": "float32"},
           {"op": "all_reduce", "group_size": 8, "time_s": 1.0, "bytes": 1e6, "dtype": "float32"}]
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.050, kept_share=parallelism.kept_share(ops, 8))
    recs = advice.recommendations(_report(ops, b, world=8))
    assert parallelism.detect(ops, 8)["kind"] == "expert"
    text = " ".join(r["action"] for r in recs)
    assert "all_to_all" in text and not any(api in text for api in DDP_APIS + ("hook",)), text


def test_ddp_gets_ddps_api_and_a_jobs_own_all_reduces_do_not():
    own = [{"op": "all_reduce", "group_size": 2, "time_s": 1.0, "bytes": 1e6, "dtype": "float32"}]
    ddp = own + [{"op": "broadcast", "group_size": 2, "time_s": 0.01, "bytes": 1e3, "dtype": "float32"}]
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.050)
    recs = advice.recommendations(_report(ddp, b))
    assert parallelism.detect(ddp, 2)["kind"] == "ddp"
    assert any("bf16_compress_hook" in r["action"] for r in recs)
    assert any("no_sync" in r["action"] for r in recs)
    recs = advice.recommendations(_report(own, b))
    text = " ".join(r["action"] + " " + r["evidence"] for r in recs)
    assert parallelism.detect(own, 2)["kind"] == "allreduce"
    assert recs and not any(api in text for api in DDP_APIS), text


def test_when_waiting_dominates_balance_comes_first_and_the_network_last():
    ops = [{"op": "all_reduce", "group_size": 2, "time_s": 1.0, "bytes": 1e6, "dtype": "float32"}]
    # 60 ms blocking communication, 45 ms of it waiting; the transfer is large enough that a
    # faster network's projected saving would not put it last on its own merits
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.060, straggler_wait_s=0.045, wait_measured=True)
    recs = advice.recommendations(_report(ops, b))
    assert recs[0]["scenario"] == "no straggler"
    assert recs[-1]["action"] == "a 2× faster network"
    net = next(r for r in recs if r["scenario"] == "bandwidth x2")
    assert 1 - net["projected_saving"] == pytest.approx((0.100 - 0.015 / 2) / 0.100)


def test_one_node_is_never_told_to_buy_a_network():
    ops = [{"op": "all_reduce", "group_size": 2, "time_s": 1.0, "bytes": 1e6, "dtype": "float32"}]
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.060, single_node=True)
    recs = advice.recommendations(_report(ops, b))
    assert recs and not any("network" in r["action"] for r in recs)
    (note,) = advice.notes(b, {"hosts": ["h"], "ranks_captured": 2, "backend": "gloo"}, None)
    assert note.kind == "single_node" and "no network purchase can help a single node" in note.text


def test_a_job_far_below_the_probed_bandwidth_is_told_what_bounds_it():
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.060, link_share=0.03)
    (note,) = advice.notes(b, {"hosts": ["a", "b"], "ranks_captured": 2, "backend": "gloo"}, {})
    assert note.kind == "not_bandwidth_bound" and "3%" in note.text and "the CPU" in note.text
    b = Baseline(step_s=0.100, comm_s=0.060, exposed_s=0.060, link_share=0.03, latency_floor_s=0.040)
    (note,) = advice.notes(b, {"hosts": ["a", "b"], "ranks_captured": 2, "backend": "nccl"}, {})
    assert "latency" in note.text


# -- the op table's bytes per step -------------------------------------------------------------

def test_op_table_bytes_per_step_leave_start_up_and_warm_up_out(tmp_path):
    from runner import commprof
    from synthetic import MS, Coll, periodic_rank, write_run
    ranks = []
    for r in (0, 1):
        spec = periodic_rank(r, steps=6, nbytes=4_000_000)
        # DDP's start-up broadcast of the module state: inside step 0 (from process-group init)
        spec.collectives.insert(0, Coll("broadcast", n=2, in_bytes=1_000_000, t_issue=5 * MS,
                                        t_return=6 * MS, t_done=7 * MS))
        ranks.append(spec)
    run = write_run(tmp_path / "run", ranks)
    for warmup, measured in ((2, 4), (0, 6)):
        doc = json.loads(commprof("report", str(run), "-f", "json", "--warmup", str(warmup)).stdout)
        ops = {o["op"]: o for o in doc["ops"]}
        assert ops["all_reduce"]["bytes_per_step"] == pytest.approx(4_000_000)  # one per step
        assert ops["all_reduce"]["calls_per_step"] == pytest.approx(1.0)
        # in step 0 only: gone once warm-up leaves it out, spread over the steps otherwise
        assert ops["broadcast"]["bytes_per_step"] == pytest.approx(1_000_000 * (warmup == 0) / measured)
        assert ops["broadcast"]["count"] == 1


def test_the_op_table_per_process_group_in_every_format(tmp_path):
    from runner import commprof
    from synthetic import MS, Coll, periodic_rank, write_run
    ranks = []
    for r in (0, 1):
        spec = periodic_rank(r, steps=5, nbytes=4_000_000)  # world group "0" (default_pg)
        for k in range(5):  # a second group (size 1 here: its own name "1", description "group1")
            t = (k * 100 + 10) * MS
            spec.collectives.append(Coll("all_reduce", n=1, in_bytes=1000, t_issue=t, t_return=t + MS,
                                         t_done=t + 2 * MS))
        spec.collectives.sort(key=lambda c: c.t_issue)
        ranks.append(spec)
    run = write_run(tmp_path / "run", ranks)
    doc = json.loads(commprof("report", str(run), "-f", "json", "--warmup", "1").stdout)
    by = {(g["group"], g["op"]): g for g in doc["op_groups"]}
    world, second = by[("0", "all_reduce")], by[("1", "all_reduce")]
    assert world["group_desc"] == "default_pg" and second["group_desc"] == "group1"
    assert (world["ranks"], world["count"], world["bytes"]) == (2, 5, 5 * 4_000_000)
    assert world["bytes_per_step"] == pytest.approx(4_000_000)
    assert second["bytes_per_step"] == pytest.approx(1000) and second["calls_per_step"] == pytest.approx(1)
    text = commprof("report", str(run), "--width", "200", "--warmup", "1").stdout
    assert "Per process group" in text and "group1" in text
    page = tmp_path / "r.html"
    commprof("report", str(run), "-o", str(page), "--warmup", "1")
    assert 'id="op-group-table"' in page.read_text() and "group1" in page.read_text()
