"""The native kernel's clock against the CPU it adds per call, in a DDP-like pattern.

Inside one ``commprof run --capture native`` job (1-rank gloo), each async all_reduce call
(``async_op=True``, as DDP's buckets; the wait is outside the timing) is timed alone by wall
clock and by the calling thread's CPU time, with the kernel on and off (``set_enabled``) in
interleaved blocks, and the kernel's own clocked time per call is read around each block (the
number the report sums).  Four cases: a 4-byte tensor or a 4 MiB one (a DDP bucket's size in
the demo), called back to back ("hot") or after work that evicts the caches ("cold": a matmul
and a pass over 32 MiB, as a backward does between buckets).  The kernel's clock is
wall time: the question is whether it counts more than the CPU time the kernel adds.

    python benchmarks/ddp_call_cost.py --calls 200 --reps 9 [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from native_states import free_port  # benchmarks/native_states.py

JOB = textwrap.dedent("""
    import os, sys, time, torch, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    calls, reps, threads = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if threads > 0:
        torch.set_num_threads(threads)
    from commprof.capture import agent
    hooks, rec = agent._agent.collectives, agent._agent.rec
    nat = hooks.native
    def own_ns():
        return nat.drain(rec.coll.append, rec.done.append, rec.wait.append)[2]
    big = torch.ones(32 << 18)  # 32 MiB
    a = torch.randn(384, 384)
    def evict():
        (a @ a).sum(); big.add_(1.0)
    def block(x, cold, on):
        nat.set_enabled(on)
        s0 = own_ns()
        wall = cpu = 0
        for _ in range(calls):
            if cold:
                evict()
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            w = dist.all_reduce(x, async_op=True)
            w1, c1 = time.perf_counter_ns(), time.thread_time_ns()
            w.wait()
            wall += w1 - w0; cpu += c1 - c0
        return wall / calls / 1e3, cpu / calls / 1e3, (own_ns() - s0) / calls / 1e3
    for numel in (1, 1 << 20):
        x = torch.ones(numel)
        for _ in range(200):
            dist.all_reduce(x)
        for cold in (False, True):
            on, off = [], []
            for i in range(reps):
                pair = [(True, on), (False, off)]
                for state, out in (pair if i % 2 else pair[::-1]):
                    out.append(block(x, cold, state))
            print("RESULT", numel * 4, "cold" if cold else "hot",
                  " ".join(f"{p[0]:.4f},{p[1]:.4f},{p[2]:.4f}" for p in on), "|",
                  " ".join(f"{p[0]:.4f},{p[1]:.4f},{p[2]:.4f}" for p in off))
    nat.set_enabled(True)
    dist.destroy_process_group()
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200, help="calls per block")
    ap.add_argument("--reps", type=int, default=9, help="interleaved pairs of blocks per case")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch.set_num_threads in the job (0: torch's default; 1: no intra-op "
                         "threads spinning after the eviction's matmul)")
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        print("load average at start:", " ".join(f.read().split()[:3]))
    with tempfile.TemporaryDirectory(prefix="commprof-ddpcall-") as d:
        job = Path(d) / "job.py"
        job.write_text(JOB)
        proc = subprocess.run([sys.executable, "-m", "commprof", "run", "-q", "--capture", "native",
                               "--out", f"{d}/run", "--", sys.executable, str(job), str(free_port()),
                               str(args.calls), str(args.reps), str(args.threads)], capture_output=True, text=True,
                              timeout=900)
    lines = [l.split() for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or len(lines) != 4:
        sys.exit(f"the job failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    med = statistics.median
    print("case                 | added wall | added CPU (thread) | kernel's own clock | wall off")
    for parts in lines:
        cut = parts.index("|")
        on = [tuple(map(float, v.split(","))) for v in parts[3:cut]]
        off = [tuple(map(float, v.split(","))) for v in parts[cut + 1:]]
        wall = med(a[0] - b[0] for a, b in zip(on, off))
        cpu = med(a[1] - b[1] for a, b in zip(on, off))
        own = med(a[2] for a in on)
        print(f"{parts[1]:>8} B, {parts[2]:<4}     | {wall:+8.2f} µs | {cpu:+8.2f} µs         | "
              f"{own:8.2f} µs        | {med(b[0] for b in off):8.2f} µs")
    with open("/proc/loadavg") as f:
        print("load average at end:", " ".join(f.read().split()[:3]))


if __name__ == "__main__":
    main()
