"""commprof's demo job: a small DDP training loop on CPU/gloo (an ordinary script: no commprof code).

    torchrun --standalone --nproc-per-node 2 demo_train.py --steps 40
"""
from __future__ import annotations

import argparse
import os
import time

# One intra-op thread per rank (torchrun sets this only with --nproc-per-node > 1); it must be set
# before torch is imported, since OpenMP reads it when it loads.  More threads than cores share
# would oversubscribe them: OpenMP's spin-waits then slow compute whenever gloo's threads run.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402


def build_mlp(width: int = 1024) -> nn.Module:
    """The demo's model: 256 -> width -> width -> width -> 10 (2.4 M parameters at 1024)."""
    return nn.Sequential(nn.Linear(256, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--compress", choices=["none", "fp16", "bf16"], default="none",
                        help="DDP gradient compression hook")
    parser.add_argument("--accumulate", type=int, default=1,
                        help="micro-batches per optimizer step (DDP no_sync on all but the last)")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = build_mlp(args.width)
    ddp = DDP(model, bucket_cap_mb=1)
    if args.compress != "none":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        hook = default_hooks.fp16_compress_hook if args.compress == "fp16" else default_hooks.bf16_compress_hook
        ddp.register_comm_hook(state=None, hook=hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(rank)
    t0 = time.perf_counter()
    for step in range(args.steps):
        opt.zero_grad(set_to_none=True)
        for micro in range(args.accumulate):
            x = torch.randn(args.batch, 256, generator=gen)
            y = torch.randint(0, 10, (args.batch,), generator=gen)
            if micro < args.accumulate - 1:
                with ddp.no_sync():  # gradients accumulate locally, no communication
                    nn.functional.cross_entropy(ddp(x), y).backward()
            else:
                loss = nn.functional.cross_entropy(ddp(x), y)
                loss.backward()
        opt.step()
        if rank == 0 and (step + 1) % 10 == 0:
            print(f"step {step + 1:4d}  loss {loss.item():.4f}", flush=True)
    if rank == 0:
        n = sum(p.numel() for p in model.parameters())
        print(f"trained {args.steps} steps of a {n / 1e6:.1f} M-parameter MLP on "
              f"{dist.get_world_size()} ranks in {time.perf_counter() - t0:.1f} s", flush=True)
    dist.destroy_process_group()
    time.sleep(0.2)  # torch 2.13 + gloo: lets gloo threads settle before interpreter exit


if __name__ == "__main__":
    main()
