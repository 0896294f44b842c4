"""A DDP training job that measures its own step times (used by benchmarks/overhead_real_job.py).

The same MLP shape as commprof/examples/demo_train.py (2.4 M parameters at --width 1024,
bucket_cap_mb=1 so DDP issues a few all-reduce buckets per step), or with --layers N a deeper
MLP of N width x width layers (--bucket-mb sets DDP's bucket size).  A step time is the time
between two successive ``optimizer.step()`` returns; the first --warmup steps are dropped.
Each rank writes one line per step to ``<--times-out>.rank<R>``: the step's wall time and the
CPU time the whole process (all threads: gloo's included) used during it, in seconds.

``--torch-profiler TRACE`` runs the identical loop inside ``torch.profiler.profile`` (CPU
activity, record_shapes, a schedule that records every step, ``prof.step()`` after each
optimizer step) and exports a Chrome trace per rank to ``TRACE.rank<R>.json`` after the loop.

    python -m torch.distributed.run --nproc-per-node 2 --master-addr 127.0.0.1 \
        --master-port 29500 benchmarks/jobs/ddp_step_times.py --steps 150 --times-out /tmp/st
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

from commprof.examples.demo_train import build_mlp  # noqa: E402  (a plain module: no capture)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150, help="measured steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--layers", type=int, default=0,
                    help="N > 0: a deep MLP of N width x width layers instead of the demo's")
    ap.add_argument("--bucket-mb", type=float, default=1.0, help="DDP bucket_cap_mb")
    ap.add_argument("--times-out", required=True, help="prefix of the per-rank step-time files")
    ap.add_argument("--torch-profiler", metavar="TRACE", default=None,
                    help="profile every step with torch.profiler; trace prefix")
    args = ap.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    if args.layers > 0:  # many layers: many gradient hooks and buckets per step
        body = [m for _ in range(args.layers) for m in (nn.Linear(args.width, args.width), nn.ReLU())]
        model = nn.Sequential(nn.Linear(256, args.width), *body, nn.Linear(args.width, 10))
    else:
        model = build_mlp(args.width)  # the demo's model: the benchmark measures the demo's job
    ddp = DDP(model, bucket_cap_mb=args.bucket_mb)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(rank)
    total = args.warmup + args.steps + 1  # +1: n+1 step returns give n step times

    prof = None
    if args.torch_profiler:
        from torch.profiler import ProfilerActivity, profile, schedule
        # active > total: the whole loop is one recording window, stopped (and the trace made
        # ready) when the context exits, after the loop.
        prof = profile(activities=[ProfilerActivity.CPU],
                       schedule=schedule(wait=0, warmup=0, active=total + 1, repeat=1),
                       record_shapes=True)
    ends = []
    with prof if prof is not None else contextlib.nullcontext():
        for _ in range(total):
            x = torch.randn(args.batch, 256, generator=gen)
            y = torch.randint(0, 10, (args.batch,), generator=gen)
            loss = nn.functional.cross_entropy(ddp(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ends.append((time.perf_counter(), time.process_time()))
            if prof is not None:
                prof.step()
    if prof is not None:
        prof.export_chrome_trace(f"{args.torch_profiler}.rank{rank}.json")
    rows = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(ends[args.warmup:], ends[args.warmup + 1:])]
    with open(f"{args.times_out}.rank{rank}", "w") as fh:  # wall s, process CPU s (all threads)
        fh.write("".join(f"{w:.9f} {c:.9f}\n" for w, c in rows))
    dist.destroy_process_group()
    time.sleep(0.2)  # torch 2.13 + gloo: lets gloo threads settle before interpreter exit


if __name__ == "__main__":
    main()
