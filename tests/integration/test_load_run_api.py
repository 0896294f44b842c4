"""``commprof.load_run``: the documented frames of a real demo run (docs/data.md), lazily built, and
the report's headline numbers re-computed from those frames alone (definitions: docs/kpis.md)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import commprof
from commprof.analysis.outcome import frames as frames_mod
from commprof.analysis.host import load
from commprof.errors import RunDirError
from demo_run import capture_of_rank, end_of_last_record

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from demo_run import demo_run
    return demo_run(tmp_path_factory)


@pytest.fixture(scope="module")
def report(run_dir):
    from demo_run import shared_report
    return shared_report(run_dir)


@pytest.fixture(scope="module")
def run(run_dir):
    return commprof.load_run(run_dir)


def test_every_frame_has_its_documented_columns_and_dtypes(run):
    doc = (ROOT / "docs" / "data.md").read_text()
    for name in frames_mod.FRAMES:
        df = run.frame(name)
        assert {c: str(t) for c, t in df.dtypes.items()} == frames_mod.COLUMNS[name], name
        section = doc.split(f"### `{name}`", 1)
        assert len(section) == 2, f"docs/data.md has no section for {name}"
        body = section[1].split("\n### ", 1)[0]
        documented = set(re.findall(r"^\| `([^`]+)` \|", body, flags=re.M))
        assert documented == set(frames_mod.COLUMNS[name]), (name, documented ^ set(frames_mod.COLUMNS[name]))
    assert len(run.calls) and len(run.steps) and len(run.ranks) == 2 and len(run.ops)
    assert len(run.gpu_kernels) == 0 and len(run.hang) == 0  # CPU run, no hang: empty, with columns
    assert run.complete


def _union(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(starts, kind="stable")
    out_s, out_e = [], []
    for s, e in zip(starts[order], ends[order]):
        if out_s and s <= out_e[-1]:
            out_e[-1] = max(out_e[-1], e)
        else:
            out_s.append(s)
            out_e.append(e)
    return np.asarray(out_s), np.asarray(out_e)


def _covered(us: np.ndarray, ue: np.ndarray, a: float, b: float) -> float:
    return float(np.clip(np.minimum(ue, b) - np.maximum(us, a), 0, None).sum())


def _bus_factor(op: str, n: int) -> float:
    if op in ("all_reduce", "all_reduce_coalesced"):
        return 2 * (n - 1) / n if n > 1 else 0.0
    if op in ("broadcast", "reduce", "send", "recv"):
        return 1.0
    if op in ("all_gather", "all_gather_coalesced", "reduce_scatter", "reduce_scatter_coalesced",
              "all_to_all", "gather", "scatter"):
        return (n - 1) / n if n > 1 else 0.0
    return 0.0


def test_bytes_per_step_comm_fraction_and_busbw_from_the_frames_alone(run, report):
    calls, steps, waits = run.calls, run.steps, run.waits
    meas = steps[steps["measured"]]
    assert len(meas) and meas.groupby("rank").size().min() >= 2
    # bytes per step: Σ S of the calls issued in each measured step, mean over every rank's steps
    per_step = (calls.dropna(subset=["step"]).astype({"step": "int64"})
                .groupby(["rank", "step"])["bytes"].sum())
    idx = pd.MultiIndex.from_frame(meas[["rank", "step"]])
    bytes_per_step = per_step.reindex(idx, fill_value=0).mean()
    assert bytes_per_step == pytest.approx(report["kpis"]["bytes_per_step"], rel=1e-9)
    # comm fraction: in-flight union (calls' [t_issue, t_end], the training thread's blocking
    # calls to the end of their wait, its waits) inside each measured step, Σ ÷ Σ step time
    comm, total = 0.0, 0.0
    for rank, c in calls.groupby("rank"):
        thread = c["thread"].value_counts().idxmax()
        mine = c[c["thread"] == thread]
        w = waits[(waits["rank"] == rank) & (waits["thread"] == thread)]
        blocking = mine[mine["blocking"]]
        starts = np.concatenate([c["t_issue"], blocking["t_issue"], w["t_start"]]).astype("float64")
        ends = np.concatenate([c["t_end"], np.fmax(blocking["t_return"], blocking["wait_end"]),
                               w["t_end"]]).astype("float64")
        us, ue = _union(starts, ends)
        for s in meas[meas["rank"] == rank].itertuples():
            comm += _covered(us, ue, s.t_start, s.t_end)
            total += s.t_end - s.t_start
    assert comm / total == pytest.approx(report["kpis"]["comm_fraction"], rel=1e-6)
    # busbw: Σ bus bytes ÷ Σ (t_end − t_issue) over every call with S > 0 (GB/s = bytes/ns)
    moving = calls[calls["bytes"] > 0]
    bus = sum(b * _bus_factor(str(op), int(n))
              for b, op, n in zip(moving["bytes"], moving["op"], moving["group_size"]))
    busbw = bus / float((moving["t_end"] - moving["t_issue"]).sum())
    assert busbw == pytest.approx(report["kpis"]["busbw_gbps"], rel=1e-9)
    # and the per-op table is the report's
    ops = run.ops.set_index("op")
    for row in report["ops"]:
        assert ops.loc[row["op"], "count"] == pytest.approx(row["count"])


def test_frames_are_built_only_when_asked_for(run_dir, monkeypatch):
    reads, builds = [], []
    real_read, real_build = load.read_rank, frames_mod.build_calls
    monkeypatch.setattr(load, "read_rank", lambda p: reads.append(p) or real_read(p))
    monkeypatch.setattr(frames_mod, "build_calls", lambda d: builds.append(1) or real_build(d))
    r = commprof.load_run(run_dir)
    assert r.built == [] and reads == []  # opening reads the headers, no capture
    assert len(r.hang.columns) and reads == []  # hang.json only
    steps = r.steps
    assert r.built == ["hang", "steps"] and builds == [] and len(reads) == 2  # each capture once
    assert r.calls is r.calls and builds == [1] and len(reads) == 2  # cached, captures not re-read
    assert r.built == ["hang", "steps", "calls"] and r.steps is steps


def test_calls_carry_the_step_of_their_issue(run):
    c = run.calls.dropna(subset=["step"])
    s = run.steps.set_index(["rank", "step"])
    win = s.loc[list(zip(c["rank"], c["step"].astype("int64")))]
    assert (c["t_issue"].to_numpy() > win["t_start"].to_numpy()).all()
    assert (c["t_issue"].to_numpy() <= win["t_end"].to_numpy()).all()
    assert set(run.calls["op"].astype(str)) >= {"all_reduce", "broadcast"}
    # one all_reduce instance per (group, seq) on each of the two ranks
    ar = run.calls[run.calls["op"] == "all_reduce"]
    assert ar.groupby(["group", "seq"], observed=True).size().eq(2).all()


def test_hang_frame_from_a_hang_report():
    hang = {"blocked": [{"op": {"op": "all_reduce"}, "waiting_ranks": [0], "never_arrived": [1],
                         "not_captured": []}],
            "ranks": [{"rank": 0, "host": "a", "pid": 7, "exited": False, "pending_count": 1,
                       "last_completed": {"op": "broadcast", "group": "0", "seq": 3},
                       "pending": [{"op": "all_reduce", "group": "0", "seq": 4, "bytes": 8,
                                    "age_s": 12.5}], "last_record_age_s": 1.0},
                      {"rank": 1, "host": "b", "pid": 8, "exited": True, "pending_count": 0,
                       "last_completed": None, "pending": [], "last_record_age_s": None}]}
    df = frames_mod.conform(frames_mod.hang_frame(hang), frames_mod.HANG_COLUMNS)
    assert df["state"].tolist() == ["waiting", "never_arrived"]
    assert df.loc[0, "pending_seq"] == 4 and df.loc[0, "pending_age_s"] == 12.5
    assert pd.isna(df.loc[1, "pending_seq"]) and df.loc[1, "exited"]


def test_importing_commprof_stays_light():
    code = "import commprof, sys; print(sorted(m for m in ('pandas', 'torch', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_run_is_one_clear_error(tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"):
        commprof.load_run(tmp_path / "nope")


def test_a_run_still_being_written_loads_what_was_flushed(run_dir, run, tmp_path):
    import json
    import shutil
    live = tmp_path / "live"
    shutil.copytree(run_dir, live)
    manifest = json.loads((live / "manifest.json").read_text())
    manifest["status"] = "running"
    (live / "manifest.json").write_text(json.dumps(manifest))
    capture = capture_of_rank(live, 1)
    data = capture.read_bytes()
    end = end_of_last_record(capture)
    capture.write_bytes(data[:end - 1])  # the last collective torn, as a flush in progress leaves it
    r = commprof.load_run(live)
    assert not r.complete
    assert any("has not finished" in n for n in r.notes)
    calls = r.calls
    assert (calls["rank"] == 1).sum() == (run.calls["rank"] == 1).sum() - 1
    assert (calls["rank"] == 0).sum() == (run.calls["rank"] == 0).sum()
    assert any("records before it were kept" in n for n in r.notes)
    assert len(r.steps) and not bool(r.ranks.set_index("rank").loc[1, "complete"])
