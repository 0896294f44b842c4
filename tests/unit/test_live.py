"""The live aggregator against the report: the same run, written in time order and tailed as it
grows (with sealing), gives the report's numbers (commprof/live, docs/monitoring.md)."""
from __future__ import annotations

import random

import pytest

from commprof.analysis.measures import kpis as kpi
from commprof.analysis.outcome.summary import summarize
from commprof.format import layout, schema
from commprof.format.writer import CaptureWriter, encode_batch, encode_json
from commprof.live.aggregator import LiveAggregator
from commprof.live.panel import bucket_name, lines, one_line, render
from synthetic import MS, Coll, Rank, Span, Wait, rank_frames, step_marks, write_run

STEP_MS = 100


def ddp_rank(rank: int, steps: int, seed: int) -> Rank:
    """Steps with a backward span holding two async all_reduces (DDP buckets), a wait on the
    last, a blocking broadcast on a second group and jittered step lengths."""
    rnd = random.Random(seed)
    colls, waits, spans, ends = [], [], [], []
    t = 0
    for k in range(steps):
        length = (STEP_MS + rnd.randint(-20, 20)) * MS
        b0, b1 = t + 10 * MS, t + 60 * MS
        spans.append(Span(b0, b1))
        for j, off in enumerate((20, 40)):
            issue = t + off * MS
            colls.append(Coll("all_reduce", n=2, in_bytes=(1 << 20) * (j + 1), t_issue=issue,
                              t_return=issue + MS, t_done=issue + (25 + rnd.randint(0, 10)) * MS,
                              in_backward=True))
        waits.append(Wait(b1, b1 + 5 * MS, coll=len(colls) - 1))
        issue = t + 70 * MS
        colls.append(Coll("broadcast", n=1 if rank == 9 else 2, in_bytes=4096 * (k % 3 + 1),
                          t_issue=issue, t_return=issue + 2 * MS, t_done=issue + 2 * MS))
        t += length
        ends.append(t)
    return Rank(rank, collectives=colls, waits=waits, spans=spans, marks=step_marks(ends),
                start=0, pg_init=0, pg_destroy=t, exit=t + MS)


def timed_frames(spec: Rank, world: int) -> tuple[str, dict, list[tuple[int, bytes]]]:
    """(name, header, [(time, frame)]): the capture's records one frame each, at the time the
    worker would have them (a call at its return, a completion at its completion, ...)."""
    name, header, frames = rank_frames(spec, world)
    kind_of = schema.FRAME_HEADER.unpack_from
    out = [(-1, f) for f in frames if kind_of(f, 0)[0] == schema.KIND_JSON]  # the groups
    seq = {}
    for i, c in enumerate(spec.collectives):
        gid = 0 if c.n == world else 1
        seq[gid] = seq.get(gid, 0) + 1
        flags = (schema.FLAG_HAS_FUTURE if c.t_done is not None else 0) | (
            schema.FLAG_IN_BACKWARD if c.in_backward else 0)
        row = (i, schema.OP_INDEX[c.op], gid, seq[gid], schema.DTYPE_INDEX[c.dtype], flags, c.peer,
               c.in_bytes // 4, c.in_bytes, c.in_bytes // 4, c.in_bytes, c.thread, c.t_issue, c.t_return)
        out.append((c.t_return, encode_batch(schema.KIND_COLL, [row])))
        out.append((c.t_done, encode_batch(schema.KIND_DONE, [(i, c.t_done, schema.DONE_FUTURE)])))
    for w in spec.waits:
        out.append((w.t_end, encode_batch(schema.KIND_WAIT, [(w.coll, w.thread, w.t_start, w.t_end, w.source)])))
    marks = list(spec.marks) + [(schema.MARK_START, 0, 10000 + spec.rank), (schema.MARK_PG_INIT, 0, 0),
                                (schema.MARK_PG_DESTROY, spec.pg_destroy, 0), (schema.MARK_EXIT, spec.exit, 0)]
    for m in marks:
        out.append((m[1], encode_batch(schema.KIND_MARK, [m])))
    for s in spec.spans:
        out.append((s.t_end, encode_batch(schema.KIND_SPAN, [(s.kind, s.thread, s.t_start, s.t_end)])))
    out.sort(key=lambda x: x[0])
    return name, header, out


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A 2-rank run written in 1 s flushes while the aggregator polls; and its final report."""
    run = tmp_path_factory.mktemp("live")
    specs = [ddp_rank(r, 120, seed=r) for r in range(2)]
    write_run(run, [])  # the manifest
    writers, streams = [], []
    for spec in specs:
        name, header, frames = timed_frames(spec, 2)
        writers.append(CaptureWriter(str(layout.ranks_dir(run) / name), header))
        streams.append(frames)
    agg = LiveAggregator(run, window_steps=10, horizon_s=1.5)
    end = max(spec.exit for spec in specs)
    seen = []
    for flush in range(0, end // (1000 * MS) + 2):
        t_flush = (flush + 1) * 1000 * MS
        for w, frames in zip(writers, streams):
            batch = [f for t, f in frames if t_flush - 1000 * MS <= t < t_flush or
                     (flush == 0 and t < 0)]
            if batch:
                w.write(b"".join(batch))
        agg.poll()
        seen.append(agg.snapshot())
    for w in writers:
        w.write(encode_json({"type": "self_cost", "calls": 360, "record_ns": 3_600_000}))
        w.close({"reason": "exit"})
    agg.poll()
    return run, agg, agg.snapshot(), seen, summarize(run, warmup=0)


def test_buffers_were_sealed_while_growing(grown):
    _, agg, _, _, _ = grown
    for st in agg.states.values():
        assert st.cut > 0  # the sealing ran
        assert len(st.buf["coll"]) < 3 * 120 / 2  # and the buffer holds less than half the run


def test_totals_equal_the_report(grown):
    _, _, snap, _, summary = grown
    ranks = summary.ranks.set_index("rank")
    for r in snap["ranks"]:
        t = r["totals"]
        assert sum(t.bytes.values()) == int(ranks.loc[r["rank"], "bytes"])  # exact
        assert sum(t.calls.values()) == int(ranks.loc[r["rank"], "ops"])
        assert t.comm_ns / 1e9 == pytest.approx(ranks.loc[r["rank"], "comm_s"], rel=1e-9)
        assert t.exposed_ns / 1e9 == pytest.approx(ranks.loc[r["rank"], "exposed_comm_s"], rel=1e-9)
        ops = summary.ops.set_index("op")
        for op, seconds in t.seconds.items():  # the op table's time_s is per rank (mean): equal here
            assert seconds == pytest.approx(ops.loc[op, "time_s"], rel=0.05)


def test_window_kpis_are_the_reports_over_the_same_steps(grown):
    _, _, snap, _, summary = grown
    steps = summary.steps
    last = steps.groupby("rank").tail(10)
    want = kpi.run_kpis(kpi.per_rank(last), last, {})
    w = snap["window"]
    for key in ("step_time_s", "comm_fraction", "exposed_comm_fraction", "bytes_per_step"):
        assert w[key] == pytest.approx(want[key], rel=1e-9), key
    assert w["steps_done"] == 120


def test_values_grow_while_the_run_grows(grown):
    _, _, _, seen, _ = grown
    sums = [sum(sum(r["totals"].bytes.values()) for r in s["ranks"]) for s in seen]
    comm = [sum(r["totals"].comm_ns for r in s["ranks"]) for s in seen]
    assert sums == sorted(sums) and sums[-1] > sums[2] > 0
    assert comm == sorted(comm) and comm[-1] > comm[2] > 0


def test_the_panel_and_the_line_show_the_window(grown):
    run, _, snap, _, _ = grown
    snap = dict(snap, launcher_cpu_fraction=0.01)
    text = "\n".join(f"{a} {b}" for a, b in lines(snap))
    assert "in flight" in text and "exposed" in text and "per step per rank" in text
    assert "all_reduce" in text
    line = one_line(snap, ["HANG: a collective has been pending for 9.0 s"])
    assert line.startswith("live: ") and "step 120" in line and "HANG" in line
    from rich.console import Console
    console = Console(width=120, record=True, file=open("/dev/null", "w"))
    console.print(render(snap, str(run)))
    assert "commprof live" in console.export_text()


def test_bucket_names():
    assert [bucket_name(b) for b in (0, 3, 10, 20, 21, 30)] == ["1B", "8B", "1KiB", "1MiB", "2MiB", "1GiB"]
