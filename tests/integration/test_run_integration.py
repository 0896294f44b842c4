"""`commprof run` / `commprof demo` end to end: injection, chain-loading, warnings, the demo."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from runner import commprof, report_json

pytestmark = pytest.mark.slow


def test_user_sitecustomize_is_chain_loaded(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['USER_SITE_RAN'] = '1'\n")
    script = tmp_path / "job.py"
    script.write_text("import os, torch\nprint('user site:', os.environ.get('USER_SITE_RAN'))\n"
                      "import commprof.capture.agent as a\nprint('agent:', a._agent is not None)\n")
    proc = commprof("run", "--out", str(tmp_path / "run"), "--", sys.executable, str(script),
                    env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    assert "user site: 1" in proc.stdout
    assert "agent: True" in proc.stdout


def test_isolated_python_is_warned_about(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import torch\n")
    proc = commprof("run", "--out", str(tmp_path / "run"), "--", sys.executable, "-I", str(script))
    assert proc.returncode == 0
    assert "isolated mode ignores PYTHONPATH" in proc.stderr
    assert "no process was captured" in proc.stderr


def test_run_prints_the_next_command(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import torch\np = torch.nn.Parameter(torch.zeros(1))\n"
                      "torch.optim.SGD([p], lr=1).step()\n")
    run = tmp_path / "run"
    proc = commprof("run", "--out", str(run), "--", sys.executable, str(script))
    assert proc.returncode == 0, proc.stderr
    assert f"next: commprof report {run}" in proc.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["exit_code"] == 0
    assert manifest["schema"] == "commprof.run/1"


def test_demo_runs_and_reports(tmp_path):
    run = tmp_path / "demo"
    proc = commprof("demo", "--out", str(run), "--steps", "12", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "bytes synchronized" in proc.stdout and "Collectives" in proc.stdout
    doc = report_json(run)
    assert doc["steps"]["count"] == 12
    assert doc["run"]["world_size"] == 2 and doc["run"]["backend"] == "gloo"
    # the demo's MLP: 256->1024->1024->1024->10, float32 gradients all-reduced every step
    grad_bytes = 4 * ((256 * 1024 + 1024) + 2 * (1024 * 1024 + 1024) + (1024 * 10 + 10))
    assert doc["kpis"]["bytes_per_step"] == grad_bytes


def test_explicit_step_api_in_a_real_process(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import time, torch, commprof\n"
                      "for _ in range(4):\n"
                      "    with commprof.step_scope():\n"
                      "        time.sleep(0.05)\n"
                      "    time.sleep(0.10)  # evaluation: outside every step\n")
    run = tmp_path / "run"
    proc = commprof("run", "--out", str(run), "--", sys.executable, str(script))
    assert proc.returncode == 0, proc.stderr
    doc = report_json(run, "--warmup", "0")
    assert doc["steps"]["count"] == 4 and doc["steps"]["source"] == "explicit"
    assert 0.05 <= doc["steps"]["median_s"] < 0.08


def test_step_api_is_a_no_op_without_commprof(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import commprof\ncommprof.step()\nwith commprof.step_scope():\n    pass\n"
                      "print('fine')\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "fine\n", proc.stderr
