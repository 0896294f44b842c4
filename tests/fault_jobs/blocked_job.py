"""Ranks left blocked inside a collective: `blocked_job.py PID_DIR SLEEPER [BEFORE] [deaf]`.

Every rank issues BEFORE all-reduces (default 2) and writes its pid to PID_DIR/rank<r>.pid; then
rank SLEEPER sleeps for an hour while the others wait in the next all-reduce (inside gloo's C++
wait).  With ``deaf``, the sleeper ignores SIGTERM (only SIGKILL ends it).  The tests signal the
processes by pid and time how fast they end.
"""
import os
import signal
import sys
import time

import torch
import torch.distributed as dist

pid_dir, sleeper = sys.argv[1], int(sys.argv[2])
before = int(sys.argv[3]) if len(sys.argv) > 3 else 2
deaf = "deaf" in sys.argv[4:]
dist.init_process_group("gloo")
rank = dist.get_rank()
x = torch.ones(1024)
for _ in range(before):
    dist.all_reduce(x)
if rank == sleeper and deaf:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
tmp = os.path.join(pid_dir, f".rank{rank}.pid")
with open(tmp, "w") as fh:
    fh.write(str(os.getpid()))
os.replace(tmp, os.path.join(pid_dir, f"rank{rank}.pid"))
if rank == sleeper:
    time.sleep(3600)
dist.all_reduce(x)
