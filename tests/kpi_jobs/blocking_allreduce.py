"""Timed compute + one blocking all_reduce of a known size per step; measures itself.

Optional argv[4:7] = stall_every stall_ms stall_rank: on every stall_every-th step, rank
stall_rank sleeps stall_ms before its all_reduce, so the other ranks stall inside theirs.

Writes, per rank, {"steps": [[step_s, allreduce_s], ...], "numel": N, "itemsize": 4} to
$KPI_OUT/rank<R>.json.  Step time is measured between successive optimizer.step() returns,
exactly where commprof puts step boundaries.
"""
import json
import os
import sys
import time

import torch
import torch.distributed as dist

steps, numel, compute_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
stall_every, stall_ms, stall_rank = (int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])) \
    if len(sys.argv) > 6 else (0, 0.0, -1)
dist.init_process_group("gloo")
rank = dist.get_rank()
param = torch.nn.Parameter(torch.zeros(4))
opt = torch.optim.SGD([param], lr=0.1)
payload = torch.ones(numel)
a = torch.randn(256, 256)
records = []
last = None
for step in range(steps):
    t_end_compute = time.perf_counter() + compute_ms / 1000
    while time.perf_counter() < t_end_compute:
        a = torch.tanh(a @ a.T / 256)
    if stall_every and step % stall_every == stall_every - 1 and rank == stall_rank:
        time.sleep(stall_ms / 1000)
    t0 = time.perf_counter()
    dist.all_reduce(payload)
    t1 = time.perf_counter()
    param.grad = torch.ones(4)
    opt.step()
    now = time.perf_counter()
    if last is not None:
        records.append([now - last, t1 - t0])
    else:
        records.append([None, t1 - t0])
    last = now
with open(os.path.join(os.environ["KPI_OUT"], f"rank{rank}.json"), "w") as fh:
    json.dump({"steps": records, "numel": numel, "itemsize": payload.element_size()}, fh)
print(f"rank {rank} finished {steps} steps", flush=True)
dist.destroy_process_group()
time.sleep(0.2)
