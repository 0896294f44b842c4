"""`manual_allreduce.py STEPS`: a model trained without DDP — each rank averages its gradients by
hand with all_reduce after backward (the kind of job DDP fixes cannot apply to)."""
import sys

import torch
import torch.distributed as dist

steps = int(sys.argv[1])
dist.init_process_group("gloo")
torch.manual_seed(0)
model = torch.nn.Linear(32, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(steps):
    loss = model(torch.randn(8, 32)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()
    opt.step()
dist.destroy_process_group()
