"""`uneven_straggler.py STEPS`: a job whose KPIs are hard to get right in one number.

Rank 1 is late by 30 ms before its gradient sync in every step (a significant straggler); every
4th step all ranks compute 3x longer (uneven steps); the sync is asynchronous with 5 ms of compute
behind it, so part of the communication is hidden and part exposed.
"""
import sys
import time

import torch
import torch.distributed as dist

steps = int(sys.argv[1])
dist.init_process_group("gloo")
rank = dist.get_rank()
w = torch.nn.Parameter(torch.zeros(1 << 18))
opt = torch.optim.SGD([w], lr=0.01)
a = torch.randn(128, 128)


def compute(seconds: float) -> None:
    global a
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a = torch.tanh(a @ a) * 0.5


for step in range(steps):
    compute(0.030 if step % 4 == 3 else 0.010)
    if rank == 1:
        time.sleep(0.030)
    w.grad = torch.ones_like(w)
    work = dist.all_reduce(w.grad, async_op=True)
    compute(0.005)  # hides part of the sync
    work.wait()
    opt.step()
dist.destroy_process_group()
