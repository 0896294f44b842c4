"""Signals reach the job as without commprof; DataLoader workers are not captured as ranks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commprof.analysis.host.links import read_node_samples
from commprof.format.reader import read_capture
from runner import HERE, commprof, report_json, torchrun
from test_capture_coverage import require_native

pytestmark = pytest.mark.slow

HANDLER_JOB = """
import signal, sys, time, torch
def on(sig, frame):
    print(f"job got signal {sig}", flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, on)
try:  # "ready" inside the try: the test signals as soon as it reads it, and on a busy machine
    # the job can still be inside print() then (the write woke the reader, which ran first):
    # a KeyboardInterrupt raised as print returns, before the try, ended the job with -SIGINT
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
except KeyboardInterrupt:
    print("job got KeyboardInterrupt", flush=True)
    sys.exit(9)
"""


def _start(tmp_path, script_text):
    script = tmp_path / "job.py"
    script.write_text(script_text)
    proc = subprocess.Popen([sys.executable, "-m", "commprof", "run", "--out", str(tmp_path / "run"),
                             "--", sys.executable, str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("sig, code, line", [(signal.SIGTERM, 7, "job got signal 15"),
                                             (signal.SIGINT, 9, "job got KeyboardInterrupt")])
def test_signal_to_commprof_reaches_the_job(tmp_path, sig, code, line):
    proc = _start(tmp_path, HANDLER_JOB)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert line in out
    assert proc.returncode == code
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["exit_code"] == code
    # The node sampler stopped with the job and closed its file cleanly.
    (samples,) = (tmp_path / "run" / "nodes").glob("*.cps")
    node = read_node_samples(samples)
    assert node.damage is None and node.cost["ticks"] >= 1
    assert read_capture(samples, need_rank=False).trailer["reason"] == "stopped"


def test_job_killed_by_a_signal_kills_commprof_the_same_way(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = commprof("run", "--out", str(tmp_path / "run"), "--", sys.executable, str(script))
    assert proc.returncode == -signal.SIGKILL
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["signal"] == signal.SIGKILL and manifest["status"] == "finished"
    (samples,) = (tmp_path / "run" / "nodes").glob("*.cps")  # closed although the job crashed
    assert read_capture(samples, need_rank=False).trailer["reason"] == "stopped"


DATALOADER_JOB = """
import sys, time, torch, torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

def main():
    dist.init_process_group("gloo")
    ds = TensorDataset(torch.randn(64, 8))
    dl = DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context=sys.argv[1])
    p = torch.nn.Parameter(torch.zeros(8)); opt = torch.optim.SGD([p], lr=0.1)
    for (x,) in dl:
        p.grad = x.mean(0); dist.all_reduce(p.grad); opt.step()
    dist.destroy_process_group(); time.sleep(0.2)

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_dataloader_workers_are_not_captured(tmp_path, ctx):
    script = tmp_path / "job.py"
    script.write_text(DATALOADER_JOB)
    run = tmp_path / "run"
    proc = commprof("run", "--out", str(run), "--", *torchrun(script, ctx), timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in (run / "ranks").glob("*.cpf"))
    assert len(files) == 2, files
    doc = report_json(run)
    assert doc["steps"]["count"] == 8
    assert {o["op"]: o["count"] for o in doc["ops"]}["all_reduce"] == 8


BLOCKED_JOB = HERE / "fault_jobs" / "blocked_job.py"


def _pid_gone(pid: int) -> bool:
    """Ended: no such process, or a zombie waiting for its parent's wait."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _wait_for_pids(pid_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(list(pid_dir.glob("rank*.pid"))) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job never reached its blocking collective"
        time.sleep(0.05)
    return [int((pid_dir / f"rank{r}.pid").read_text()) for r in range(n)]


def _seconds_to_end_a_blocked_rank(tmp_path: Path, capture: str | None) -> float:
    """Rank 1 sleeps, rank 0 waits in all_reduce: seconds from SIGTERM to rank 0 until it ended."""
    pid_dir = tmp_path / f"pids-{capture}"
    pid_dir.mkdir()
    command = torchrun(BLOCKED_JOB, str(pid_dir), "1")
    if capture is not None:
        command = [sys.executable, "-m", "commprof", "run", "--capture", capture, "--quiet",
                   "--no-node-summary", "--sample-hz", "0", "--out", str(tmp_path / f"run-{capture}"),
                   "--"] + command
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        pids = _wait_for_pids(pid_dir, 2, proc)
        time.sleep(0.5)  # rank 0 is inside the all-reduce's wait by now
        start = time.monotonic()
        os.kill(pids[0], signal.SIGTERM)
        while not _pid_gone(pids[0]) and time.monotonic() - start < 60:
            time.sleep(0.01)
        return time.monotonic() - start
    finally:
        for pid_file in pid_dir.glob("rank*.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.communicate(timeout=120)


@pytest.fixture(scope="module")
def plain_seconds(tmp_path_factory):
    """The same SIGTERM to the same blocked rank without commprof (the default action)."""
    return _seconds_to_end_a_blocked_rank(tmp_path_factory.mktemp("plain"), None)


@pytest.mark.parametrize("capture", ["python", "native"])
def test_sigterm_ends_a_rank_blocked_in_a_collective_as_without_commprof(tmp_path, capture,
                                                                         plain_seconds):
    """The worker's SIGTERM handler cannot run while the main thread waits in gloo's C++ code:
    the watcher thread (capture/sigterm.py) closes the capture and ends the process at once."""
    if capture == "native":
        require_native()
    under = _seconds_to_end_a_blocked_rank(tmp_path, capture)
    assert under < plain_seconds + 5.0, (under, plain_seconds)  # was the group's timeout (minutes)
    (rank0,) = [p for p in (tmp_path / f"run-{capture}" / "ranks").glob("*.cpf")
                if read_capture(p).header["rank"] == 0]
    capture_0 = read_capture(rank0)
    assert capture_0.trailer["reason"] == "SIGTERM"  # closed on the way out: nothing lost
    assert capture_0.damage is None
