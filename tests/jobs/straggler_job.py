"""`straggler_job.py SLOW_RANK SLEEP_MS STEPS [ARRIVALS]`: SLOW_RANK sleeps SLEEP_MS before the
gradient sync of every step (SLOW_RANK -1: nobody does); every rank computes ~10 ms per step.
With ARRIVALS, each rank writes ARRIVALS.rank<r>: per step, the CLOCK_MONOTONIC ns at which it
called the gradient sync (the tests' ground truth for waits: ranks on one machine, or in network
namespaces of it, share that clock).  With ARRIVALS, SLOW_RANK is last by construction: it sleeps
SLEEP_MS only after every other rank has arrived (each appends a byte to ARRIVALS.live<r> as it
arrives; the file system is the side channel, outside the collectives).  A plain sleep picked the
straggler only while no rank was descheduled for longer than the sleep: on 2 cores shared with
other work, the slow rank was last in 79 % of the steps, the other rank in the rest."""
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

slow, sleep_ms, steps = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
prefix = sys.argv[4] if len(sys.argv) > 4 else None
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
live = open(f"{prefix}.live{rank}", "wb", buffering=0) if prefix and rank != slow else None


def others_arrived(step: int) -> None:
    """Until every other rank has arrived at this step's gradient sync."""
    for r in range(world):
        if r != slow:
            path = f"{prefix}.live{r}"
            while not os.path.exists(path) or os.path.getsize(path) <= step:
                time.sleep(0.0005)


arrivals = []
w = torch.nn.Parameter(torch.zeros(65536))
opt = torch.optim.SGD([w], lr=0.01)
a = torch.randn(128, 128)
for step in range(steps):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.010:  # compute
        a = torch.tanh(a @ a) * 0.5
    if rank == slow:
        if prefix:
            others_arrived(step)
        time.sleep(sleep_ms / 1e3)
    w.grad = torch.ones_like(w)
    arrivals.append(time.monotonic_ns())
    if live is not None:
        live.write(b"x")  # arrived (after the clock read: the truth is the read)
    dist.all_reduce(w.grad)  # the gradient sync
    opt.step()
dist.destroy_process_group()
if prefix:
    Path(f"{prefix}.rank{rank}").write_text("\n".join(map(str, arrivals)) + "\n")
