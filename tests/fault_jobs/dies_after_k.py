"""Rank 1 dies right after its K-th all_reduce — ``dies_after_k.py HOW K``:

* ``kill``: it SIGKILLs itself; ``segv``: it reads address 0 (a segmentation fault);
* ``outside``: an OOM-style kill — it tells rank 0 through the job's store that its K collectives
  returned, and rank 0 SIGKILLs it (the store, not a barrier: a barrier would be a collective).

No sleep lets a flusher run in between: what rank 1's capture holds is what the record region kept.
Rank 0 then sleeps until torchrun stops it with SIGTERM.
"""
import ctypes
import os
import signal
import sys
import time

import torch
import torch.distributed as dist

how, k = sys.argv[1], int(sys.argv[2])
dist.init_process_group("gloo")
rank = dist.get_rank()
store = dist.distributed_c10d._get_default_store()
store.set(f"pid{rank}", str(os.getpid()))
t = torch.ones(16)
for _ in range(k):
    dist.all_reduce(t)
if rank == 1:
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segv":
        ctypes.string_at(0)
    elif how == "outside":
        store.set("done1", "1")
        time.sleep(60)  # rank 0's SIGKILL arrives here
elif how == "outside":
    store.wait(["done1"])
    os.kill(int(store.get("pid1")), signal.SIGKILL)
time.sleep(60)  # torchrun's SIGTERM arrives here
print("unreachable", file=sys.stderr)
