"""Host time commprof adds to one collective call: a loop of tiny all_reduces, with and without.

A 1-rank gloo group keeps the collective itself cheap and noise-free, so the difference is the
capture's own cost (dispatcher kernel, record, completion callback, Work.wait wrapper).  Runs
plain and under `commprof run` alternately, --reps times each, and prints the medians.

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

JOB = textwrap.dedent("""
    import os, sys, time, torch, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    n = int(sys.argv[1]); x = torch.ones(1)
    for _ in range(200):
        dist.all_reduce(x)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        dist.all_reduce(x)
    sync = (time.perf_counter_ns() - t0) / n
    t0 = time.perf_counter_ns()
    for _ in range(n):
        dist.all_reduce(x, async_op=True).wait()
    asyn = (time.perf_counter_ns() - t0) / n
    print(f"RESULT {sync / 1e3:.3f} {asyn / 1e3:.3f}")
    dist.destroy_process_group()
""")


def run(job: Path, ops: int, port: int, under: bool, tmp: Path, i: int) -> tuple[float, float]:
    cmd = [sys.executable, str(job), str(ops), str(port)]
    if under:
        cmd = [sys.executable, "-m", "commprof", "run", "-q", "--out", str(tmp / f"r{i}"), "--"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT"))
    sync, asyn = map(float, line.split()[1:])
    return sync, asyn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    res = {False: [], True: []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job = tmp / "job.py"
        job.write_text(JOB)
        for i in range(args.reps):
            for under in (False, True):
                res[under].append(run(job, args.ops, 29500 + i * 2 + under, under, tmp, i))
    print(f"{'':22s}{'sync all_reduce':>18s}{'async+wait':>14s}   (µs per call, median of {args.reps})")
    med = {u: [statistics.median(r[k] for r in res[u]) for k in (0, 1)] for u in res}
    for under, label in ((False, "plain"), (True, "under commprof")):
        print(f"{label:22s}{med[under][0]:18.2f}{med[under][1]:14.2f}")
    print(f"{'added by commprof':22s}{med[True][0] - med[False][0]:18.2f}"
          f"{med[True][1] - med[False][1]:14.2f}")
    print(f"summary: commprof adds {med[True][0] - med[False][0]:.2f} µs per synchronous all_reduce "
          f"({med[True][0] / med[False][0]:.2f}x of {med[False][0]:.2f} µs)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
