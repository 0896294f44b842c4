"""A rank that dies at once — SIGKILL from itself, a segfault, an OOM-style SIGKILL from outside —
right after its k-th collective keeps all k records: they went into the capture file's
memory-mapped region (``commprof/format/region.py``) when they were recorded, with no flush in
between (the flusher runs once a second; these jobs kill within milliseconds).  Both capture
paths: the native kernel appends into the same region, in C++ (capture/native/region_writer.cpp)."""
from __future__ import annotations

import pytest

from commprof.analysis.host.load import load_run
from commprof.format.reader import capture_paths, read_capture
from native_kernel import _NATIVE, require_native
from runner import HERE, commprof, report_json, side_by_side, torchrun

pytestmark = pytest.mark.slow
JOB = HERE / "fault_jobs" / "dies_after_k.py"
CASES = [("kill", 3, "python"), ("segv", 5, "python"), ("outside", 7, "python"),
         ("kill", 4, "native"), ("segv", 6, "native"), ("outside", 2, "native")]
# (how rank 1 dies, its collectives before, the capture path)


def _die(base, how: str, k: int, path: str):
    run = base / f"died-{how}-{path}" / "run"
    proc = commprof("run", "--capture", path, "--out", str(run), "--", *torchrun(JOB, how, str(k)),
                    timeout=300)
    return run, k, proc


@pytest.fixture(scope="module")
def every_death(tmp_path_factory):
    """Every case's run, two at a time (runner.side_by_side: the tests count records, never
    time); the native ones where the kernel is built (``died`` skips or fails them otherwise)."""
    base = tmp_path_factory.mktemp("died")
    native = bool(_NATIVE.get("ok"))
    return side_by_side({case: (lambda c=case: _die(base, *c)) for case in CASES
                         if case[2] == "python" or native})


@pytest.fixture(scope="module", params=CASES, ids=[f"{how}-{path}" for how, _, path in CASES])
def died(request, every_death):
    how, k, path = request.param
    if path == "native":
        require_native()
    run, k, proc = every_death[request.param]
    assert proc.returncode != 0, proc.stderr  # torchrun reports the failed worker
    assert "native capture unavailable" not in proc.stderr
    paths = {e["path"] for p in capture_paths(run) for e in read_capture(p).events
             if e.get("event") == "capture_path"}
    assert paths == {path}, paths
    return run, k, proc


def _rank1(run):
    (path,) = [p for p in capture_paths(run) if p.name.startswith("rank00001.")]
    return read_capture(path)


def test_all_k_records_are_in_the_file(died):
    run, k, _ = died
    cap = _rank1(run)
    assert not cap.complete and cap.damage is None  # a zero tail: where it stopped, not damage
    coll = cap.arrays["coll"]
    assert len(coll) == k and coll["seq"].tolist() == list(range(k))
    assert len(cap.arrays["wait"]) == k  # each blocking all_reduce's own wait returned too
    assert [g["desc"] for g in cap.groups] == ["default_pg"]  # the group frame went through too


def test_the_report_counts_k_ops_and_marks_the_rank_incomplete(died):
    run, k, _ = died
    doc = report_json(run, "--warmup", "0")
    ranks = {r["rank"]: r for r in doc["ranks"]}
    assert ranks[1]["ops"] == k and not ranks[1]["complete"]
    assert ranks[1]["last_record_s"] > 0
    assert doc["run"]["incomplete_ranks"] == [1]
    assert ranks[0]["complete"] and ranks[0]["exit_reason"] == "SIGTERM" and ranks[0]["ops"] == k
    assert not [n for n in doc["notes"] if "rank00001" in n]  # no damage note for rank 1's file


def test_its_last_collective_is_the_kth(died):
    run, k, _ = died
    c = load_run(run).collectives
    last = c[c["rank"] == 1].sort_values("t_issue").iloc[-1]
    assert (str(last["op"]), int(last["seq"]), int(last["in_bytes"])) == ("all_reduce", k - 1, 64)
    assert last["t_done"] == last["t_done"]  # completed (not NaN): its wait was recorded


def test_the_report_names_the_last_collective(died):
    run, k, _ = died
    ranks = {r["rank"]: r for r in report_json(run, "--warmup", "0")["ranks"]}
    last = ranks[1]["last_collective"]
    assert (last["op"], last["seq"]) == ("all_reduce", k - 1)
    text = " ".join(commprof("report", str(run)).stdout.split())
    assert f"last collective all_reduce #{k - 1}" in text
