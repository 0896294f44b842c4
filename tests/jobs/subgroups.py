"""Sub-groups: new_group([0, 1]) (same members as the world, a distinct group) and one size-1
group per rank, created by every rank in the same order as new_group requires.

Ops per group are distinct in shape so that a record attributed to the wrong group shows.
"""
import torch
import torch.distributed as dist

from _jobutil import Expect, finish


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2
    ex = Expect("subgroups", rank, world)
    ex.group("world", dist.group.WORLD, range(world))

    pair = dist.new_group([0, 1])
    ex.group("pair", pair, [0, 1])
    solo = None
    for r in range(world):  # every rank must call new_group for every group, in order
        g = dist.new_group([r])
        if r == rank:
            solo = g
    ex.group("solo", solo, [rank])

    t = torch.ones(21)
    dist.all_reduce(t)
    ex.op("all_reduce", "world", [t], [t])

    for i in range(3):
        t = torch.ones(17 + i, dtype=torch.float64)
        dist.all_reduce(t, group=pair)
        ex.op("all_reduce", "pair", [t], [t])
    inp = torch.ones(3, 4)
    outs = [torch.empty(3, 4) for _ in range(2)]
    dist.all_gather(outs, inp, group=pair)
    ex.op("all_gather", "pair", [inp], outs)
    t = torch.arange(5)
    dist.broadcast(t, group_src=1, group=pair)
    ex.op("broadcast", "pair", [t], [t], peer=1)

    # Size-1 group: the collectives still go through the backend.
    t = torch.ones(6, dtype=torch.int32)
    dist.all_reduce(t, group=solo)
    ex.op("all_reduce", "solo", [t], [t])
    inp = torch.ones(2, 2)
    out = torch.empty(2, 2)
    dist.all_gather_into_tensor(out, inp, group=solo)
    ex.op("all_gather", "solo", [inp], [out])
    t = torch.ones(8)
    dist.broadcast(t, group_src=0, group=solo)
    ex.op("broadcast", "solo", [t], [t], peer=0)
    dist.barrier(group=solo)
    ex.op("barrier", "solo")

    # P2P on the sub-group (peer is the group rank).
    t = torch.ones(4)
    if rank == 0:
        dist.send(t, group_dst=1, group=pair)
        ex.op("send", "pair", [t], None, peer=1)
    else:
        dist.recv(t, group_src=0, group=pair)
        ex.op("recv", "pair", None, [t], peer=0)

    dist.barrier(group=pair)
    ex.op("barrier", "pair")
    ex.say(f"subgroups rank={rank} ok")
    finish(ex)


if __name__ == "__main__":
    main()
