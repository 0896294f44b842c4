"""Helper processes are not ranks (issue 26 item 7): a torchrun worker that runs a `python -c` making
its own one-process group (launcher variables scrubbed, as a helper script would) is not captured
as a third rank 0; a plain `python` job without a launcher is still captured."""
from __future__ import annotations

import json
import sys

from commprof.format import layout, reader
from runner import commprof, free_port, torchrun

JOB = """
import os, socket, subprocess, sys
import torch, torch.distributed as dist
dist.init_process_group("gloo")
dist.all_reduce(torch.ones(4))
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
helper = ("import torch, torch.distributed as d; "
          "d.init_process_group('gloo', init_method='tcp://127.0.0.1:%d', rank=0, world_size=1); "
          "d.all_reduce(torch.ones(2)); d.destroy_process_group()" % port)
launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
            "MASTER_ADDR", "MASTER_PORT")
env = {k: v for k, v in os.environ.items() if k not in launcher and not k.startswith("TORCHELASTIC")}
subprocess.run([sys.executable, "-c", helper], check=True, env=env)
dist.all_reduce(torch.ones(4))
dist.destroy_process_group()
"""


def test_a_helper_process_of_a_worker_is_not_a_rank(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    run = tmp_path / "run"
    proc = commprof("run", "--out", str(run), "--", *torchrun(script))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = sorted(reader.read_header(p)["rank"] for p in layout.capture_paths(run))
    assert ranks == [0, 1], ranks  # one capture per rank the launcher started, no helper's
    rep = commprof("report", str(run), "--format", "json")
    assert rep.returncode == 0, rep.stderr
    doc = json.loads(rep.stdout)
    assert sorted(r["rank"] for r in doc["ranks"]) == [0, 1]


def test_a_plain_python_job_is_still_captured(tmp_path):
    run = tmp_path / "run"
    job = ("import torch, torch.distributed as d; d.init_process_group('gloo', "
           f"init_method='tcp://127.0.0.1:{free_port()}', rank=0, world_size=1); "
           "d.all_reduce(torch.ones(2)); d.destroy_process_group()")
    proc = commprof("run", "--out", str(run), "--", sys.executable, "-c", job)
    assert proc.returncode == 0, proc.stderr
    assert len(layout.capture_paths(run)) == 1
