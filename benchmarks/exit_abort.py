"""How often does torch 2.13 + gloo abort at interpreter exit, with and without commprof?

torch 2.13 + gloo sometimes dies at exit with "terminate called without an active exception"
(a gloo worker thread frees a Work during finalization).  commprof must not make it more likely.
Runs a short DDP job (no destroy_process_group: the worst case) N times each way, interleaved,
and prints the abort counts.

    python benchmarks/exit_abort.py --runs 15
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

JOB = textwrap.dedent("""
    import torch, torch.distributed as dist
    dist.init_process_group("gloo")
    m = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(64, 64))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(5):
        m(torch.randn(8, 64)).sum().backward(); opt.step(); opt.zero_grad()
    x = torch.ones(16)
    for _ in range(20):
        dist.all_reduce(x)
    # no destroy_process_group(): the case where the abort is most frequent
""")


def one(job: Path, port: int, under_commprof: bool, tmp: Path, i: int) -> tuple[bool, int]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
           "--master-addr=127.0.0.1", f"--master-port={port}", "--max-restarts=0", str(job)]
    if under_commprof:
        cmd = [sys.executable, "-m", "commprof", "run", "-q", "--out", str(tmp / f"run{i}"), "--"] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return "terminate called" in p.stderr, p.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--port", type=int, default=29731)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job = tmp / "job.py"
        job.write_text(JOB)
        counts = {False: [0, 0], True: [0, 0]}
        for i in range(args.runs):
            for mode in (False, True):
                aborted, rc = one(job, args.port + (i % 50), mode, tmp, i)
                counts[mode][0] += aborted
                counts[mode][1] += rc != 0
                print(f"run {i:2d} {'commprof' if mode else 'plain   '}: "
                      f"{'ABORT' if aborted else 'ok   '} rc={rc}", flush=True)
    for mode, label in ((False, "plain torchrun"), (True, "under commprof")):
        print(f"{label:15s}: {counts[mode][0]}/{args.runs} runs printed 'terminate called', "
              f"{counts[mode][1]}/{args.runs} exited non-zero")


if __name__ == "__main__":
    main()
