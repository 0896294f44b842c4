"""``commprof run --live`` in a real terminal (tmux): the panel appears, updates, and gives way to
the closing lines when the job ends."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import commprof.examples
from runner import torchrun

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]
DEMO = Path(commprof.examples.__file__).parent / "demo_train.py"


def capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True).stdout


def test_the_panel_updates_in_a_terminal(tmp_path):
    session = f"commprof-live-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "run"
    job = [sys.executable, "-m", "commprof", "run", "--out", str(out), "--live", "--",
           *torchrun(DEMO, "--steps", "40")]
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
            time.sleep(0.5)
        final = capture(session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert "EXIT=0" in final, final
    assert len(panels) >= 2, panels  # it updated
    first, last = panels[0], panels[-1]
    assert "communication" in last and "in flight" in last and "exposed" in last
    done = [int(p.split(" done")[0].split()[-1]) for p in (first, last)]
    assert done[1] > done[0]
    # the panel gave way to the closing lines
    assert "commprof: final live:" in final and "next: commprof report" in final
    assert "commprof live" not in final.split("commprof: final live:")[1]
    (tmp_path / "panel.txt").write_text(max(panels, key=lambda p: p.count("\n") + len(p)))
