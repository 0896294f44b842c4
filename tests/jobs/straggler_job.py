"""`straggler_job.py SLOW_RANK SLEEP_MS STEPS [ARRIVALS]`: SLOW_RANK sleeps SLEEP_MS before the
gradient sync of every step (SLOW_RANK -1: nobody does); every rank computes ~10 ms per step.
With ARRIVALS, each rank writes ARRIVALS.rank<r>: per step, the CLOCK_MONOTONIC ns at which it
called the gradient sync (the tests' ground truth for waits: ranks on one machine, or in network
namespaces of it, share that clock)."""
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

slow, sleep_ms, steps = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
dist.init_process_group("gloo")
rank = dist.get_rank()
arrivals = []
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
    arrivals.append(time.monotonic_ns())
    dist.all_reduce(w.grad)  # the gradient sync
    opt.step()
dist.destroy_process_group()
if len(sys.argv) > 4:
    Path(f"{sys.argv[4]}.rank{rank}").write_text("\n".join(map(str, arrivals)) + "\n")
