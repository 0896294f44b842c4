"""An async all_reduce overlapped with compute, waited at the end of the step; measures itself.

The job polls ``Work.is_completed()`` between small compute chunks, so it knows (to one chunk)
when the collective finished: its in-flight time lies between the last poll that saw it
unfinished and the first that saw it done.  Writes per step [step_s, in_flight_low_s,
in_flight_high_s, blocked_s] to $KPI_OUT/rank<R>.json, blocked being the time spent inside the
all_reduce call and inside wait().
"""
import json
import os
import sys
import time

import torch
import torch.distributed as dist

steps, numel, compute_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
dist.init_process_group("gloo")
rank = dist.get_rank()
param = torch.nn.Parameter(torch.zeros(4))
opt = torch.optim.SGD([param], lr=0.1)
payload = torch.ones(numel)
a = torch.randn(64, 64)
records, last = [], None
for step in range(steps):
    t_issue = time.perf_counter()
    work = dist.all_reduce(payload, async_op=True)
    t_issued = time.perf_counter()
    t_done = None
    t_not_done = t_issued  # last poll that saw it unfinished: completion lies in (t_not_done, t_done]
    deadline = t_issue + compute_ms / 1000
    while time.perf_counter() < deadline:
        a = torch.tanh(a @ a.T / 64)
        if t_done is None:
            t_poll = time.perf_counter()
            if work.is_completed():
                t_done = t_poll
            else:
                t_not_done = t_poll
    t_wait = time.perf_counter()
    work.wait()
    t_waited = time.perf_counter()
    if t_done is None:
        t_not_done, t_done = t_wait, t_waited
    param.grad = torch.ones(4)
    opt.step()
    now = time.perf_counter()
    blocked = (t_issued - t_issue) + (t_waited - t_wait)  # inside the call, then inside wait()
    records.append([None if last is None else now - last, t_not_done - t_issue, t_done - t_issue,
                    blocked])
    last = now
with open(os.path.join(os.environ["KPI_OUT"], f"rank{rank}.json"), "w") as fh:
    json.dump({"steps": records}, fh)
dist.destroy_process_group()
time.sleep(0.2)
