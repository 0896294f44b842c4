"""`straggler_job.py SLOW_RANK SLEEP_MS STEPS`: SLOW_RANK sleeps SLEEP_MS before the gradient
sync of every step (SLOW_RANK -1: nobody does); every rank computes ~10 ms per step."""
import sys
import time

import torch
import torch.distributed as dist

slow, sleep_ms, steps = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
dist.init_process_group("gloo")
rank = dist.get_rank()
w = torch.nn.Parameter(torch.zeros(65536))
opt = torch.optim.SGD([w], lr=0.01)
a = torch.randn(128, 128)
for _ in range(steps):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.010:  # compute
        a = torch.tanh(a @ a) * 0.5
    if rank == slow:
        time.sleep(sleep_ms / 1e3)
    w.grad = torch.ones_like(w)
    dist.all_reduce(w.grad)  # the gradient sync
    opt.step()
dist.destroy_process_group()
