"""GPU windows end to end on this CPU machine (issue 15, item 4): a real 2-rank gloo torchrun job
under ``commprof run`` with the test hook COMMPROF_GPU_ACTIVITY=cpu (Kineto's CPU activity in place
of CUDA's, so windows open on a CPU job and record CPU ops as category "cpu").

* the windows open and close at the intended steps (the records' ``step`` values);
* the capture holds the records, and the report counts the windows' cost;
* a job running its own torch.profiler gets its trace whole, and commprof says it yielded;
* Kineto's JSON is kept only with ``--gpu-trace``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from commprof.analysis.host.load import load_run, open_run
from commprof.format import layout
from runner import commprof, report_json, torchrun

pytestmark = pytest.mark.slow
JOB = Path(__file__).resolve().parents[1] / "jobs" / "gpu_windows_job.py"
CPU_HOOK = {"COMMPROF_GPU_ACTIVITY": "cpu"}


def _run(tmp_path, name, *job_args, flags=()):
    run = tmp_path / name
    proc = commprof("run", "--out", str(run), "--gpu-windows", "2/5@3", *flags, "--",
                    *torchrun(JOB, *map(str, job_args)), env=CPU_HOOK)
    assert proc.returncode == 0, proc.stderr
    return run


def test_windows_open_and_close_at_the_intended_steps(tmp_path):
    run = _run(tmp_path, "plain", 12)  # steps 0-11; windows due at steps 3 and 8 (13 never comes)
    data = load_run(run)
    g = data.gpu_activity
    assert set(g["rank"]) == {0, 1} and set(g["category"].astype(str)) == {"cpu"}
    for rank in (0, 1):
        mine = g[g["rank"] == rank]
        steps = {w: sorted(set(s["step"])) for w, s in mine.groupby("window")}
        assert steps == {0: [3, 4], 1: [8, 9]}, (rank, steps)
        assert "aten::mm" in set(mine["name"].astype(str)) or "aten::addmm" in set(mine["name"].astype(str))
    windows = [rd.gpu_windows for rd in open_run(run).iter_ranks()]
    for w in windows:
        assert w["status"].tolist() == ["recorded", "recorded"]
        assert w["end_reason"].tolist() == ["scheduled", "scheduled"]
        assert w["steps_ended"].tolist() == [2, 2] and w["trace"].isna().all()
    # every record lies inside its window, on the capture's clock (the marks' steps agree)
    opt = data.marks[data.marks["kind"] == 1].sort_values("t")
    for rank in (0, 1):
        ends = opt[opt["rank"] == rank]["t"].tolist()  # end of step k = ends[k]
        mine = g[g["rank"] == rank]
        assert (mine["start_ns"] > ends[2]).all() and (mine[mine["window"] == 0]["start_ns"] <= ends[4]).all()
        assert (mine[mine["window"] == 1]["start_ns"] > ends[7]).all()
    assert not layout.kineto_dir(run).exists()  # no JSON unless asked
    doc = report_json(run)
    assert doc["overhead"]["gpu_windows"] == 4 and doc["overhead"]["gpu_window_s_per_rank"] > 0
    assert not [n for n in doc["note_items"] if n["kind"] == "gpu_windows"]


def test_the_jobs_own_profiler_is_unaffected_and_commprof_yields(tmp_path):
    out = tmp_path / "user"
    out.mkdir()
    # the job profiles steps 4-9 itself: window 0 (steps 3-4) is cut at step 4, window 1 (8-9) skipped
    run = _run(tmp_path, "user", 12, 4, 9, out, flags=("--gpu-trace",))
    for rank in (0, 1):
        trace = json.loads((out / f"user.rank{rank}.json").read_text())
        names = [e.get("name") for e in trace["traceEvents"]]
        assert names.count("Optimizer.step#SGD.step") == 6  # one per profiled step, 4-9
        assert sum(str(n).startswith("aten::") for n in names) > 100
    g = load_run(run).gpu_activity
    assert sorted(set(g["window"])) == [0] and sorted(set(g["step"])) == [3]
    for rd in open_run(run).iter_ranks():
        w = rd.gpu_windows
        assert w[["window", "status"]].values.tolist() == [[0, "recorded"], [1, "skipped"]]
        assert w["end_reason"].tolist()[0] == "yielded" and "profiler" in w["why"].tolist()[1]
        assert rd.process["gpu_windows_yielded"] == 1
    kept = layout.kineto_traces(run)
    assert [p.name.split(".")[0] for p in kept] == ["rank00000", "rank00001"]
    assert all(p.name.endswith(".w0.pt.trace.json") for p in kept)  # the recorded window only
    assert any(e.get("name", "").startswith("aten::") for e in json.loads(kept[0].read_text())["traceEvents"])
    doc = report_json(run)
    note = [n for n in doc["note_items"] if n["kind"] == "gpu_windows"]
    assert note and "yielded to the job's own torch.profiler" in note[0]["text"]
