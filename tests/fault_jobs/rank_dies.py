"""Rank 1 dies after 4 steps — `rank_dies.py [exit|kill|segv|raise]`: os._exit(1), SIGKILL
from itself, a segmentation fault, or an uncaught ``ValueError`` (Python prints the traceback,
exit 1); rank 0, sleeping after its 4th step, is then stopped by
torchrun with SIGTERM."""
import ctypes
import os
import signal
import sys
import time

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
p = torch.nn.Parameter(torch.zeros(4))
opt = torch.optim.SGD([p], lr=0.1)
for step in range(50):
    p.grad = torch.ones(4)
    dist.all_reduce(p.grad)
    opt.step()
    if rank == 1 and step == 3 and sys.argv[1:] == ["raise"]:
        raise ValueError("rank 1 gives up on purpose")
    if rank == 1 and step == 3:
        time.sleep(0.3)  # > the test's flush interval: the 4 steps reach the disk
        how = sys.argv[1] if len(sys.argv) > 1 else "exit"
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "segv":
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        os._exit(1)
    if rank == 0 and step == 3:
        time.sleep(60)  # torchrun's SIGTERM arrives here
    time.sleep(0.02)
print("unreachable", file=sys.stderr)
