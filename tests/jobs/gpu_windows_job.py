"""`gpu_windows_job.py STEPS [USER_START USER_STOP OUT_DIR]`: a 2-rank gloo job (a linear layer,
SGD, one all_reduce per parameter per step).  With USER_*, the job runs its own torch.profiler
(CPU activity) from the start of step USER_START to the end of step USER_STOP and exports it to
OUT_DIR/user.rank<R>.json.  Step k is the loop's k-th iteration (k optimizer steps before it)."""
import sys

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

steps = int(sys.argv[1])
user = (int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]) if len(sys.argv) > 4 else None
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.Linear(64, 64)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(32, 64)
prof = None
for step in range(steps):
    if user and step == user[0]:
        prof = profile(activities=[ProfilerActivity.CPU])
        prof.start()
    loss = model(x).square().mean()
    loss.backward()
    for p in model.parameters():
        dist.all_reduce(p.grad)
    opt.step()
    opt.zero_grad()
    if prof is not None and step == user[1]:
        prof.stop()
        prof.export_chrome_trace(f"{user[2]}/user.rank{rank}.json")
        prof = None
dist.destroy_process_group()
