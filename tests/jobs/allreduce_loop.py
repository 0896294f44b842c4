"""`allreduce_loop.py STEPS NUMEL`: STEPS blocking float32 all_reduces of NUMEL elements."""
import sys

import torch
import torch.distributed as dist

steps, numel = int(sys.argv[1]), int(sys.argv[2])
dist.init_process_group("gloo")
x = torch.ones(numel)
for _ in range(steps):
    dist.all_reduce(x)
dist.destroy_process_group()
