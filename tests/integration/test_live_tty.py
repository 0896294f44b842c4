"""``commprof run --live`` in a real terminal (tmux): the panel appears, updates, and gives way to
the closing lines when the job ends."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from runner import torchrun

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]
# A DDP job that trains until the test says it has seen the panel update (a release file), so
# the number of refreshes does not depend on how fast a loaded machine runs a fixed step count.
UNTIL_RELEASED = """
import os, sys, time
import torch, torch.distributed as dist
dist.init_process_group("gloo")
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(256, 256))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
release, deadline = sys.argv[1], time.monotonic() + 120
while True:
    stop = torch.tensor([float(os.path.exists(release) or time.monotonic() > deadline)])
    dist.all_reduce(stop)  # every rank stops after the same step
    if stop.item():
        break
    model(torch.randn(32, 256)).sum().backward()
    opt.step()
    opt.zero_grad()
    time.sleep(0.05)
dist.destroy_process_group()
"""


def capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True).stdout


def _done(panel: str) -> int:
    """The step count the panel shows ("... N done")."""
    return int(panel.split(" done")[0].split()[-1])


def test_the_panel_updates_in_a_terminal(tmp_path):
    session = f"commprof-live-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "run"
    script, release = tmp_path / "until_released.py", tmp_path / "release"
    script.write_text(UNTIL_RELEASED)
    job = [sys.executable, "-m", "commprof", "run", "--out", str(out), "--live", "--",
           *torchrun(script, str(release))]
    # the job's own stdout goes to a file: the panel shares the terminal with stderr only
    line = f"{shlex.join(job)} > {tmp_path / 'job.out'}; echo EXIT=$?; sleep 600"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "40", line],
                   check=True)
    try:
        panels, deadline = [], time.monotonic() + 150
        while time.monotonic() < deadline:
            text = capture(session)
            if "EXIT=" in text:
                break
            if "commprof live" in text and "done" in text and (not panels or text != panels[-1]):
                panels.append(text)
                if _done(panels[-1]) > _done(panels[0]):
                    release.touch()  # it updated: let the job end
            time.sleep(0.5)
        final = capture(session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert "EXIT=0" in final, final
    assert len(panels) >= 2, panels  # it updated
    first, last = panels[0], panels[-1]
    assert "communication" in last and "in flight" in last and "exposed" in last
    assert _done(last) > _done(first)
    # the panel gave way to the closing lines
    assert "commprof: final live:" in final and "next: commprof report" in final
    assert "commprof live" not in final.split("commprof: final live:")[1]
    (tmp_path / "panel.txt").write_text(max(panels, key=lambda p: p.count("\n") + len(p)))
