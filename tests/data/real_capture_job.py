import time, torch, torch.distributed as dist, torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
dist.init_process_group("gloo")
m = DDP(nn.Linear(8, 4), bucket_cap_mb=0.0001)
opt = torch.optim.SGD(m.parameters(), lr=0.1)
for i in range(3):
    m(torch.randn(2, 8)).sum().backward(); opt.step(); opt.zero_grad()
    t = torch.ones(3); dist.broadcast(t, 0); w = dist.all_reduce(t, async_op=True); w.wait()
    if dist.get_rank() == 0: dist.send(t, 1)
    else: dist.recv(t, 0)
    time.sleep(0.06)
dist.destroy_process_group()
