"""Host time commprof adds per communication call: tiny all_reduces and small isend/irecv pairs.

* all_reduce: a loop of --ops blocking all_reduces of 1 float on a 1-rank gloo group (the
  collective itself is cheap and noise-free, so the difference is the capture's own cost);
* isend/irecv: --ops pairs of 16-float async isend (rank 0) / irecv (rank 1), each waited, on
  2 ranks under torchrun.
Each runs plain and under `commprof run`, alternately, --reps times; medians are printed.

    python benchmarks/per_op_cost.py --ops 20000 --reps 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ALLREDUCE = textwrap.dedent("""
    import os, sys, time, torch, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    n = int(sys.argv[1]); x = torch.ones(1)
    for _ in range(500):
        dist.all_reduce(x)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        dist.all_reduce(x)
    print(f"RESULT {(time.perf_counter_ns() - t0) / n / 1e3:.3f}")
    dist.destroy_process_group()
""")

P2P = textwrap.dedent("""
    import sys, time, torch, torch.distributed as dist
    dist.init_process_group("gloo")
    rank, n = dist.get_rank(), int(sys.argv[1])
    x = torch.ones(16)
    def pair():
        (dist.isend(x, 1) if rank == 0 else dist.irecv(x, 0)).wait()
    for _ in range(500):
        pair()
    dist.barrier()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        pair()
    if rank == 0:
        print(f"RESULT {(time.perf_counter_ns() - t0) / n / 1e3:.3f}", flush=True)
    dist.destroy_process_group()
    time.sleep(0.2)
""")


def run(kind: str, script: Path, ops: int, port: int, under: bool, tmp: Path, tag: str) -> float:
    if kind == "all_reduce":
        cmd = [sys.executable, str(script), str(ops), str(port)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
               "--master-addr=127.0.0.1", f"--master-port={port}", str(script), str(ops)]
    if under:
        cmd = [sys.executable, "-m", "commprof", "run", "-q", "--out", str(tmp / tag), "--"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    return float(next(l for l in out.splitlines() if l.startswith("RESULT")).split()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    res = {(k, u): [] for k in ("all_reduce", "isend/irecv") for u in (False, True)}
    port = 29500
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        scripts = {"all_reduce": tmp / "allreduce.py", "isend/irecv": tmp / "p2p.py"}
        scripts["all_reduce"].write_text(ALLREDUCE)
        scripts["isend/irecv"].write_text(P2P)
        for i in range(args.reps):
            for kind in scripts:
                for under in (False, True):
                    port += 1
                    res[(kind, under)].append(run(kind, scripts[kind], args.ops, port, under, tmp,
                                                  f"{kind.replace('/', '_')}{i}"))
    print(f"{'µs per op (median of ' + str(args.reps) + ')':28s}{'plain':>10s}{'commprof':>10s}"
          f"{'added':>10s}{'ratio':>8s}")
    lines = []
    for kind in ("all_reduce", "isend/irecv"):
        plain = statistics.median(res[(kind, False)])
        under = statistics.median(res[(kind, True)])
        spread = (min(res[(kind, True)]) - max(res[(kind, False)]),
                  max(res[(kind, True)]) - min(res[(kind, False)]))
        print(f"{kind:28s}{plain:10.2f}{under:10.2f}{under - plain:10.2f}{under / plain:8.2f}"
              f"   (added, worst/best pairing: {spread[0]:.1f} .. {spread[1]:.1f})")
        lines.append(f"{kind} +{under - plain:.1f} µs/op")
    print("summary: commprof adds " + ", ".join(lines) + " (target <= 5 µs per op)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
