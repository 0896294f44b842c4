"""isend/irecv under ``commprof run``: the CPU the native kernel and its ``Work.wait`` add per
call against their own clock, inside one 2-rank gloo job.

Both ranks time --reps interleaved pairs of blocks of --ops waited isend (rank 0) / irecv
(rank 1) of 16 floats, with the kernel and the native ``Work.wait`` on and off (``set_enabled``
and torch's own ``Work.wait``, switched on both ranks between barriers): per rank, the median of
(on - off) of the wall time and of the calling thread's CPU time per call, and the kernel's own
clocked time per call in the ``on`` blocks (what the report sums).  The same bootstrap, threads
and launcher in every block, so only the kernel differs.  Wall time is printed per pair too: two
ranks on two shared cores spread it by hundreds of µs.

    python benchmarks/p2p_call_cost.py --ops 2000 --reps 21
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from native_states import free_port  # benchmarks/native_states.py

JOB = textwrap.dedent('''
import sys, time, statistics, torch, torch.distributed as dist
dist.init_process_group("gloo")
rank, n, reps = dist.get_rank(), int(sys.argv[1]), int(sys.argv[2])
x = torch.ones(16)
from commprof.capture import agent
hooks, rec = agent._agent.collectives, agent._agent.rec
nat, W = hooks.native, torch.distributed.Work
native_wait = W.wait
torch_wait = native_wait.__commprof_original__
def own_ns():
    return nat.drain(rec.coll.append, rec.done.append, rec.wait.append)[2]
def pair():
    (dist.isend(x, 1) if rank == 0 else dist.irecv(x, 0)).wait()
def block(on):
    W.wait = native_wait if on else torch_wait
    nat.set_enabled(on)
    dist.barrier()
    s0 = own_ns()
    w0, t0 = time.perf_counter_ns(), time.thread_time_ns()
    for _ in range(n):
        pair()
    w1, t1 = time.perf_counter_ns(), time.thread_time_ns()
    s1 = own_ns()
    nat.set_enabled(True); W.wait = native_wait
    return (w1 - w0) / n / 1e3, (t1 - t0) / n / 1e3, (s1 - s0) / n / 1e3
for _ in range(500):
    pair()
on, off = [], []
for i in range(reps):
    for state in ((True, False) if i % 2 else (False, True)):
        (on if state else off).append(block(state))
med = statistics.median
print(f"RESULT rank {rank} added wall {med(a[0]-b[0] for a,b in zip(on,off)):+.2f} (off {med(b[0] for b in off):.2f}) "
      f"added CPU {med(a[1]-b[1] for a,b in zip(on,off)):+.2f} (off {med(b[1] for b in off):.2f}) own {med(a[2] for a in on):.2f} "
      f"| pairs wall {' '.join(f'{a[0]-b[0]:+.1f}' for a,b in zip(on,off))}", flush=True)
dist.barrier()
dist.destroy_process_group()
''')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=2000, help="isend/irecv pairs per block")
    ap.add_argument("--reps", type=int, default=21, help="interleaved pairs of blocks")
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        print("load average at start:", " ".join(f.read().split()[:3]))
    with tempfile.TemporaryDirectory(prefix="commprof-p2pcall-") as d:
        job = Path(d) / "job.py"
        job.write_text(JOB)
        proc = subprocess.run([sys.executable, "-m", "commprof", "run", "-q", "--capture", "native",
                               "--out", f"{d}/run", "--", "torchrun", "--nproc-per-node", "2",
                               "--master-port", str(free_port()), str(job), str(args.ops),
                               str(args.reps)], capture_output=True, text=True, timeout=900)
    lines = sorted(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    if proc.returncode != 0 or len(lines) != 2:
        sys.exit(f"the job failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    print("µs per call, medians over the pairs:")
    for line in lines:
        print(" ", line[len("RESULT "):])
    with open("/proc/loadavg") as f:
        print("load average at end:", " ".join(f.read().split()[:3]))


if __name__ == "__main__":
    main()
