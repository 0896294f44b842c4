"""Where the native path's added time per blocking all_reduce goes, measured inside one process.

A 1-rank gloo job under ``commprof run --capture native`` times blocks of --ops tiny blocking
all_reduces in four states, interleaved --reps times (so machine load drifts cancel):

  full            the native kernel on, the native ``Work.wait`` on (what a run does)
  no wrapper      kernel on, ``Work.wait`` restored to torch's own
  plain           kernel off (``set_enabled(False)``: one atomic load, then re-dispatch), no wrapper
  wrapper only    kernel off, wrapper on

kernel = no wrapper - plain; wrapper = full - no wrapper.  Medians and minima over the reps.

    python benchmarks/per_call_breakdown.py --ops 2000 --reps 15
"""
from __future__ import annotations

import argparse
import textwrap

from native_states import run_states  # benchmarks/native_states.py

JOB = textwrap.dedent("""
    import os, sys, time, statistics, torch, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    n, reps = int(sys.argv[2]), int(sys.argv[3])
    x = torch.ones(1)
    Work = torch.distributed.Work
    wrapped = Work.wait
    orig = getattr(wrapped, "__commprof_original__", None)
    nat = sys.modules.get("commprof_native")
    if orig is None or nat is None:
        sys.exit("not under commprof run --capture native")
    def block():
        t0 = time.perf_counter_ns()
        for _ in range(n):
            dist.all_reduce(x)
        return (time.perf_counter_ns() - t0) / n / 1e3
    for _ in range(500):
        dist.all_reduce(x)
    states = {"full": (True, wrapped), "no wrapper": (True, orig), "plain": (False, orig),
              "wrapper only": (False, wrapped)}
    res = {k: [] for k in states}
    for _ in range(reps):
        for name, (kernel, wait) in states.items():
            Work.wait = wait
            nat.set_enabled(kernel)
            res[name].append(block())
    Work.wait, _ = wrapped, nat.set_enabled(True)
    for k, v in res.items():
        print(f"RESULT {k}|{statistics.median(v)}|{min(v)}")
    dist.destroy_process_group()
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=2000, help="all_reduces per block")
    ap.add_argument("--reps", type=int, default=15, help="interleaved blocks per state")
    args = ap.parse_args()
    rows = run_states(JOB, [str(args.ops), str(args.reps)], 4, "commprof-breakdown-")
    print(f"µs per blocking all_reduce (1-rank gloo), {args.reps} interleaved blocks of {args.ops}")
    print(f"{'state':14s}{'median':>9s}{'min':>9s}")
    for name, (med, low) in rows.items():
        print(f"{name:14s}{med:9.2f}{low:9.2f}")
    k = [rows["no wrapper"][i] - rows["plain"][i] for i in (0, 1)]
    w = [rows["full"][i] - rows["no wrapper"][i] for i in (0, 1)]
    t = [rows["full"][i] - rows["plain"][i] for i in (0, 1)]
    print(f"summary: added per call {t[0]:+.2f} µs (min {t[1]:+.2f}): kernel {k[0]:+.2f} "
          f"(min {k[1]:+.2f}), Work.wait wrapper {w[0]:+.2f} (min {w[1]:+.2f}); medians (minima) "
          f"over {args.reps} interleaved blocks")


if __name__ == "__main__":
    main()
