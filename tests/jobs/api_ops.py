"""Every torch.distributed Python API communication call, once each, on the default group (gloo).

The expectation lists, in call order, the records a capture should hold: the canonical op, the
local input/output tensors and the peer (root rank for rooted collectives, dst/src for P2P).
Object collectives are expanded into the tensor collectives torch issues for them (read from
torch/distributed/distributed_c10d.py of 2.13: all_gather_object = all_gather of the int64
sizes, then all_gather of the uint8 payloads padded to the largest; broadcast_object_list =
broadcast of the int64 sizes, then broadcast of the concatenated uint8 payloads).
"""
import io
import pickle

import torch
import torch.distributed as dist

from _jobutil import Expect, finish


def pickled_size(obj) -> int:
    f = io.BytesIO()
    pickle.Pickler(f).dump(obj)  # what torch's _object_to_tensor does
    return len(f.getvalue())


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2, "this job is written for 2 ranks"
    ex = Expect("api_ops", rank, world)
    ex.group("world", dist.group.WORLD, range(world))
    other = 1 - rank
    G = "world"

    t = torch.arange(37, dtype=torch.float32)
    dist.all_reduce(t)
    ex.op("all_reduce", G, [t], [t])

    t = torch.ones(37, dtype=torch.float32)
    work = dist.all_reduce(t, async_op=True)
    work.wait()
    ex.op("all_reduce", G, [t], [t], note="async_op=True")

    inp = torch.full((5, 3), float(rank))
    outs = [torch.empty(5, 3) for _ in range(world)]
    dist.all_gather(outs, inp)
    ex.op("all_gather", G, [inp], outs)

    inp = torch.full((4, 2), float(rank), dtype=torch.float64)
    out = torch.empty(4 * world, 2, dtype=torch.float64)
    dist.all_gather_into_tensor(out, inp)
    ex.op("all_gather", G, [inp], [out])

    inp = torch.ones(6 * world)
    out = torch.empty(6)
    dist.reduce_scatter_tensor(out, inp)
    ex.op("reduce_scatter", G, [inp], [out])

    ins = [torch.ones(2, 5, dtype=torch.float32) for _ in range(world)]
    out = torch.empty(2, 5)
    dist.reduce_scatter(out, ins)
    ex.op("reduce_scatter", G, ins, [out], note="list version")

    t = torch.arange(9, dtype=torch.int64)
    dist.broadcast(t, src=0)
    ex.op("broadcast", G, [t], [t], peer=0)

    t = torch.ones(11)
    dist.reduce(t, dst=1)
    ex.op("reduce", G, [t], [t], peer=1)

    t = torch.ones(4)
    glist = [torch.empty(4) for _ in range(world)] if rank == 0 else None
    dist.gather(t, gather_list=glist, dst=0)
    ex.op("gather", G, [t], glist or [], peer=0)

    t = torch.empty(3)
    slist = [torch.full((3,), float(i)) for i in range(world)] if rank == 1 else None
    dist.scatter(t, scatter_list=slist, src=1)
    ex.op("scatter", G, slist or [], [t], peer=1)

    inp = torch.arange(world * 2 * 3, dtype=torch.float32).reshape(world * 2, 3)
    out = torch.empty_like(inp)
    dist.all_to_all_single(out, inp)
    ex.op("all_to_all", G, [inp], [out])

    ins = [torch.full((2,), rank * 10 + i, dtype=torch.int32) for i in range(world)]
    outs = [torch.empty(2, dtype=torch.int32) for _ in range(world)]
    dist.all_to_all(outs, ins)
    ex.op("all_to_all", G, ins, outs, note="list version")

    dist.barrier()
    ex.op("barrier", G)

    # Blocking P2P, both directions.
    t = torch.arange(7, dtype=torch.float32)
    if rank == 0:
        dist.send(t, dst=1)
        ex.op("send", G, [t], None, peer=1)
    else:
        dist.recv(t, src=0)
        ex.op("recv", G, None, [t], peer=0)
    t = torch.ones(3, 3, dtype=torch.bfloat16)
    if rank == 1:
        dist.send(t, dst=0)
        ex.op("send", G, [t], None, peer=0)
    else:
        dist.recv(t, src=1)
        ex.op("recv", G, None, [t], peer=1)

    # Non-blocking P2P.
    t = torch.ones(13, dtype=torch.int16)
    if rank == 0:
        dist.isend(t, dst=1).wait()
        ex.op("send", G, [t], None, peer=1, note="isend")
    else:
        dist.irecv(t, src=0).wait()
        ex.op("recv", G, None, [t], peer=0, note="irecv")

    # Batched P2P: each rank sends to and receives from the other.
    send_t = torch.full((6,), float(rank))
    recv_t = torch.empty(6)
    reqs = dist.batch_isend_irecv([dist.P2POp(dist.isend, send_t, other),
                                   dist.P2POp(dist.irecv, recv_t, other)])
    for req in reqs:
        req.wait()
    ex.op("send", G, [send_t], None, peer=other, note="batch_isend_irecv")
    ex.op("recv", G, None, [recv_t], peer=other, note="batch_isend_irecv")

    # Object collectives.
    objs = [{"rank": r, "payload": "x" * (10 + 7 * r)} for r in range(world)]
    gathered = [None] * world
    dist.all_gather_object(gathered, objs[rank])
    assert gathered == objs, gathered
    sizes = [pickled_size(o) for o in objs]
    biggest = max(sizes)
    size_t = torch.empty(1, dtype=torch.int64)
    ex.op("all_gather", G, [size_t], [size_t] * world, note="all_gather_object: sizes")
    pay = torch.empty(biggest, dtype=torch.uint8)
    ex.op("all_gather", G, [pay], [pay] * world, note="all_gather_object: payload")

    blist = [[1, 2, 3], "hello", {"k": 4.5}] if rank == 0 else [None, None, None]
    truth = [[1, 2, 3], "hello", {"k": 4.5}]
    dist.broadcast_object_list(blist, src=0)
    assert blist == truth, blist
    sizes_t = torch.empty(len(truth), dtype=torch.int64)
    ex.op("broadcast", G, [sizes_t], [sizes_t], peer=0, note="broadcast_object_list: sizes")
    pay = torch.empty(sum(pickled_size(o) for o in truth), dtype=torch.uint8)
    ex.op("broadcast", G, [pay], [pay], peer=0, note="broadcast_object_list: payload")

    gobj = [{"g": r, "pad": "y" * (3 + 11 * r)} for r in range(world)]
    out = [None] * world if rank == 0 else None
    dist.gather_object(gobj[rank], out, dst=0)
    assert rank != 0 or out == gobj, out
    gmax = max(pickled_size(o) for o in gobj)
    ex.op("all_gather", G, [size_t], [size_t] * world, note="gather_object: sizes")
    pay = torch.empty(gmax, dtype=torch.uint8)
    ex.op("gather", G, [pay], [pay] * world if rank == 0 else [], peer=0,
          note="gather_object: payload")

    sobj = [[1, "two"], {"three": 3.0, "pad": "z" * 20}]
    got = [None]
    dist.scatter_object_list(got, sobj if rank == 0 else None, src=0)
    assert got[0] == sobj[rank], got
    smax = max(pickled_size(o) for o in sobj)
    one = torch.empty(1, dtype=torch.int64)
    ex.op("broadcast", G, [one], [one], peer=0, note="scatter_object_list: max size")
    pay = torch.empty(smax, dtype=torch.uint8)
    ex.op("scatter", G, [pay] * world if rank == 0 else [], [pay], peer=0,
          note="scatter_object_list: payload")
    ex.op("scatter", G, [one] * world if rank == 0 else [], [one], peer=0,
          note="scatter_object_list: sizes")

    # The coalescing manager: gloo turns the all_reduces inside into one allreduce_coalesced.
    a, b = torch.ones(5), torch.ones(7)
    with dist._coalescing_manager(async_ops=True) as cm:
        dist.all_reduce(a)
        dist.all_reduce(b)
    cm.wait()
    ex.op("all_reduce_coalesced", G, [a, b], [a, b], note="_coalescing_manager")

    # Under no_grad and inference_mode (metrics in an eval loop).
    with torch.no_grad():
        t = torch.ones(34)
        dist.all_reduce(t)
        ex.op("all_reduce", G, [t], [t], note="no_grad")
    with torch.inference_mode():
        t = torch.ones(33)
        dist.all_reduce(t)
        ex.op("all_reduce", G, [t], [t], note="inference_mode")
        t = torch.ones(3, dtype=torch.int32)
        dist.broadcast(t, src=0)
        ex.op("broadcast", G, [t], [t], peer=0, note="inference_mode")

    # A collective on the main thread while another thread runs an autograd backward: it is
    # not issued inside a backward on its own thread.
    import threading
    in_bwd, main_done = threading.Event(), threading.Event()

    def hold(grad):
        in_bwd.set()
        main_done.wait(30)
        return grad

    def other_thread_backward():
        w = torch.ones(3, requires_grad=True)
        z = w * 2
        z.register_hook(hold)
        z.sum().backward()

    helper = threading.Thread(target=other_thread_backward)
    helper.start()
    in_bwd.wait(30)
    t = torch.ones(31)
    dist.all_reduce(t)
    ex.op("all_reduce", G, [t], [t], backward=False, note="thread_backward")
    main_done.set()
    helper.join()

    dist.monitored_barrier()
    ex.op("monitored_barrier", G)

    ex.say(f"api_ops rank={rank} ok ops={len(ex.data['ops'])}")
    finish(ex)


if __name__ == "__main__":
    main()
