"""A deterministic DDP job that prints a checksum of its trained parameters (per rank)."""
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
ddp = DDP(model, bucket_cap_mb=0.01)
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
gen = torch.Generator().manual_seed(rank)
for step in range(8):
    loss = ddp(torch.randn(16, 32, generator=gen)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    extra = torch.ones(5) * (rank + 1)
    dist.all_reduce(extra)
checksum = sum(float(p.double().sum()) for p in model.parameters())
print(f"rank {rank} checksum {checksum:.12f} extra {extra.tolist()}\n", end="", flush=True)  # one write
dist.destroy_process_group()
time.sleep(0.2)
