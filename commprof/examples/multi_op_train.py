"""A multi-op example job (tensor-parallel-like): per step, compute plus all_gather,
reduce_scatter, all_to_all, a broadcast, a P2P ring shift and a gradient all_reduce (gloo, CPU).
An ordinary script: no commprof code.

    torchrun --standalone --nproc-per-node 2 multi_op_train.py --steps 20
"""
from __future__ import annotations

import argparse

import torch
import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, n = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)
    w = torch.nn.Parameter(torch.randn(512, 512) * 0.01)
    opt = torch.optim.SGD([w], lr=0.01)
    shard = torch.randn(64 * 1024)
    for _ in range(args.steps):
        x = torch.randn(256, 512)
        gathered = torch.empty(shard.numel() * n)
        dist.all_gather_into_tensor(gathered, shard)                     # parameters in
        loss = torch.tanh(x @ w).pow(2).mean()
        loss.backward()
        reduced = torch.empty(gathered.numel() // n)
        dist.reduce_scatter_tensor(reduced, gathered)                    # gradients out
        routed = torch.empty(256 * 1024)
        dist.all_to_all_single(routed, torch.randn(256 * 1024))          # expert routing
        dist.broadcast(torch.ones(1024), src=0)                          # a config sync
        send, recv = torch.randn(32 * 1024), torch.empty(32 * 1024)
        reqs = [dist.isend(send, (rank + 1) % n), dist.irecv(recv, (rank - 1) % n)]
        for r in reqs:
            r.wait()                                                     # pipeline hand-off
        dist.all_reduce(w.grad)                                          # data-parallel grads
        opt.step()
        opt.zero_grad()
    if rank == 0:
        print(f"multi-op job: {args.steps} steps on {n} ranks", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
