"""`gate_job.py STEPS EXTRA_NUMEL`: a training-like loop for gate tests.

Each step: 20 ms of "compute", a 1 MiB gradient all_reduce, and, when EXTRA_NUMEL > 0, a second
all_reduce of EXTRA_NUMEL float32 (the "heavier communication" variant); then optimizer.step().

The compute is a sleep, not matmuls: with two ranks on two cores, one rank's matmuls compete
for a core with the other rank's gloo thread, which makes the per-step exposed fraction
bimodal (steps near 4 % and near 24 % seen in one run) with a mix that differs from run to run,
so that runs of the same job were 6 % and 19 % exposed in their per-step medians on a quiet
machine.  A gate test must compare the job, not the scheduler's placement of its threads.
"""
import sys
import time

import torch
import torch.distributed as dist

steps, extra = int(sys.argv[1]), int(sys.argv[2])
dist.init_process_group("gloo")
w = torch.nn.Parameter(torch.zeros(262144))
opt = torch.optim.SGD([w], lr=0.01)
more = torch.ones(extra) if extra else None
for _ in range(steps):
    time.sleep(0.02)
    w.grad = torch.ones_like(w)
    dist.all_reduce(w.grad)
    if more is not None:
        dist.all_reduce(more)
    opt.step()
dist.destroy_process_group()
