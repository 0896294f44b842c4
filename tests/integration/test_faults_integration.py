"""Injected failures inside commprof never change the job: same results, same exit status."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from runner import HERE, commprof, kill_if_alive, report_json, torchrun, wait_until_ended
from test_capture_coverage import require_native

pytestmark = pytest.mark.slow
JOB = HERE / "fault_jobs" / "ddp_checksum.py"


def _lines(text: str) -> list[str]:
    return sorted(l for l in text.splitlines() if l.startswith("rank "))


@pytest.fixture(scope="module")
def plain():
    proc = subprocess.run(torchrun(JOB), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(_lines(proc.stdout)) == 2
    return proc


def test_failing_hooks_are_recorded_and_change_nothing(tmp_path, plain):
    run = tmp_path / "run"
    proc = commprof("run", "--out", str(run), "--", *torchrun(JOB),
                    env={"COMMPROF_FAULT": "collective,steps"})
    assert proc.returncode == 0, proc.stderr
    assert _lines(proc.stdout) == _lines(plain.stdout)  # bit-identical training results
    doc = report_json(run)
    where = {(d["rank"], d["where"]) for d in doc["degraded"]}
    assert where == {(r, w) for r in (0, 1) for w in ("collective", "optimizer_hook")}
    assert all(d["count"] >= 8 for d in doc["degraded"])
    text = commprof("report", str(run)).stdout
    assert "commprof degraded on rank 0: collective failed" in text


@pytest.mark.parametrize("capture", ["python", "native"])
def test_disk_full_stops_recording_not_the_job(tmp_path, plain, capture):
    if capture == "native":  # its region grows in C++: the fault is injected there
        require_native()
    run = tmp_path / "run"
    proc = commprof("run", "--capture", capture, "--out", str(run), "--flush-interval", "0.05", "--",
                    *torchrun(JOB), env={"COMMPROF_FAULT": "writer"})
    assert proc.returncode == 0, proc.stderr
    assert "native capture unavailable" not in proc.stderr
    assert _lines(proc.stdout) == _lines(plain.stdout)
    assert proc.stderr.count("commprof: stopped recording in pid") == 2
    assert "No space left on device" in proc.stderr
    doc = report_json(run)  # what was written before the failure is still readable
    # a full disk is named, not taken for deaths (issue 26 item 9): each rank's capture says why
    # it stopped (a marker beside the file, or a frame), and the report shows it under degraded
    assert doc["run"]["incomplete_ranks"] == []
    ranks = {r["rank"]: r for r in doc["ranks"]}
    assert all(ranks[r]["exit_reason"] == "capture stopped: ENOSPC (No space left on device)"
               for r in (0, 1)), ranks
    stopped = {d["rank"] for d in doc["degraded"] if d["where"] == "capture"}
    assert stopped == {0, 1} and all("ENOSPC" in d["error"] for d in doc["degraded"]
                                     if d["where"] == "capture")
    text = " ".join(commprof("report", str(run)).stdout.split())
    assert "died?" not in text and "has not finished" not in text
    assert text.count("capture stopped: ENOSPC") >= 2, text


@pytest.mark.parametrize("how", ["exit", "kill", "segv"])
def test_a_rank_that_dies_keeps_its_records_and_is_marked(tmp_path, how):
    run = tmp_path / "run"
    proc = commprof("run", "--out", str(run), "--flush-interval", "0.1", "--",
                    *torchrun(HERE / "fault_jobs" / "rank_dies.py", how), timeout=300)
    assert proc.returncode != 0  # torchrun reports the failed worker
    doc = report_json(run, "--warmup", "0")
    ranks = {r["rank"]: r for r in doc["ranks"]}
    assert not ranks[1]["complete"] and ranks[1]["last_record_s"] > 0
    assert ranks[1]["steps_total"] == 4  # everything flushed before the death is there
    assert doc["run"]["incomplete_ranks"] == [1]
    # rank 0 was stopped by torchrun's SIGTERM and flushed on the way out
    assert ranks[0]["complete"] and ranks[0]["exit_reason"] == "SIGTERM"
    assert ranks[0]["steps_total"] >= 4
    text = commprof("report", str(run)).stdout
    assert "incomplete (died?, last record at" in " ".join(text.split())



def test_a_rank_that_raises_is_marked_with_the_exception(tmp_path):
    """An uncaught exception: the trailer says so (not "exit"), the job's traceback and exit
    status are what Python and torchrun make of it without commprof."""
    run = tmp_path / "run"
    proc = commprof("run", "--out", str(run), "--flush-interval", "0.1", "--",
                    *torchrun(HERE / "fault_jobs" / "rank_dies.py", "raise"), timeout=300)
    assert proc.returncode == 1, proc.stderr  # torchrun: a worker failed
    assert "ValueError: rank 1 gives up on purpose" in proc.stderr  # Python's own hook ran
    doc = report_json(run, "--warmup", "0")
    ranks = {r["rank"]: r for r in doc["ranks"]}
    assert ranks[1]["complete"] and ranks[1]["exit_reason"] == "exception: ValueError"
    assert ranks[1]["steps_total"] == 4
    assert ranks[0]["exit_reason"] == "SIGTERM"
    rows = [l for l in commprof("report", str(run)).stdout.splitlines() if "ValueError" in l]
    assert rows, "the terminal report names the exception in rank 1's status"


HANG_JOB = HERE / "fault_jobs" / "hang_job.py"


def test_hang_is_reported_and_the_job_stopped_with_kill_on_hang(tmp_path):
    run = tmp_path / "run"
    before = 3  # all-reduces every rank completes before rank 2 stops coming
    proc = commprof("run", "--out", str(run), "--flush-interval", "0.2", "--hang-timeout", "2",
                    "--kill-on-hang", "--", *torchrun(HANG_JOB, "2", "600", str(before), nproc=3),
                    timeout=120)
    assert proc.returncode != 0, proc.stderr  # stopped, not finished
    assert "HANG:" in proc.stderr and "--kill-on-hang: sending SIGTERM" in proc.stderr
    hang = json.loads((run / "hang.json").read_text())
    (blocked,) = hang["blocked"]
    assert blocked["op"]["op"] == "all_reduce" and blocked["op"]["seq"] == before
    assert blocked["op"]["bytes"] == 262144 * 4
    assert blocked["waiting_ranks"] == [0, 1] and blocked["never_arrived"] == [2]
    assert hang["killed"] == "SIGTERM"
    last = {r["rank"]: r["last_completed"]["seq"] for r in hang["ranks"]}
    assert last == {0: before - 1, 1: before - 1, 2: before - 1}
    doc = report_json(run, "--warmup", "0")
    assert doc["hang"]["blocked"] == hang["blocked"]
    assert "hang detected; the job was stopped (SIGTERM)" in commprof("report", str(run)).stdout


def test_a_late_rank_is_reported_but_the_job_left_alone(tmp_path):
    run = tmp_path / "run"
    proc = commprof("run", "--out", str(run), "--flush-interval", "0.2", "--hang-timeout", "2",
                    "--", *torchrun(HANG_JOB, "1", "5", "2"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(l for l in proc.stdout.splitlines() if l.endswith("done")) == \
        ["rank 0 done", "rank 1 done"]
    assert "HANG:" in proc.stderr and "the stuck collectives finished" in proc.stderr
    hang = json.loads((run / "hang.json").read_text())
    blocked = hang["blocked"][0]
    # rank 1 stays named: never arrived, or (its record reached disk before the others'
    # completions, in the same episode) arrived late
    assert sorted(blocked["never_arrived"] + blocked.get("arrived_late", [])) == [1]
    assert "killed" not in hang
    assert hang["resolved_wall_ns"] > hang["detected_wall_ns"]


def test_kill_on_hang_ends_every_worker_and_gives_no_verdict(tmp_path):
    """Workers in their own sessions (torchrun's start_new_session), one ignoring SIGTERM: every
    one is gone soon after the hang report, the ranks say commprof killed them, and the closing
    line gives no performance verdict."""
    run, pid_dir = tmp_path / "run", tmp_path / "pids"
    pid_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "commprof", "run", "--out", str(run), "--hang-timeout", "5",
         "--kill-on-hang", "--", *torchrun(HERE / "fault_jobs" / "blocked_job.py", str(pid_dir),
                                          "1", "2", "deaf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:  # the job's stderr and commprof's lines, as they come
            lines.append(line)
            if "HANG:" in line:
                break
        hang_at = time.monotonic()
        assert lines and "HANG:" in lines[-1], "".join(lines)
        pids = [int((pid_dir / f"rank{r}.pid").read_text()) for r in (0, 1)]
        alive = wait_until_ended(pids, 15, since=hang_at)
        assert not alive, f"workers {alive} still alive 15 s after the hang report"
        lines.extend(proc.stderr)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid_file in pid_dir.glob("rank*.pid"):
            kill_if_alive(int(pid_file.read_text()))
    err = "".join(lines)
    assert proc.returncode == 124, err  # stopped by commprof (docs/hangs.md)
    # The deaf rank needed SIGKILL and is named; rank 0 ended at SIGTERM.  (torchrun, waiting
    # 30 s for its deaf worker, may be named too: it also outlived the SIGTERM.)
    killed = [l for l in lines if "outlived SIGTERM: sent SIGKILL" in l]
    assert len(killed) == 1, err
    named = {int(p) for p in killed[0].rsplit("(pid ", 1)[1].rstrip(")\n").split(", ")}
    assert pids[1] in named and pids[0] not in named, killed[0]
    hang = json.loads((run / "hang.json").read_text())
    assert hang["killed"] == "SIGKILL"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["hang"]["killed"] == "SIGKILL" and manifest["exit_code"] != 124
    doc = report_json(run, "--warmup", "0")
    closing = [l for l in lines if l.startswith("commprof: ")][-2]  # the line before `next:`
    assert "no performance verdict" in closing
    assert doc["verdict"] not in err
    statuses = {r["rank"]: r for r in doc["ranks"]}
    assert statuses[0]["exit_reason"] == "SIGTERM" and not statuses[1]["complete"]
    text = " ".join(commprof("report", str(run)).stdout.split())
    assert "killed by commprof after hang (SIGTERM)" in text  # rank 0: closed its capture
    assert "killed by commprof after hang (SIGKILL)" in text  # rank 1 ignored SIGTERM


def test_steps_that_stop_with_nothing_pending_are_reported(tmp_path):
    """A deadlock outside communication leaves no collective pending: the step watch says so
    (once), and again when the steps resume; the job is left alone."""
    run, release = tmp_path / "run", tmp_path / "release"
    proc = subprocess.Popen(
        [sys.executable, "-m", "commprof", "run", "--out", str(run), "--flush-interval", "0.2",
         "--hang-timeout", "2", "--sample-hz", "0", "--no-node-summary", "--",
         *torchrun(HERE / "fault_jobs" / "stall_job.py", str(release))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "STALL:" in line:
                release.touch()
                break
        lines.extend(proc.stderr)
        proc.wait(timeout=120)
    finally:
        release.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(lines)
    assert proc.returncode == 0, err
    (stall,) = [l for l in lines if "STALL:" in l]
    assert "rank 0: step 4" in stall and "rank 1: step 4" in stall
    assert "commprof: training steps resumed" in err
    assert "HANG:" not in err and not (run / "hang.json").exists()
