"""DDP on a 4-layer MLP (~520 KB of fp32 parameters) with 0.1 MB buckets, N optimizer steps.

Ground truth: every step's backward all-reduces every gradient exactly once (the bucket flat
buffers together hold exactly the parameters that require grad; no padding on CPU), so the
sum of in-backward all_reduce input bytes per step is sum(p.numel() * p.element_size()).
The job also records DDP's own view of its buckets (reducer logging data) after training.
"""
import os

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from _jobutil import Expect, finish

STEPS = int(os.environ.get("JOB_STEPS", "6"))


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ex = Expect("ddp_mlp", rank, world)
    ex.group("world", dist.group.WORLD, range(world))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    ddp = DDP(model, bucket_cap_mb=0.1)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    grad_params = [p for p in model.parameters() if p.requires_grad]
    ex.fact("steps", STEPS)
    ex.fact("grad_param_specs", [[list(p.shape), str(p.dtype).replace("torch.", "")]
                                 for p in grad_params])
    ex.fact("bucket_cap_bytes", int(0.1 * 1024 * 1024))
    g = torch.Generator().manual_seed(rank)
    for step in range(STEPS):
        x = torch.randn(32, 128, generator=g)
        y = torch.randint(0, 10, (32,), generator=g)
        loss = nn.functional.cross_entropy(ddp(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    try:
        data = ddp._get_ddp_logging_data()
        ex.fact("ddp_logging", {k: data.get(k) for k in ("bucket_sizes", "rebuilt_bucket_sizes",
                                                          "rebuilt_per_bucket_param_indices")})
    except Exception as exc:  # noqa: BLE001 - informational only
        ex.fact("ddp_logging_error", repr(exc))
    ex.say(f"ddp_mlp rank={rank} steps={STEPS} loss={loss.item():.6f}")
    finish(ex)


if __name__ == "__main__":
    main()
