"""A small DDP classifier with a held-out metric (``commprof try``'s judgement, issue 25).

A fixed synthetic data set (numpy ``RandomState(1234)``: not offset by ``COMMPROF_SEED_OFFSET``,
like a data set a package ships): 4 classes from a random two-layer teacher on 32 features,
4096 training and 1024 held-out examples.  The model's initialization and each rank's batches
come from ``torch.manual_seed`` / ``torch.Generator().manual_seed`` (offset by commprof).

The job opts in to commprof with two documented lines: ``commprof.train_steps`` (``--steps`` of
``commprof try`` ends training, not the evaluation after it) and ``commprof.metric("val_acc",
...)``.  With ``--log-loss FILE`` each rank appends its own loss of every step — what it
optimizes: under ``--accumulate N`` the sum of the N micro-batch losses divided by N — to
FILE.rankR (the test's oracle for commprof's loss).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import commprof  # noqa: E402


def data(n_train: int = 4096, n_test: int = 1024, dim: int = 32, classes: int = 4):
    rs = np.random.RandomState(1234)
    w1, w2 = rs.randn(dim, 16), rs.randn(16, classes)
    x = rs.randn(n_train + n_test, dim).astype(np.float32)
    y = np.argmax(np.tanh(x @ w1) @ w2 + 0.3 * rs.randn(n_train + n_test, classes), axis=1)
    x, y = torch.from_numpy(x), torch.from_numpy(y).long()
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--log-loss", default=None)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    (x, y), (xt, yt) = data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, args.width), nn.ReLU(), nn.Linear(args.width, args.width),
                          nn.ReLU(), nn.Linear(args.width, 4))
    ddp = DDP(model, bucket_cap_mb=25)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    gen = torch.Generator().manual_seed(100 + rank)
    log = open(f"{args.log_loss}.rank{rank}", "w") if args.log_loss else None
    for step in range(commprof.train_steps(args.steps)):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(args.accumulate):
            idx = torch.randint(0, len(x), (args.batch,), generator=gen)
            loss = nn.functional.cross_entropy(ddp(x[idx]), y[idx]) / args.accumulate
            if micro < args.accumulate - 1:
                with ddp.no_sync():
                    loss.backward()
            else:
                loss.backward()
            total += float(loss.detach())
        opt.step()
        if log:
            log.write(f"{step} {total!r}\n")
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    commprof.metric("val_acc", acc, higher_is_better=True)
    if rank == 0:
        print(f"val_acc {acc:.4f}", flush=True)
    if log:
        log.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
