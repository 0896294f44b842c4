"""Many tiny collectives on every rank (used by benchmarks/capture_size_memory.py).

Phase 1: --allreduce N blocking ``dist.all_reduce`` calls on a 1-element float32 tensor.
Phase 2: --p2p N rounds of ``isend`` to and ``irecv`` from the next/previous rank (ring), both
waited (2 records per round per rank).  Each rank then writes a JSON line to
``<--report>.rank<R>``: its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB),
its current RSS, RSS samples (/proc/self/statm) taken every --sample calls of phase 1, and the
time each phase took.  Nothing else: no commprof code.

    python -m torch.distributed.run --nproc-per-node 2 --master-addr 127.0.0.1 \
        --master-port 29500 benchmarks/jobs/tiny_collectives.py --allreduce 20000 --report /tmp/r
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--allreduce", type=int, default=20000)
    ap.add_argument("--p2p", type=int, default=0)
    ap.add_argument("--sample", type=int, default=0, help="RSS sample every N all_reduces (0: 10 samples)")
    ap.add_argument("--report", required=True)
    args = ap.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.ones(1)
    for _ in range(100):  # warm-up: connections, allocator
        dist.all_reduce(x)
    dist.barrier()
    every = args.sample or max(1, args.allreduce // 10)
    samples = [(0, rss_bytes())]
    t0 = time.perf_counter()
    for i in range(1, args.allreduce + 1):
        dist.all_reduce(x)
        if i % every == 0:
            samples.append((i, rss_bytes()))
    t_allreduce = time.perf_counter() - t0

    t0 = time.perf_counter()
    if args.p2p and world > 1:
        send_buf, recv_buf = torch.ones(1), torch.empty(1)
        nxt, prv = (rank + 1) % world, (rank - 1) % world
        for _ in range(args.p2p):
            s = dist.isend(send_buf, nxt)
            r = dist.irecv(recv_buf, prv)
            s.wait()
            r.wait()
    t_p2p = time.perf_counter() - t0

    report = {"rank": rank, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              "rss_end": rss_bytes(), "samples": samples, "allreduce": args.allreduce,
              "p2p": args.p2p, "t_allreduce": t_allreduce, "t_p2p": t_p2p}
    with open(f"{args.report}.rank{rank}", "w") as fh:
        fh.write(json.dumps(report) + "\n")
    dist.destroy_process_group()
    time.sleep(0.2)  # torch 2.13 + gloo: lets gloo threads settle before interpreter exit


if __name__ == "__main__":
    main()
