"""FSDP2 (fully_shard) on a small MLP over a 1-D CPU mesh, 3 optimizer steps.

Units: fully_shard(l1), fully_shard(l2), fully_shard(model) -- the root owns l3's parameters.
Dim-0 sizes are odd so that FSDP2's padding matters.

Expected, from FSDP2's rules (torch/distributed/fsdp/_fully_shard, 2.13):
* each parameter is chunked on dim 0 and padded to ceil(dim0 / world) rows per rank, so one
  unit's all-gather input is sum(ceil(dim0 / world) * prod(rest)) elements and its output is
  world times that; its reduce-scatter input is the padded unsharded size (world times the
  shard numel) and its output the padded shard;
* per step: forward all-gathers every unit once; the root is not resharded after forward
  (auto reshard_after_forward), the other units are and are all-gathered again in backward;
  every unit reduce-scatters its gradients once in backward.
"""
import math

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from _jobutil import Expect, finish

STEPS = 3


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ex = Expect("fsdp2_mlp", rank, world)
    mesh = init_device_mesh("cpu", (world,))
    ex.group("mesh", mesh.get_group(), range(world))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 33), nn.ReLU(), nn.Linear(33, 21), nn.ReLU(),
                          nn.Linear(21, 7))
    units = [("l1", model[0], True), ("l2", model[2], True), ("root", model[4], False)]
    shapes = {name: [list(p.shape) for p in mod.parameters()] for name, mod, _ in units}
    fully_shard(model[0], mesh=mesh)
    fully_shard(model[2], mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def shard_numel(shape):
        return math.ceil(shape[0] / world) * math.prod(shape[1:])

    g = torch.Generator().manual_seed(rank)
    for step in range(STEPS):
        x = torch.randn(8, 16, generator=g)
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        for name, _, resharded in units:
            n = sum(shard_numel(s) for s in shapes[name])
            shard = torch.empty(n)  # metadata only: the test reads shape and dtype
            full = torch.empty(n * world)
            ex.op("all_gather", "mesh", [shard], [full], step=step, note=f"{name} forward")
            if resharded:
                ex.op("all_gather", "mesh", [shard], [full], step=step, backward=True,
                      note=f"{name} backward re-gather")
            ex.op("reduce_scatter", "mesh", [full], [shard], step=step, backward=True,
                  note=f"{name} grads")
    ex.fact("steps", STEPS)
    ex.fact("param_shapes", shapes)
    ex.say(f"fsdp2_mlp rank={rank} steps={STEPS} loss={loss.item():.6f}")
    finish(ex)


if __name__ == "__main__":
    main()
