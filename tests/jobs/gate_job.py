"""`gate_job.py STEPS EXTRA_NUMEL`: a training-like loop for gate tests.

Each step: ~20 ms of matmuls, a 1 MiB gradient all_reduce, and, when EXTRA_NUMEL > 0, a second
all_reduce of EXTRA_NUMEL float32 (the "heavier communication" variant); then optimizer.step().
"""
import sys

import torch
import torch.distributed as dist

steps, extra = int(sys.argv[1]), int(sys.argv[2])
dist.init_process_group("gloo")
torch.manual_seed(0)
w = torch.nn.Parameter(torch.zeros(262144))
opt = torch.optim.SGD([w], lr=0.01)
a = torch.randn(512, 512)
more = torch.ones(extra) if extra else None
for _ in range(steps):
    for _ in range(8):
        a = torch.tanh(a @ a) * 0.5
    w.grad = torch.ones_like(w)
    dist.all_reduce(w.grad)
    if more is not None:
        dist.all_reduce(more)
    opt.step()
dist.destroy_process_group()
