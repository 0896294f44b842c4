"""One rank arrives late at a collective: `hang_job.py LATE_RANK SLEEP_S BEFORE`.

Every rank issues BEFORE all-reduces of 1 MiB on the world group; then LATE_RANK sleeps SLEEP_S
seconds before the next one, which the others are left waiting in.  Then two more, and exit.
"""
import sys
import time

import torch
import torch.distributed as dist

late, sleep_s, before = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
dist.init_process_group("gloo")
rank = dist.get_rank()
x = torch.ones(262144)  # 1 MiB of float32
for i in range(before + 3):
    if i == before and rank == late:
        time.sleep(sleep_s)
    dist.all_reduce(x)
print(f"rank {rank} done\n", end="", flush=True)
dist.destroy_process_group()
