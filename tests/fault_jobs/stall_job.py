"""Ranks that stop stepping with no collective pending: `stall_job.py RELEASE_FILE`.

Every rank runs 4 training steps (an all_reduce and optimizer.step() each), then waits in plain
Python for RELEASE_FILE to exist (as a deadlock in the job's own code would: alive, recording
nothing), then runs 4 more steps and exits.
"""
import os
import sys
import time

import torch
import torch.distributed as dist

release = sys.argv[1]
dist.init_process_group("gloo")
p = torch.nn.Parameter(torch.zeros(1024))
opt = torch.optim.SGD([p], lr=0.1)


def steps(n: int) -> None:
    for _ in range(n):
        p.grad = torch.ones_like(p)
        dist.all_reduce(p.grad)
        opt.step()


steps(4)
deadline = time.monotonic() + 120
while not os.path.exists(release) and time.monotonic() < deadline:
    time.sleep(0.05)
steps(4)
dist.destroy_process_group()
