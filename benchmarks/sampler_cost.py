"""CPU cost of per-node counter sampling at 10 Hz and 100 Hz (% of one core).

commprof's per-node sampler (issue 5) reads NIC counters with psutil.net_io_counters(pernic=True)
(and NVML counters where GPUs exist) at a fixed rate and appends deltas to a buffer.  Until that
sampler lands, this measures the same loop on its own: read every interface's counters, compute
deltas, append them; the process's CPU time over wall time is the cost.  Re-run it against the
real sampler when issue 5 is done.

    python benchmarks/sampler_cost.py --seconds 10
"""
from __future__ import annotations

import argparse
import time

import psutil


def sample_loop(hz: float, seconds: float) -> tuple[float, int, int]:
    """(CPU % of one core, samples taken, interfaces per sample)."""
    period = 1.0 / hz
    rows = []
    prev = psutil.net_io_counters(pernic=True)
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + seconds
    next_t = t0
    n = 0
    while True:
        next_t += period
        now = time.perf_counter()
        if now >= deadline:
            break
        if next_t > now:
            time.sleep(next_t - now)
        cur = psutil.net_io_counters(pernic=True)
        ts = time.perf_counter_ns()
        for nic, c in cur.items():
            p = prev.get(nic)
            if p is not None:
                rows.append((ts, nic, c.bytes_sent - p.bytes_sent, c.bytes_recv - p.bytes_recv,
                             c.packets_sent - p.packets_sent, c.packets_recv - p.packets_recv))
        prev = cur
        n += 1
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - t0
    return 100 * cpu / wall, n, len(prev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"{'rate':>8s}{'CPU % of one core (median)':>30s}{'samples':>10s}{'NICs':>6s}")
    out = {}
    for hz in (10, 100):
        runs = [sample_loop(hz, args.seconds) for _ in range(args.reps)]
        cpu = sorted(r[0] for r in runs)[len(runs) // 2]
        out[hz] = cpu
        print(f"{hz:>6d}Hz{cpu:>30.2f}{runs[0][1]:>10d}{runs[0][2]:>6d}   "
              f"(runs: {', '.join(f'{r[0]:.2f}' for r in runs)})")
    print(f"summary: NIC sampling loop costs {out[10]:.2f}% of one core at 10 Hz and "
          f"{out[100]:.2f}% at 100 Hz (psutil {psutil.__version__})")


if __name__ == "__main__":
    main()
