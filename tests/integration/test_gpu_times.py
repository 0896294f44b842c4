"""GPU-side NCCL times through PyTorch's Flight Recorder: draining, matching, reporting.

No GPU here: `tests/data/gpu/fr_nccl_constructed.json` is a dump *constructed* to the schema of a
real dump (labelled in the file); the drain itself also runs against torch's real Flight Recorder
on gloo (no timing there, but the same buffer, record ids and loss accounting).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from commprof.analysis.gpu import gpu_times
from commprof.capture.flight_recorder import Drain
from runner import HERE, commprof, report_json, torchrun
from synthetic import MS, Coll, Rank, write_run

FIXTURE = json.loads((Path(__file__).parents[1] / "data" / "gpu" / "fr_nccl_constructed.json").read_text())


class Rec:
    def __init__(self):
        self.json = []
        self.closing = True


def test_drain_keeps_timed_final_entries_and_defers_running_ones():
    rec = Rec()
    drain = Drain(rec, None, dump=lambda a, b: json.dumps(FIXTURE), backends={"nccl"})
    drain()
    (frame,) = rec.json
    assert [e["record_id"] for e in frame["entries"]] == [10, 11, 12, 13, 14]  # 15 still running
    assert frame["lost"] == 10  # record ids 0..9 were gone before the first read
    assert frame["entries"][0]["duration_ms"] == 2.0
    # the running entry completes: the next read takes it and nothing else
    done = json.loads(json.dumps(FIXTURE))
    done["entries"][-1].update(state="completed", retired=True, duration_ms=2.5)
    drain.dump = lambda a, b: json.dumps(done)
    drain()
    assert [e["record_id"] for e in rec.json[-1]["entries"]] == [15]
    assert rec.json[-1]["seen"] == 6 and rec.json[-1]["lost"] == 10


def test_drain_reads_only_when_useful_and_costs_nothing_otherwise():
    calls = []
    rec = Rec()
    rec.closing = False
    drain = Drain(rec, None, dump=lambda a, b: calls.append(1) or json.dumps(FIXTURE),
                  backends={"gloo"})
    drain()
    assert calls == []  # gloo only: never read
    drain.backends.add("nccl")
    drain()
    assert calls == []  # NCCL, but not the final flush and no interval: not yet
    rec.closing = True
    drain()
    assert calls == [1]
    t = [0.0]
    periodic = Drain(Rec(), None, dump=lambda a, b: calls.append(2) or json.dumps(FIXTURE),
                     backends={"nccl"}, interval_s=5, clock=lambda: t[0])
    periodic.rec.closing = False
    periodic(); t[0] = 1; periodic(); t[0] = 6; periodic()
    assert calls.count(2) == 2


def test_entries_match_records_by_group_op_and_time():
    fr, stats = gpu_times.fr_frame([{"type": "fr", "seen": 6, "lost": 0,
                                     "entries": [e for e in FIXTURE["entries"] if e["duration_ms"]]}])
    assert list(fr["op"].unique()) == ["all_reduce"] and len(fr) == 5
    base = FIXTURE["entries"][0]["time_created_ns"]
    coll = pd.DataFrame({"group": [0, 0, 0], "op": ["all_reduce"] * 3,
                         "t_issue": [base + 3 * 100_000_000 - 50_000, base + 1_000, base + 7e9]})
    got = gpu_times.attach(coll, fr, {0: "0"}, wall_minus_mono=0.0)
    assert got.iloc[0] == pytest.approx(2.3e6) and got.iloc[1] == pytest.approx(2.0e6)
    assert np.isnan(got.iloc[2])  # no entry within the tolerance


def test_report_uses_gpu_times_and_says_so(tmp_path):
    ranks = []
    for r in (0, 1):
        colls = [Coll("all_reduce", n=2, in_bytes=4_000_000, t_issue=k * 100 * MS, t_done=k * 100 * MS + 30 * MS)
                 for k in range(4)]
        entries = [{"record_id": k, "process_group": ["0", "default_pg"], "collective_seq_id": k + 1,
                    "p2p_seq_id": 0, "is_p2p": False, "profiling_name": "nccl:all_reduce",
                    "time_created_ns": k * 100 * MS + 10_000, "duration_ms": 4.0, "state": "completed"}
                   for k in range(4)]
        ranks.append(Rank(r, collectives=colls, backend="nccl",
                          events=[{"type": "fr", "seen": 4, "lost": 1, "entries": entries}]))
    run = write_run(tmp_path / "run", ranks)
    doc = report_json(run, "--warmup", "0")
    (op,) = doc["ops"]
    assert op["time_source"] == "host + gpu"
    assert op["gpu_time_s"] == pytest.approx(4 * 4e-3)  # per rank: 4 calls x 4 ms
    assert op["gpu_busbw_gbps"] == pytest.approx(4_000_000 / 4e-3 / 1e9)  # bus factor 1 for n=2
    assert op["time_s"] == pytest.approx(4 * 30e-3)  # host: issue -> completion
    g = doc["run"]["gpu_timing"]
    assert g["calls_with_gpu_time"] == 8 and g["fr_entries_lost"] == 2
    assert any("Flight Recorder overwrote 2 entries" in n for n in doc["notes"])


@pytest.mark.slow
def test_the_drain_reads_torchs_real_flight_recorder_and_counts_losses(tmp_path):
    """gloo on CPU: real Flight Recorder entries (no GPU timing), a ring of 16 for 300 ops."""
    run = tmp_path / "run"
    proc = commprof("run", "-q", "--out", str(run), "--", *torchrun(HERE / "jobs" / "allreduce_loop.py", "300", "64"),
                    env={"TORCH_FR_BUFFER_SIZE": "16", "COMMPROF_FR_DRAIN": "1"})
    assert proc.returncode == 0, proc.stderr
    doc = report_json(run, "--warmup", "0")
    g = doc["run"]["gpu_timing"]
    # 300 all_reduces + commprof's 14 clock-probe barriers per rank reached the ring
    assert g["fr_entries_seen"] + g["fr_entries_lost"] == 2 * 314
    assert g["fr_entries_lost"] > 0 and g["calls_with_gpu_time"] == 0
    assert doc["ops"][0]["time_source"] == "host"
