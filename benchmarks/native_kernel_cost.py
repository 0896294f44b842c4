"""The capture kernels' cost per call in one process, without gloo's thread hand-offs.

A loop of blocking 1-float all_reduces on torch's in-process fake backend (2 ranks' worth of
bookkeeping, no communication): plain, with the Python kernel, with the native (C++) kernel, in
interleaved fresh processes; prints the best-of-5 µs per call of each and each kernel's own
recording time per call (measured inside the kernel, what the report's overhead section shows).

    python benchmarks/native_kernel_cost.py --ops 20000 --reps 3
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import sys, time, torch, torch.distributed as dist
    from commprof.capture.recorder import Recorder
    from commprof.capture.collectives import CollectiveHooks
    path, n = sys.argv[1], int(sys.argv[2])
    rec = Recorder("/nonexistent", lambda: ("x", {}), 1.0)
    rec.open = lambda: None  # no capture file: the records stay in memory
    if path == "native":
        from commprof.capture import native
        from commprof.capture.native.hooks import NativeHooks
        NativeHooks(rec, torch, native.load_for(torch, sys.argv[3] or None)).install()
    elif path == "python":
        CollectiveHooks(rec, torch).install()
    from torch.testing._internal.distributed.fake_pg import FakeStore
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    x = torch.ones(1)
    for _ in range(1000):
        dist.all_reduce(x)
    def drain():
        for f in rec.before_flush:
            f()
        del rec.coll[:], rec.done[:], rec.wait[:]
    drain()
    r0, s0, times = rec.records, rec.self_ns, []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            dist.all_reduce(x)
        times.append((time.perf_counter_ns() - t0) / n / 1e3)
        drain()
    own = (rec.self_ns - s0) / max(rec.records - r0, 1) / 1e3
    print(f"RESULT {min(times):.3f} {own:.3f}")
""")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from commprof.cli.native import resolve
    built = resolve()
    if not built.get("ok"):
        raise SystemExit(f"native capture unavailable: {built.get('why')}")
    paths = ("plain", "python", "native")
    res = {p: [] for p in paths}
    own = {p: [] for p in paths}
    for i in range(args.reps):
        for p in (paths if i % 2 == 0 else paths[::-1]):
            out = subprocess.run([sys.executable, "-c", CHILD, p, str(args.ops), built["so"]],
                                 capture_output=True, text=True, timeout=600, check=True).stdout
            us, ns = map(float, next(l for l in out.splitlines() if l.startswith("RESULT")).split()[1:])
            res[p].append(us)
            own[p].append(ns)
    plain = statistics.median(res["plain"])
    print(f"µs per blocking all_reduce on the fake backend, median over {args.reps} processes of the best of 5 loops")
    for p in paths:
        t = statistics.median(res[p])
        print(f"{p:8s}{t:9.2f} µs   added {t - plain:+7.2f} µs   own recording {statistics.median(own[p]):6.3f} µs/call")
    print(f"summary: native kernel adds {statistics.median(res['native']) - plain:+.2f} µs per call "
          f"(own {statistics.median(own['native']):.2f} µs), Python kernel "
          f"{statistics.median(res['python']) - plain:+.2f} µs (own {statistics.median(own['python']):.2f} µs)")


if __name__ == "__main__":
    main()
