"""Analysis ground truth on hand-computed synthetic timelines, then every report renderer.

Every run here is written through the real capture writer (tests/synthetic.py) and read back by
the real loader, so these tests cover format → load → analysis → document → renderers.
"""
from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest

from commprof.analysis.measures import collectives as coll_mod, latency
from commprof.analysis.host.load import load_run
from commprof.analysis.host.steps import wall_window
from commprof.analysis.outcome.summary import summarize
from commprof.analysis.result.model import Report
from commprof.cli.report import build_report
from commprof.format import schema
from commprof.report.renderers import renderers
from commprof.report.document import load as load_document

from synthetic import (MS, OTHER_THREAD, Coll, Rank, Span, Wait, periodic_rank,
                       probe_result, step_marks, write_run)

TOL = 1e-9


def doc_of(run_dir, warmup=0) -> dict:
    """The run's report document, as the JSON a user reads (``Report.to_dict``)."""
    return build_report(str(run_dir), warmup).to_dict()


def summary_of(run_dir, warmup=0):
    return summarize(load_run(run_dir), warmup=warmup)


def approx(x):
    return pytest.approx(x, abs=TOL, rel=0)


def rank_row(doc, rank):
    (row,) = [r for r in doc["ranks"] if r["rank"] == rank]
    return row


# -- the headline KPIs --------------------------------------------------------------------------

def test_three_steps_thirty_percent_in_flight_ten_percent_exposed(tmp_path):
    # Each 100 ms step: all_reduce issued at +50, host call returns at +52, completes at +80;
    # the training thread waits on it over [+72, +80].  In flight 30 ms, exposed 2 + 8 = 10 ms.
    run = write_run(tmp_path / "run", [periodic_rank(0, n=4), periodic_rank(1, n=4, host="node1")])
    for warmup in (0, 2):
        doc = doc_of(run, warmup)
        k = doc["kpis"]
        assert k["comm_fraction"] == approx(0.30)
        assert k["exposed_comm_fraction"] == approx(0.10)
        assert k["comm_s_per_step"] == approx(0.030)
        assert k["exposed_comm_s_per_step"] == approx(0.010)
        assert k["bytes_per_step"] == 4_000_000
        assert k["bus_bytes_per_step"] == approx(4_000_000 * 2 * 3 / 4)
        # whole run: process-group init (0) to destroy (300 ms)
        assert k["comm_fraction_wall"] == approx(0.30)
        assert k["exposed_comm_fraction_wall"] == approx(0.10)
        assert doc["steps"]["count"] == 3
        assert doc["steps"]["source"] == "optimizer"
        assert doc["steps"]["median_s"] == approx(0.1)
        assert doc["steps"]["measured"] == (3 if warmup == 0 else 1)
        for r in (0, 1):
            row = rank_row(doc, r)
            assert row["comm_s"] == approx(0.09)
            assert row["exposed_comm_s"] == approx(0.03)
            assert row["wall_s"] == approx(0.3)
            assert row["comm_fraction"] == approx(0.3)
            assert row["exposed_comm_fraction"] == approx(0.1)
            assert row["ops"] == 3 and row["bytes"] == 12_000_000
        assert "partly communication-bound" in doc["verdict"]
    s = summary_of(run)
    assert s.steps["comm_s"].tolist() == [approx(0.03)] * 6
    assert s.steps["exposed_s"].tolist() == [approx(0.01)] * 6
    assert s.steps["bytes"].tolist() == [4_000_000] * 6


def test_kpis_are_time_weighted_over_ranks_and_steps(tmp_path):
    # rank 1 waits from the host return (+52) to completion (+80): exposed 2 + 28 = 30 ms;
    # rank 2 never waits (2 ms: the host call itself); rank 0 waits 72..80 (+2): 10 ms.
    # Rank 3's steps are 200 ms with the same collective: exposed 10 ms of 200.
    ranks = [periodic_rank(0), periodic_rank(1, wait_ms=(52, 80)), periodic_rank(2, wait_ms=None),
             periodic_rank(3, step_ms=200)]
    doc = doc_of(write_run(tmp_path / "run", ranks, world_size=4), warmup=0)
    exposed_ms = {0: 10, 1: 30, 2: 2, 3: 10}
    step_ms = {0: 100, 1: 100, 2: 100, 3: 200}
    assert [r["exposed_comm_fraction"] for r in doc["ranks"]] == [
        approx(exposed_ms[r] / step_ms[r]) for r in range(4)]
    # the run: Σ over every rank's steps of exposed time ÷ Σ of their step times (3 steps each)
    assert doc["kpis"]["exposed_comm_fraction"] == approx(sum(exposed_ms.values()) / sum(step_ms.values()))
    assert doc["kpis"]["exposed_comm_fraction_max_rank"] == approx(0.3)
    assert doc["kpis"]["comm_fraction"] == approx(4 * 30 / sum(step_ms.values()))
    per_rank_step = [exposed_ms[r] / step_ms[r] for r in range(4) for _ in range(3)]
    assert doc["kpis"]["exposed_comm_fraction_step_median"] == approx(float(np.median(per_rank_step)))
    assert doc["kpis"]["step_time_s"] == approx(sum(step_ms.values()) / 4 / 1e3)
    k = doc["kpis"]  # the parts add up to the step
    assert k["compute_s_per_step"] + k["comm_s_per_step"] == approx(k["step_time_s"])


@pytest.mark.parametrize("marks, wall_ms, end_source", [
    ({"pg_init": 0, "pg_destroy": 300, "exit": 350}, 300, "destroy_process_group"),
    ({"pg_init": 0, "subgroup_destroy": 200, "exit": 350}, 350, "exit"),
    ({"pg_init": 0}, 300, "last_record"),  # the last step mark at 300
])
def test_whole_run_window(tmp_path, marks, wall_ms, end_source):
    spec = periodic_rank(0, destroy=False)
    spec.exit = marks["exit"] * MS if "exit" in marks else None
    spec.pg_destroy = marks["pg_destroy"] * MS if "pg_destroy" in marks else None
    if "subgroup_destroy" in marks:
        spec.marks.append((schema.MARK_PG_DESTROY, marks["subgroup_destroy"] * MS, 1))
    run = load_run(write_run(tmp_path / "run", [spec], world_size=2))
    w = wall_window(run.marks, run.collectives)
    assert w["end_source"].tolist() == [end_source]
    assert (w["t_end"] - w["t_start"]).tolist() == [wall_ms * MS]
    row = summarize(run, warmup=0).ranks.iloc[0]
    assert row["wall_s"] == approx(wall_ms / 1e3)
    assert row["comm_fraction_wall"] == approx(90 / wall_ms)
    assert row["exposed_comm_fraction_wall"] == approx(30 / wall_ms)


def _one_step_rank(colls, waits=(), spans=(), marks=None, step_ms=100, **kw) -> Rank:
    return Rank(0, collectives=list(colls), waits=list(waits), spans=list(spans),
                marks=marks if marks is not None else step_marks([step_ms * MS]),
                start=0, pg_init=0, pg_destroy=step_ms * MS, **kw)


def _step0(tmp_path, rank: Rank):
    s = summary_of(write_run(tmp_path / "run", [rank], world_size=2))
    row = s.steps.iloc[0]
    return row["comm_s"] * 1e3, row["exposed_s"] * 1e3  # ms


def test_in_flight_is_a_union_and_exposure_is_the_training_threads(tmp_path):
    colls = [
        Coll("all_reduce", in_bytes=100, t_issue=50 * MS, t_return=51 * MS, t_done=80 * MS),
        Coll("all_reduce", in_bytes=100, t_issue=60 * MS, t_return=61 * MS, t_done=90 * MS),
        # a side thread's collective: in flight, but the training thread is not blocked by it
        Coll("broadcast", in_bytes=100, t_issue=10 * MS, t_return=20 * MS, t_done=25 * MS,
             thread=OTHER_THREAD),
    ]
    waits = [Wait(85 * MS, 90 * MS, coll=1),
             Wait(30 * MS, 40 * MS, thread=OTHER_THREAD)]  # not the training thread: not exposed
    comm, exposed = _step0(tmp_path, _one_step_rank(colls, waits))
    assert comm == approx(40 + 15)  # [50, 90] ∪ [10, 25]
    assert exposed == approx(1 + 1 + 5)  # [50,51] ∪ [60,61] ∪ [85,90]


def test_completion_from_a_wait_and_unknown_completion(tmp_path):
    colls = [
        # no future: completes at the end of the Python wait on its Work
        Coll("send", in_bytes=100, t_issue=10 * MS, t_return=11 * MS, t_done=None),
        # no completion at all: in flight until the host call returned
        Coll("recv", in_bytes=100, t_issue=50 * MS, t_return=54 * MS, t_done=None),
        # the same two on a side thread (in flight, never exposed)
        Coll("broadcast", in_bytes=100, t_issue=70 * MS, t_return=71 * MS, t_done=None,
             thread=OTHER_THREAD),
        Coll("reduce", in_bytes=100, t_issue=92 * MS, t_return=95 * MS, t_done=None,
             thread=OTHER_THREAD),
    ]
    waits = [Wait(20 * MS, 30 * MS, coll=0), Wait(80 * MS, 90 * MS, thread=OTHER_THREAD, coll=2)]
    comm, exposed = _step0(tmp_path, _one_step_rank(colls, waits))
    assert comm == approx(20 + 4 + 20 + 3)
    assert exposed == approx(1 + 10 + 4)


@pytest.mark.parametrize("b_done_ms, comm_ms, exposed_ms", [
    (50, 38, 1 + 13),  # both done before backward returns: tail [45, 60] ∩ [20, 58]
    (75, 55, 1 + 15),  # B completes after backward: tail [45, 60] ∩ [20, 75]
])
def test_ddp_backward_tail(tmp_path, b_done_ms, comm_ms, exposed_ms):
    # backward [10, 60]; bucket A issued at 20 (returns 21, done 58), B at 45 (returns 46).
    # DDP blocks at the end of backward until its buckets finish: exposed = the tail of the
    # backward after the last in-backward issue, intersected with in flight.  A second backward
    # call without collectives ([70, 90]) exposes nothing.
    colls = [Coll("all_reduce", in_bytes=1000, t_issue=20 * MS, t_return=21 * MS, t_done=58 * MS,
                  in_backward=True),
             Coll("all_reduce", in_bytes=1000, t_issue=45 * MS, t_return=46 * MS,
                  t_done=b_done_ms * MS, in_backward=True)]
    spans = [Span(10 * MS, 60 * MS), Span(70 * MS, 90 * MS)]
    comm, exposed = _step0(tmp_path, _one_step_rank(colls, spans=spans))
    assert comm == approx(comm_ms)
    assert exposed == approx(exposed_ms)


def test_backward_tail_needs_the_in_backward_flag_and_the_training_thread(tmp_path):
    colls = [Coll("all_reduce", in_bytes=1000, t_issue=20 * MS, t_return=21 * MS, t_done=58 * MS),
             Coll("all_reduce", in_bytes=1000, t_issue=45 * MS, t_return=46 * MS, t_done=75 * MS)]
    spans = [Span(10 * MS, 60 * MS), Span(10 * MS, 80 * MS, thread=OTHER_THREAD)]
    comm, exposed = _step0(tmp_path, _one_step_rank(colls, spans=spans))
    assert comm == approx(55)
    assert exposed == approx(2)  # only the host calls themselves


def test_bytes_per_step_counts_issues_in_each_step_half_open_window(tmp_path):
    # steps (0, 100], (100, 200], (200, 300]; an issue exactly at 100 belongs to step 0.
    colls = [Coll("all_reduce", in_bytes=1000, t_issue=10 * MS, t_done=20 * MS),
             Coll("all_gather", in_bytes=250, out_bytes=1000, t_issue=100 * MS, t_done=105 * MS),
             Coll("all_reduce", in_bytes=3000, t_issue=150 * MS, t_done=160 * MS),
             Coll("reduce_scatter", in_bytes=2000, out_bytes=500, t_issue=299 * MS, t_done=310 * MS),
             Coll("all_reduce", in_bytes=7, t_issue=320 * MS, t_done=330 * MS)]  # after the last step
    rank = Rank(0, collectives=colls, marks=step_marks([100 * MS, 200 * MS, 300 * MS]),
                start=0, pg_init=0, pg_destroy=400 * MS)
    s = summary_of(write_run(tmp_path / "run", [rank], world_size=2))
    assert s.steps["bytes"].tolist() == [2000, 3000, 2000]
    assert s.steps["ops"].tolist() == [2, 1, 1]
    assert s.kpis["bytes_per_step"] == approx((2000 + 3000 + 2000) / 3)  # mean over steps
    assert s.steps["bus_bytes"].tolist() == [approx(1000 + 1000 * 0.5), approx(3000), approx(2000 * 0.5)]


# -- steps --------------------------------------------------------------------------------------

def _steps_of(tmp_path, marks, spans=(), pg_init=0, start=0):
    rank = Rank(0, collectives=[Coll("all_reduce", in_bytes=8, t_issue=5 * MS, t_done=6 * MS)],
                marks=marks, spans=list(spans), start=start, pg_init=pg_init)
    s = summary_of(write_run(tmp_path / "run", [rank], world_size=2))
    return s.steps, s.step_info


def test_explicit_marks_beat_optimizer_marks(tmp_path):
    marks = (step_marks([150 * MS, 250 * MS, 350 * MS], kind=schema.MARK_STEP_EXPLICIT)
             + step_marks([100 * MS, 200 * MS, 300 * MS, 400 * MS]))
    steps, info = _steps_of(tmp_path, marks, spans=[Span(10 * MS, 20 * MS)])
    assert info["source"] == "explicit" and info["count"] == 3
    assert steps["t_end"].tolist() == [150 * MS, 250 * MS, 350 * MS]
    assert steps["t_start"].tolist() == [0, 150 * MS, 250 * MS]
    assert set(steps["source"]) == {"explicit"}


def test_only_the_first_optimizer_defines_steps(tmp_path):
    marks = (step_marks([100 * MS, 200 * MS, 300 * MS], value=0)
             + step_marks([110 * MS, 210 * MS, 310 * MS, 410 * MS], value=1))
    steps, info = _steps_of(tmp_path, marks, spans=[Span(10 * MS, 20 * MS)])
    assert info["source"] == "optimizer" and info["count"] == 3
    assert steps["t_end"].tolist() == [100 * MS, 200 * MS, 300 * MS]


def test_backward_spans_are_the_fallback(tmp_path):
    spans = [Span(10 * MS, 40 * MS), Span(110 * MS, 140 * MS)]
    steps, info = _steps_of(tmp_path, [], spans=spans)
    assert info["source"] == "backward"
    assert steps["t_end"].tolist() == [40 * MS, 140 * MS]


def test_first_step_starts_at_pg_init_else_capture_start(tmp_path):
    marks = step_marks([100 * MS, 200 * MS])
    steps, _ = _steps_of(tmp_path / "a", marks, pg_init=30 * MS, start=20 * MS)
    assert steps["t_start"].tolist() == [30 * MS, 100 * MS]
    steps, _ = _steps_of(tmp_path / "b", marks, pg_init=None, start=20 * MS)
    assert steps["t_start"].tolist() == [20 * MS, 100 * MS]


def test_no_step_source_gives_no_steps(tmp_path):
    steps, info = _steps_of(tmp_path, [])
    assert len(steps) == 0
    assert info["count"] == 0 and info["source"] == "none" and info["median_s"] is None


@pytest.mark.parametrize("warmup, kept, median_s", [
    (0, [0, 1, 2, 3, 4], 0.16),   # all five steps
    (2, [2, 3, 4], 0.12),         # steps 2..4
    (4, [4], 0.16),               # only the last
    (99, [4], 0.16),              # more warm-up than steps: the last one is kept (and a note)
])
def test_warmup_exclusion(tmp_path, warmup, kept, median_s):
    # Each step: 20 ms in flight, 10 ms of it waited on, in steps of d = 500, 400, 100, 120,
    # 160 ms; fractions are time-weighted over the measured steps: Σ 20 ÷ Σ d, Σ 10 ÷ Σ d.
    durations = [500, 400, 100, 120, 160]  # ms: two slow warm-up steps
    measured = len(kept)
    comm_fraction = 20 * measured / sum(durations[i] for i in kept)
    exposed = 10 * measured / sum(durations[i] for i in kept)
    ends, t, colls, waits = [], 0, [], []
    for i, d in enumerate(durations):
        colls.append(Coll("all_reduce", in_bytes=64, t_issue=(t + 1) * MS, t_done=(t + 21) * MS))
        waits.append(Wait((t + 11) * MS, (t + 21) * MS, coll=i))
        t += d
        ends.append(t * MS)
    rank = Rank(0, collectives=colls, waits=waits, marks=step_marks(ends), start=0, pg_init=0)
    doc = doc_of(write_run(tmp_path / "run", [rank], world_size=2), warmup)
    assert doc["steps"]["count"] == 5
    assert doc["steps"]["warmup"] == warmup
    assert doc["steps"]["measured"] == measured
    assert doc["steps"]["median_s"] == approx(median_s)
    assert doc["kpis"]["comm_fraction"] == approx(comm_fraction)
    assert doc["kpis"]["exposed_comm_fraction"] == approx(exposed)
    assert doc["ranks"][0]["steps_total"] == 5 and doc["ranks"][0]["steps"] == measured
    warned = [n for n in doc["note_items"] if n["kind"] == "warmup"]
    assert bool(warned) == (warmup >= 5)


# -- nccl-tests sizes and bus bandwidth ---------------------------------------------------------

# op -> (S of one call from (in_bytes, out_bytes, n), bus factor of n): nccl-tests' PERFORMANCE.md
EXPECTED = {
    "all_reduce": (lambda i, o, n: i, lambda n: 2 * (n - 1) / n),
    "all_reduce_coalesced": (lambda i, o, n: i, lambda n: 2 * (n - 1) / n),
    "all_gather": (lambda i, o, n: o, lambda n: (n - 1) / n),
    "all_gather_coalesced": (lambda i, o, n: o, lambda n: (n - 1) / n),
    "reduce_scatter": (lambda i, o, n: i, lambda n: (n - 1) / n),
    "reduce_scatter_coalesced": (lambda i, o, n: i, lambda n: (n - 1) / n),
    "all_to_all": (lambda i, o, n: i, lambda n: (n - 1) / n),
    "gather": (lambda i, o, n: i * n, lambda n: (n - 1) / n),
    "scatter": (lambda i, o, n: o * n, lambda n: (n - 1) / n),
    "broadcast": (lambda i, o, n: i, lambda n: 1.0),
    "reduce": (lambda i, o, n: i, lambda n: 1.0),
    "send": (lambda i, o, n: i, lambda n: 1.0),
    "recv": (lambda i, o, n: o, lambda n: 1.0),
    "barrier": (lambda i, o, n: 0, lambda n: 0.0),
    "monitored_barrier": (lambda i, o, n: 0, lambda n: 0.0),
}


def _io_bytes(op: str, n: int, chunk: int) -> tuple[int, int]:
    """Realistic (in_bytes, out_bytes) of one call moving ``chunk`` bytes per rank."""
    if op.startswith("all_gather") or op == "gather":
        return chunk, chunk * n
    if op.startswith("reduce_scatter") or op == "scatter":
        return chunk * n, chunk
    if op in ("send",):
        return chunk, 0
    if op in ("recv",):
        return 0, chunk
    if "barrier" in op:
        return 0, 0
    return chunk, chunk


def test_every_op_the_analysis_knows_is_covered_here():
    known = coll_mod._ALLREDUCE | coll_mod._N_MINUS_1_OVER_N | coll_mod._ONE
    assert known <= set(EXPECTED)
    assert set(EXPECTED) | {"unknown"} == set(schema.OPS)


@pytest.mark.parametrize("op", sorted(EXPECTED))
def test_bus_factor(op):
    for n in range(1, 9):
        assert coll_mod.bus_factor(op, n) == approx(EXPECTED[op][1](n)), n


@pytest.mark.parametrize("n", [2, 4, 8])
def test_sizes_and_bandwidths_of_every_op(tmp_path, n):
    colls, t = [], 0
    durations = {}
    for j, op in enumerate(sorted(EXPECTED)):
        ins, outs = _io_bytes(op, n, chunk=1_000_000 * (j + 1))
        ds = [(j + 1) * MS, (j + 2) * MS]  # two calls per op, different lengths
        durations[op] = ds
        for d in ds:
            colls.append(Coll(op, n=n, in_bytes=ins, out_bytes=outs, t_issue=t, t_return=t + 1000,
                              t_done=t + d))
            t += d + MS
    rank = Rank(0, collectives=colls, marks=step_marks([t + MS]), start=0, pg_init=0)
    doc = doc_of(write_run(tmp_path / "run", [rank], world_size=8))
    by_op = {o["op"]: o for o in doc["ops"]}
    assert set(by_op) == set(EXPECTED)
    total_s = total_bus = total_t = 0.0
    for j, op in enumerate(sorted(EXPECTED)):
        ins, outs = _io_bytes(op, n, chunk=1_000_000 * (j + 1))
        size_fn, factor_fn = EXPECTED[op]
        S = 2 * size_fn(ins, outs, n)
        T = sum(durations[op])
        row = by_op[op]
        assert row["group_size"] == n
        assert row["count"] == 2
        assert row["bytes"] == S, op
        assert row["in_bytes"] == 2 * ins and row["out_bytes"] == 2 * outs
        assert row["time_s"] == approx(T / 1e9)
        # two calls: the midpoint, from the latency sketch: within its relative error α
        assert row["p50_s"] == pytest.approx(T / 2 / 1e9, rel=latency.RELATIVE_ACCURACY)
        assert row["max_s"] == approx(max(durations[op]) / 1e9)
        assert row["algbw_gbps"] == approx(S / (T / 1e9) / 1e9), op
        assert row["bus_factor"] == approx(factor_fn(n)), op
        assert row["busbw_gbps"] == approx(S / (T / 1e9) / 1e9 * factor_fn(n)), op
        assert row["dtype"] == "float32"
        if S > 0:
            total_s += S
            total_bus += S * factor_fn(n)
            total_t += T
    assert doc["kpis"]["algbw_gbps"] == approx(total_s / total_t)
    assert doc["kpis"]["busbw_gbps"] == approx(total_bus / total_t)


def test_op_table_is_per_rank_with_latency_quantiles_over_all_calls(tmp_path):
    def rank(r, durations_ms):
        colls = [Coll("all_reduce", n=2, in_bytes=1000, t_issue=i * 100 * MS,
                      t_done=i * 100 * MS + d * MS) for i, d in enumerate(durations_ms)]
        return Rank(r, collectives=colls, start=0, pg_init=0)
    doc = doc_of(write_run(tmp_path / "run", [rank(0, [10, 20, 30]), rank(1, [40])]))
    (row,) = doc["ops"]
    assert row["ranks"] == 2
    assert row["count"] == 2  # (3 + 1) / 2 calls per rank
    assert row["bytes"] == 2000  # (3000 + 1000) / 2
    assert row["time_s"] == approx((60 + 40) / 2 / 1e3)
    # over 10, 20, 30, 40 ms, numpy's linear quantiles; from the merged per-rank latency sketches,
    # so within their stated relative error α (docs/kpis.md), not exact
    assert row["p50_s"] == pytest.approx(0.025, rel=latency.RELATIVE_ACCURACY)
    assert row["p99_s"] == pytest.approx(0.0397, rel=latency.RELATIVE_ACCURACY)
    assert row["max_s"] == approx(0.040)
    assert row["algbw_gbps"] == approx(4000 / 0.1 / 1e9)


# -- the document and its renderers ------------------------------------------------------------

RENDERERS = sorted(renderers())
RUN_KEYS = {"world_size", "backend", "command", "exit_code"}
STEP_KEYS = {"count", "median_s"}
KPI_KEYS = {"bytes_per_step", "comm_fraction", "exposed_comm_fraction", "comm_fraction_wall",
            "exposed_comm_fraction_wall"}
OP_KEYS = {"op", "group_size", "count", "bytes", "time_s", "p50_s", "p99_s", "algbw_gbps",
           "busbw_gbps"}
RANK_KEYS = {"rank", "host", "ops", "bytes", "comm_s", "exposed_comm_s", "comm_fraction"}
TERMINAL_LABELS = ["bytes synchronized", "communication", "whole run", "observed bandwidth",
                   "steps", "ranks", "command"]


def assert_contract(doc: dict) -> None:
    assert doc["schema"] == "commprof.report/1"
    assert RUN_KEYS <= set(doc["run"])
    assert STEP_KEYS <= set(doc["steps"])
    assert KPI_KEYS <= set(doc["kpis"])
    assert isinstance(doc["ops"], list) and isinstance(doc["ranks"], list)
    for op in doc["ops"]:
        assert OP_KEYS <= set(op), set(op)
    for r in doc["ranks"]:
        assert RANK_KEYS <= set(r), set(r)
    assert isinstance(doc["verdict"], str) and doc["verdict"]
    for name, value in doc["kpis"].items():
        if name in ("time_basis", "gpu_basis"):
            assert isinstance(value, str), (name, value)
        elif name == "host":
            assert value is None or all(v is None or isinstance(v, (int, float)) for v in value.values())
        else:
            assert value is None or isinstance(value, (int, float)), (name, value)
    assert doc["kpis"]["time_basis"] in ("host", "gpu_windows", "gpu_trace", "host_launch")
    json.dumps(doc, allow_nan=False)  # plain JSON, no NaN


def _flat(text: str) -> str:
    return " ".join(text.split())


def normal_run(tmp_path):
    ranks = [periodic_rank(0, n=2, steps=4), periodic_rank(1, n=2, steps=4, host="node1")]
    ranks[1].complete = False
    ranks[0].events = [{"type": "degraded", "where": "wait_tensor", "count": 2,
                        "error": "RuntimeError: boom"}]
    return write_run(tmp_path / "normal", ranks, command=["torchrun", "--nproc-per-node=2", "t.py"])


def zero_collectives_run(tmp_path):
    rank = Rank(0, marks=step_marks([100 * MS, 200 * MS, 300 * MS]), start=0, exit=310 * MS,
                groups=False, world_size=1)
    return write_run(tmp_path / "zero", [rank], command=["python", "single.py"])


def no_steps_run(tmp_path):
    ranks = []
    for r in (0, 1):
        spec = periodic_rank(r, n=2, steps=3)
        spec.marks = []  # no optimizer, no commprof.step(), no backward
        ranks.append(spec)
    return write_run(tmp_path / "nosteps", ranks)


HOSTILE = "[bold red]x[/] [link=http://evil]y[/link]"  # rich markup must print as typed


def hostile_strings_run(tmp_path):
    """Captured strings that look like rich markup, plus a hang report naming such a group."""
    ranks = [periodic_rank(0), periodic_rank(1, host=HOSTILE)]
    run = write_run(tmp_path / "hostile", ranks, command=["torchrun", HOSTILE, "t.py"])
    op = {"op": "all_reduce", "group": HOSTILE, "group_desc": HOSTILE, "group_size": 2,
          "bytes": 8, "seq": 3}
    hang = {"schema": "commprof.hang/1", "timeout_s": 2.0, "oldest_pending_s": 2.5, "episode": 1,
            "blocked": [{"op": op, "waiting_ranks": [0], "never_arrived": [1], "not_captured": []}],
            "ranks": [{"rank": 0, "last_completed": dict(op, seq=2, age_s=2.6),
                       "pending": [dict(op, age_s=2.5)], "pending_count": 1, "exited": False},
                      {"rank": 1, "last_completed": dict(op, seq=2, age_s=2.6), "pending": [],
                       "pending_count": 0, "exited": False}]}
    (run / "hang.json").write_text(json.dumps(hang))
    return run


def sampled_run(tmp_path):
    """A run with a node sampler file (a loopback counter in step with the collectives, a fake
    NVML GPU) and a probe result: the Links section."""
    from commprof.sampling.nvml import NvmlSource
    from commprof.sampling.sampler import NodeSampler
    from commprof.sampling.series import Series
    from fakes import fake_pynvml

    run = write_run(tmp_path / "sampled", [periodic_rank(0, steps=4), periodic_rank(1, steps=4)])

    class Loopback:
        name, period_s, sent = "nic", 0.0, 0

        def status(self):
            return {"available": True, "why": None}

        def read(self, emit):
            self.sent += 2_000_000  # per 100 ms tick: 20 MB/s
            emit(Series("nic", "lo", "tx_bytes", "B", note="loopback"), float(self.sent))
            emit(Series("nic", "lo", "rx_bytes", "B", note="loopback"), float(self.sent))

    fake_pynvml.reset()
    clock = iter(range(0, 10**12, 100 * MS))
    sampler = NodeSampler(run, [Loopback(), NvmlSource(fake_pynvml)], hz=10,
                          clock=lambda: next(clock), host="node0")
    for _ in range(5):
        sampler.tick()
    sampler.stop()
    probe = probe_result()
    (run / "probe.json").write_text(json.dumps(probe))
    return run


SCENARIOS = {"normal": normal_run, "zero_collectives": zero_collectives_run,
             "no_steps": no_steps_run, "hostile_strings": hostile_strings_run,
             "sampled": sampled_run}


@pytest.fixture(scope="module")
def scenario_report(tmp_path_factory):
    """Typed reports of the scenarios (warm-up 2), each built once per module."""
    cache = {}

    def get(name) -> Report:
        if name not in cache:
            cache[name] = build_report(str(SCENARIOS[name](tmp_path_factory.mktemp(name))), 2)
        return copy.deepcopy(cache[name])  # a private copy per test
    return get


@pytest.fixture(scope="module")
def scenario_doc(scenario_report):
    """The scenarios' report documents, as JSON (``Report.to_dict``)."""
    return lambda name: scenario_report(name).to_dict()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_document_contract(scenario_doc, scenario, tmp_path):
    doc = scenario_doc(scenario)
    assert_contract(doc)
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(doc))
    assert load_document(saved).to_dict() == doc  # what `commprof report saved.json` reads back


def test_captured_strings_are_never_markup(scenario_report):
    report = scenario_report("hostile_strings")
    out = renderers()["terminal"].render(report, color=True, width=200)
    plain = renderers()["terminal"].render(report, color=False, width=300)
    assert f"torchrun {HOSTILE} t.py" in plain  # the command, printed as typed
    assert re.search(r"^\s*1\s+" + re.escape(HOSTILE), plain, re.M)  # rank 1's host
    assert f"on group {HOSTILE} [{HOSTILE}]" in plain  # a group name in the hang panel
    assert "\x1b]8;" not in out  # no hyperlink escape was produced from captured text
    assert "hang detected" in plain and "never arrived: ranks 1" in plain


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("name", RENDERERS)
def test_every_renderer_renders_every_scenario(scenario_report, name, scenario):
    report = scenario_report(scenario)
    doc = report.to_dict()
    assert doc["schema"] == "commprof.report/1"
    r = renderers()[name]
    for color in (False, True):
        for width in (None, 60, 200):
            out = r.render(report, color=color, width=width)
            assert isinstance(out, str) and out.strip()
    out = r.render(report, color=False, width=None)
    if name == "json":
        parsed = json.loads(out)
        assert parsed == doc
        assert parsed["schema"] == "commprof.report/1"
        assert RUN_KEYS <= set(parsed["run"]) and STEP_KEYS <= set(parsed["steps"])
        assert KPI_KEYS <= set(parsed["kpis"])
        for op in parsed["ops"]:
            assert OP_KEYS <= set(op), set(op)
    if name == "terminal":
        flat = _flat(out)
        for label in TERMINAL_LABELS:
            assert label in flat, label
        assert _flat(doc["verdict"]) in flat
        for note in doc["notes"]:
            assert _flat(note)[:40] in flat


def test_normal_run_document(scenario_report):
    report = scenario_report("normal")
    doc = report.to_dict()
    assert doc["run"]["world_size"] == 2
    assert doc["run"]["backend"] == "gloo"
    assert doc["run"]["command"] == ["torchrun", "--nproc-per-node=2", "t.py"]
    assert doc["run"]["exit_code"] == 0
    assert doc["run"]["incomplete_ranks"] == [1]
    assert [r["host"] for r in doc["ranks"]] == ["node0", "node1"]
    assert [r["complete"] for r in doc["ranks"]] == [True, False]
    assert doc["steps"]["count"] == 4 and doc["steps"]["measured"] == 2
    assert doc["kpis"]["comm_fraction"] == approx(0.3)
    assert doc["degraded"] == [{"rank": 0, "where": "wait_tensor", "count": 2,
                                "error": "RuntimeError: boom"}]
    out = renderers()["terminal"].render(report)
    assert "incomplete" in out
    assert "node1" in out
    assert "commprof degraded on rank 0: wait_tensor failed 2x" in _flat(out)


def test_zero_collectives_run(scenario_doc):
    doc = scenario_doc("zero_collectives")
    assert doc["ops"] == []
    assert doc["run"]["collectives"] == 0
    assert doc["run"]["backend"] == "none"
    assert doc["steps"]["count"] == 3
    assert doc["steps"]["median_s"] == approx(0.1)
    k = doc["kpis"]
    assert k["comm_fraction"] == 0 and k["exposed_comm_fraction"] == 0
    assert k["bytes_per_step"] == 0
    assert k["algbw_gbps"] is None and k["busbw_gbps"] is None
    assert doc["ranks"][0]["ops"] == 0 and doc["ranks"][0]["bytes"] == 0
    assert doc["verdict"].startswith("No communication captured")


def test_no_steps_run(scenario_report):
    report = scenario_report("no_steps")
    doc = report.to_dict()
    assert doc["steps"]["count"] == 0
    assert doc["steps"]["median_s"] is None
    k = doc["kpis"]
    for key in ("bytes_per_step", "comm_fraction", "exposed_comm_fraction"):
        assert k[key] is None, key
    assert k["comm_fraction_wall"] == approx(0.3)
    assert k["exposed_comm_fraction_wall"] == approx(0.1)
    assert any("no training steps" in n for n in doc["notes"])
    assert "of wall time" in doc["verdict"]
    assert "none detected" in renderers()["terminal"].render(report)


def test_damaged_capture_is_a_note(tmp_path):
    run = write_run(tmp_path / "run", [periodic_rank(0), periodic_rank(1)])
    path = sorted((run / "ranks").glob("rank00001*"))[0]
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # tear the trailer
    doc = doc_of(run)
    assert any(path.name in n and "torn" in n for n in doc["notes"])
    assert doc["run"]["incomplete_ranks"] == [1]
    assert doc["kpis"]["comm_fraction"] == approx(0.3)  # every record before the tear is kept


def test_rank_with_collectives_but_no_marks_still_has_whole_run_kpis(tmp_path):
    spec = periodic_rank(0, steps=3)
    spec.marks, spec.start, spec.pg_init, spec.pg_destroy, spec.exit = [], None, None, None, None
    doc = doc_of(write_run(tmp_path / "run", [spec], world_size=2), warmup=2)
    assert doc["run"]["collectives"] == 3
    assert not doc["verdict"].startswith("No communication captured")
    row = doc["ranks"][0]
    assert row["comm_s"] == approx(0.09)
    # window: first issue (50 ms) to last completion (280 ms)
    assert row["wall_s"] == approx(0.23)
    assert doc["kpis"]["comm_fraction_wall"] == approx(0.09 / 0.23)


def test_step_scope_excludes_time_between_steps(tmp_path):
    """`with commprof.step_scope():` begin marks start the step; the gaps belong to no step."""
    # steps of 60 ms run in [100k, 100k+60) ms, 40 ms of evaluation between them
    marks = []
    for k in range(3):
        marks.append((schema.MARK_STEP_BEGIN, k * 100 * MS, k + 1))
        marks.append((schema.MARK_STEP_EXPLICIT, (k * 100 + 60) * MS, k + 1))
    colls = [Coll("all_reduce", in_bytes=1000, t_issue=(k * 100 + 30) * MS,
                  t_return=(k * 100 + 30) * MS, t_done=(k * 100 + 45) * MS) for k in range(3)]
    run = write_run(tmp_path / "run", [Rank(0, collectives=colls, marks=marks, start=0, pg_init=0)])
    s = summary_of(run)
    assert s.step_info["source"] == "explicit"
    assert list(s.steps["duration_s"]) == pytest.approx([0.060] * 3)
    assert list(s.steps["comm_fraction"]) == pytest.approx([15 / 60] * 3)


def test_torchrun_attempts_are_kept_apart(tmp_path):
    """Files of earlier torchrun attempts (TORCHELASTIC_RESTART_COUNT) stay out of the KPIs and
    are reported.  (A real restart is not tested end to end: torch 2.13's own restart of gloo
    workers is flaky on this machine, with or without commprof: plain torchrun --max-restarts=1
    failed 2 runs of 3, one of them a hang.)"""
    first = [periodic_rank(r, steps=2) for r in (0, 1)]
    for spec in first:
        spec.restart, spec.exit = 0, None  # attempt 0 died: no trailer
    second = [periodic_rank(r, steps=5) for r in (0, 1)]
    for spec in second:
        spec.restart = 1
    run = write_run(tmp_path / "run", first + second)
    doc = doc_of(run)
    assert doc["run"]["attempts"] == [0, 1]
    assert doc["steps"]["count"] == 5
    assert {r["attempt"] for r in doc["ranks"]} == {1} and len(doc["ranks"]) == 2
    assert any("2 attempts" in n for n in doc["notes"])


def test_links_section(scenario_report):
    report = scenario_report("sampled")
    doc = report.to_dict()
    lk = doc["links"]
    (lo,) = [r for r in lk["interfaces"] if r["device"] == "lo"]
    assert lo["loopback"] and lo["tx_mean_Bps"] == approx(20e6)
    # both ranks' collectives: 2 ranks x 4 steps x 4 MB x bus factor 1 (n=2)
    assert lo["logical_bus_bytes"] == approx(2 * 4 * 4_000_000)
    assert lo["wire_to_logical"] == approx(lo["tx_bytes"] / lo["logical_bus_bytes"])
    nv = [r for r in lk["interfaces"] if r["source"] == "nvlink"]
    assert [r["device"] for r in nv] == ["gpu0"]  # gpu1 has no NVLink
    assert {g["metric"] for g in lk["gauges"]} >= {"utilization", "tx_rate", "rx_rate"}
    (eff,) = lk["efficiency"]  # 4 MB all_reduce vs the probe's 0.5 GB/s there
    assert eff["probe_busbw_gbps"] == approx(0.5)
    assert eff["job_busbw_gbps"] == approx(4_000_000 / 30e6)  # S / (issue -> done = 30 ms)
    assert lk["probe"]["latency_us"] == {"all_reduce": 120.0, "sendrecv": 40.0}
    text = _flat(renderers()["terminal"].render(report, color=False, width=160))
    assert "Links (node sampler" in text and "node0:nic/lo (loopback)" in text
    assert "node0:nvlink/gpu0" in text and "Efficiency" in text


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_trace_of_every_scenario(tmp_path, scenario):
    from commprof.report.renderers import exporters
    run = SCENARIOS[scenario](tmp_path)
    doc = json.loads(exporters()["trace"].render_run(str(run)))
    events = doc["traceEvents"]
    ranks = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"
             and e["args"]["name"].startswith("rank ")}
    assert len(ranks) == len(load_run(run).processes)
    n_coll = sum(1 for e in events if e.get("cat") == "collective")
    assert n_coll == len(load_run(run).collectives)
    for e in events:
        assert {"ph", "name", "pid", "tid", "ts"} <= set(e)


def test_dispatch_cost_constants_are_the_benchmark_figures_in_the_docs():
    """The self-reported dispatch estimate uses what benchmarks/passthrough_kernel_cost.py
    measured, as docs/performance.md records it (so the two cannot drift apart)."""
    import re
    from pathlib import Path

    from commprof.analysis.outcome import summary
    text = (Path(__file__).resolve().parents[2] / "docs" / "performance.md").read_text()
    added = re.search(r"\| added \| \*\*([0-9.]+) µs\*\* \| \*\*([0-9.]+) µs\*\* \|", text)
    assert added, "docs/performance.md lost its pass-through table"
    assert summary.DISPATCH_NS_BLOCKING_CALL == round(float(added.group(1)) * 1000)
    assert summary.DISPATCH_NS_ASYNC_CALL == round(float(added.group(2)) * 1000)


@pytest.mark.parametrize("width", [60, 80, 110, 140])
def test_the_ranks_table_fits_the_terminal_without_cutting_a_cell(width):
    """A narrow terminal leaves whole columns out (and says which) instead of cutting cells to
    "s…"; the status is always shown, whole, with a long one (a hung rank's) among them."""
    from pathlib import Path
    from commprof.report.terminal import TerminalRenderer
    from commprof.report.terminal import rank_status as commprof_rank_status
    doc = json.loads((Path(__file__).resolve().parents[1] / "golden" / "reports" / "demo.json").read_text())
    doc["ranks"][1].update(complete=False, exit_reason=None)  # status: a long text
    doc["run"]["commprof_version"] = None  # the golden copy leaves the version out
    report = Report.from_dict(doc)
    text = TerminalRenderer().render(report, width=width)
    lines = text[text.index("Ranks ("):].splitlines()
    table = lines[:next(i for i, l in enumerate(lines) if l.startswith(("exposed (wall) =", "too narrow")))]
    section = "\n".join(table)
    rows = [l for l in table if re.match(r"\s+[01]\s", l)]
    assert len(rows) >= 2 and "…" not in section, section
    assert all(len(l.rstrip()) <= width for l in table)
    assert re.search(r"\bok\b", rows[0]), section
    status = commprof_rank_status(report.ranks[1], None)
    assert all(word in section for word in status.split()), (status, section)
    assert ("too narrow for" in text) == (width < 110), text  # left columns out only when needed


def test_the_terminal_shows_every_captured_string_escaped_and_leaves_the_report_alone(scenario_report):
    """Strings anywhere in the typed report (a nested model's field, a free-form dict's key, an
    unknown key) reach the terminal escaped (``printable``: each control character as its Python
    escape); the report the caller passed keeps its strings."""
    from commprof.format.text import printable
    from commprof.report.terminal import TerminalRenderer, printable_copy
    report = scenario_report("sampled")
    clear, link = "\x1b[2J", "\x1b]8;;http://evil\x1b\\"
    report.run.command = ["python", "t.py", clear]
    report.links.interfaces[0].host = "node0" + link
    (name, status), *_ = report.links.sampler[0].sources.items()
    report.links.sampler[0].sources = {name + clear: status}
    report.hang = {"note" + clear: [link]}
    report.extra_keys = {"later_key": {"k" + clear: "v" + link}}
    copy_ = printable_copy(report)
    assert copy_.run.command == ["python", "t.py", printable(clear)] == ["python", "t.py", "\\x1b[2J"]
    assert copy_.links.interfaces[0].host == "node0" + printable(link)
    assert list(copy_.links.sampler[0].sources) == [name + printable(clear)]
    assert copy_.hang == {"note" + printable(clear): [printable(link)]}
    assert copy_.extra_keys == {"later_key": {"k" + printable(clear): "v" + printable(link)}}
    assert report.run.command[-1] == clear and report.links.interfaces[0].host.endswith(link)
    assert copy_.to_dict()["kpis"] == report.to_dict()["kpis"]  # numbers pass unchanged
    text = TerminalRenderer().render(report, width=300)
    assert "\x1b" not in text and "t.py \\x1b[2J" in text
