"""Functional collectives (with their 2.13 autograd formulas) and DTensor tensor parallelism.

Part 1, functional collectives on the default group, forward and backward.  torch 2.13
registers autograd formulas (torch/distributed/_functional_collectives.py): the backward of
all_reduce(sum) is an all_reduce of the gradient, of all_gather_into_tensor a reduce_scatter,
of reduce_scatter_tensor an all_gather.

Part 2, a 2-layer MLP, ColwiseParallel then RowwiseParallel over a 1-D CPU mesh:
* parallelize_module distributes parameters from rank 0 (distribute_tensor, src_data_rank=0):
  Shard placements are scattered (rank 0 passes every chunk, the others none), the Replicate
  bias of the row-wise layer is broadcast;
* forward: the row-wise output is Partial and is all-reduced to Replicate ([batch, out]);
* backward: the input requires grad, so its gradient, Partial after the column-wise matmul,
  is all-reduced back to the input's Replicate placement ([batch, in]); parameter gradients
  keep their parameters' placements (no communication), as does SGD on them.
Canonical op names below are the semantic ones ("all_gather", not "all_gather_coalesced").
"""
import math

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from _jobutil import Expect, finish

BATCH, D_IN, D_HID, D_OUT = 8, 16, 32, 12


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ex = Expect("tp_funcol", rank, world)
    pg = dist.group.WORLD
    ex.group("world", pg, range(world))

    # -- functional collectives ----------------------------------------------------------------
    x = torch.randn(10, 4, requires_grad=True)
    y = funcol.all_reduce(x, "sum", pg)
    ex.op("all_reduce", "world", [x], [x], note="funcol.all_reduce")
    y.square().sum().backward()
    ex.op("all_reduce", "world", [x], [x], backward=True, note="all_reduce backward")

    x = torch.randn(3, 5, requires_grad=True)
    full = torch.empty(3 * world, 5)
    y = funcol.all_gather_tensor(x, 0, pg)
    assert y.shape == full.shape
    ex.op("all_gather", "world", [x], [full], note="funcol.all_gather_tensor")
    y.square().sum().backward()
    ex.op("reduce_scatter", "world", [full], [x], backward=True, note="all_gather backward")

    x = torch.randn(3, 5, dtype=torch.float64)
    y = funcol.all_gather_tensor(x, 1, pg)  # gathers on dim 0, then rearranges locally
    assert y.shape == (3, 5 * world)
    ex.op("all_gather", "world", [x], [torch.empty(3 * world, 5, dtype=torch.float64)],
          note="funcol.all_gather_tensor gather_dim=1")
    float(y.sum())

    x = torch.randn(4 * world, 6, requires_grad=True)
    part = torch.empty(4, 6)
    y = funcol.reduce_scatter_tensor(x, "sum", 0, pg)
    assert y.shape == part.shape
    ex.op("reduce_scatter", "world", [x], [part], note="funcol.reduce_scatter_tensor")
    y.square().sum().backward()
    ex.op("all_gather", "world", [part], [x], backward=True, note="reduce_scatter backward")

    x = torch.arange(7, dtype=torch.int64) * (rank + 1)
    y = funcol.broadcast(x, 1, pg)
    assert y.tolist() == list(range(0, 14, 2)), y
    ex.op("broadcast", "world", [x], [x], peer=1, note="funcol.broadcast")

    x = torch.randn(2 * world, 3)
    y = funcol.all_to_all_single(x, None, None, pg)
    float(y.sum())
    ex.op("all_to_all", "world", [x], [x], note="funcol.all_to_all_single")

    # -- DTensor tensor parallel -----------------------------------------------------------------
    mesh = init_device_mesh("cpu", (world,))
    ex.group("mesh", mesh.get_group(), range(world))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D_IN, D_HID), nn.ReLU(), nn.Linear(D_HID, D_OUT))
    parallelize_module(model, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})

    def scatter(shape, dim):
        chunk = list(shape)
        chunk[dim] = math.ceil(shape[dim] / world)
        pieces = [torch.empty(chunk) for _ in range(world)]
        ex.op("scatter", "mesh", pieces if rank == 0 else [], [pieces[0]], peer=0,
              note=f"distribute Shard({dim}) {shape}")

    scatter([D_HID, D_IN], 0)  # column-wise weight
    scatter([D_HID], 0)  # column-wise bias
    scatter([D_OUT, D_HID], 1)  # row-wise weight
    bias = torch.empty(D_OUT)
    ex.op("broadcast", "mesh", [bias], [bias], peer=0, note="distribute Replicate bias")

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = 2
    for step in range(steps):
        inp = torch.randn(BATCH, D_IN, requires_grad=True)
        out = model(inp)
        ex.op("all_reduce", "mesh", [torch.empty(BATCH, D_OUT)], [torch.empty(BATCH, D_OUT)],
              step=step, note="row-wise output Partial -> Replicate")
        out.square().mean().backward()
        ex.op("all_reduce", "mesh", [inp], [inp], backward=True, step=step,
              note="input grad Partial -> Replicate")
        opt.step()
        opt.zero_grad()
    ex.fact("steps", steps)
    ex.say(f"tp_funcol rank={rank} out={float(out.detach().sum()):.5f}")
    finish(ex)


if __name__ == "__main__":
    main()
