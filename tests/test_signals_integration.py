"""Signals reach the job as without commprof; DataLoader workers are not captured as ranks."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from commprof.analysis.links import read_node_samples
from commprof.format.reader import read_capture
from runner import commprof, report_json, torchrun

pytestmark = pytest.mark.slow

HANDLER_JOB = """
import signal, sys, time, torch
def on(sig, frame):
    print(f"job got signal {sig}", flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, on)
print("ready", flush=True)
try:
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
