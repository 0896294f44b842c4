"""Cost of the capture *mechanism* alone: a Python kernel on ADInplaceOrView that only re-dispatches.

Separates what any dispatcher-level Python kernel costs on this machine from what commprof's
recording adds (compare with per_op_cost.py).  1-rank gloo group, tiny all_reduce, median of
--reps loops of --ops calls, each variant in a fresh process.

    python benchmarks/passthrough_kernel_cost.py
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap

JOB = textwrap.dedent("""
    import os, sys, time, statistics, torch, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2], RANK="0", WORLD_SIZE="1")
    if sys.argv[1] == "passthrough":
        lib = torch.library.Library("c10d", "IMPL")
        op = torch.ops.c10d.allreduce_.default
        after = torch._C._after_ADInplaceOrView_keyset
        redispatch = op.redispatch
        def kernel(keyset, *args, **kwargs):
            return redispatch(keyset & after, *args, **kwargs)
        lib.impl("allreduce_", kernel, "ADInplaceOrView", with_keyset=True)
    dist.init_process_group("gloo")
    x = torch.ones(1)
    n, reps = int(sys.argv[3]), int(sys.argv[4])
    for _ in range(500):
        dist.all_reduce(x)
    res = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            dist.all_reduce(x)
        res.append((time.perf_counter_ns() - t0) / n / 1e3)
    calls = []
    for _ in range(n):  # the call alone: let the work finish (sleep(0)) before waiting
        t0 = time.perf_counter_ns()
        work = dist.all_reduce(x, async_op=True)
        calls.append(time.perf_counter_ns() - t0)
        time.sleep(0)
        work.wait()
    print("RESULT", statistics.median(res), statistics.median(calls) / 1e3)
    dist.destroy_process_group()
""")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    res = {"plain": [], "passthrough": []}
    call = {"plain": [], "passthrough": []}
    port = 29800
    for _ in range(args.rounds):
        for mode in res:
            port += 1
            out = subprocess.run([sys.executable, "-c", JOB, mode, str(port), str(args.ops),
                                  str(args.reps)], capture_output=True, text=True, check=True).stdout
            loop_us, call_us = map(float, out.split("RESULT")[1].split())
            res[mode].append(loop_us)
            call[mode].append(call_us)
    med = {m: (statistics.median(res[m]), statistics.median(call[m])) for m in res}
    print(f"{'':44s}{'loop of blocking calls':>24s}{'async call alone':>18s}")
    for mode, label in (("plain", "plain dist.all_reduce (1 float, 1-rank gloo)"),
                        ("passthrough", "with a pass-through ADInplaceOrView kernel")):
        print(f"{label:44s}{med[mode][0]:21.1f} µs{med[mode][1]:15.1f} µs")
    print(f"summary: the dispatcher-level Python kernel alone adds "
          f"{med['passthrough'][1] - med['plain'][1]:.1f} µs to the call and "
          f"{med['passthrough'][0] - med['plain'][0]:.1f} µs per iteration of a blocking loop")


if __name__ == "__main__":
    main()
