"""Host time commprof adds per functional-collective call (``_c10d_functional``, what DTensor uses).

Two loops on a 1-rank gloo group, each job importing ``torch.distributed._functional_collectives``
first (DTensor and commprof both import it, and the import alone makes every ``_c10d_functional``
call about 30 µs slower in torch itself, so a baseline without it would charge that to commprof):

* wait_tensor: --ops ``wait_tensor`` calls on one finished tensor (the wait kernel alone);
* funcol all_reduce: --ops ``wait_tensor(all_reduce(x))`` of 1 float (both kernels).

Each runs plain, under ``commprof run --capture python`` and ``--capture native``, interleaved,
--reps times; medians of the per-run medians (7 blocks of --ops each) are printed.

    python benchmarks/wait_tensor_cost.py --ops 20000 --reps 3
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

JOB = textwrap.dedent("""
    import os, sys, time, statistics, torch, torch.distributed as dist
    import torch.distributed._functional_collectives  # noqa: F401 - see the module docstring
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    n, kind = int(sys.argv[2]), sys.argv[3]
    g = dist.group.WORLD.group_name
    x = torch.ones(1)
    ar, wt = torch.ops._c10d_functional.all_reduce, torch.ops._c10d_functional.wait_tensor
    y = wt(ar(x, "sum", g))

    def block():
        t0 = time.perf_counter_ns()
        if kind == "wait_tensor":
            for _ in range(n):
                wt(y)
        else:
            for _ in range(n):
                wt(ar(x, "sum", g))
        return (time.perf_counter_ns() - t0) / n / 1e3

    block()
    print("RESULT", statistics.median(block() for _ in range(7)))
    dist.destroy_process_group()
""")
PATHS = ("plain", "python", "native")
KINDS = ("wait_tensor", "funcol all_reduce")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one(job: Path, tmp: Path, path: str, kind: str, ops: int, tag: str) -> float:
    cmd = [sys.executable, str(job), str(free_port()), str(ops), kind.split()[-1]]
    if path != "plain":
        cmd = [sys.executable, "-m", "commprof", "run", "-q", "--capture", path, "--sample-hz", "0",
               "--out", str(tmp / tag), "--"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        sys.exit(f"{path} {kind} failed (exit {out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return float(line.split()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=20000, help="calls per block")
    ap.add_argument("--reps", type=int, default=3, help="interleaved runs per path")
    args = ap.parse_args()
    built = subprocess.run([sys.executable, "-m", "commprof", "build-native"], capture_output=True, text=True)
    if built.returncode != 0:
        sys.exit(f"commprof build-native failed: {built.stderr[-2000:]}")
    res = {(k, p): [] for k in KINDS for p in PATHS}
    with tempfile.TemporaryDirectory(prefix="commprof-waittensor-") as d:
        tmp = Path(d)
        job = tmp / "job.py"
        job.write_text(JOB)
        for rep in range(args.reps):
            for kind in KINDS:
                for path in PATHS:
                    res[kind, path].append(one(job, tmp, path, kind, args.ops, f"{rep}{path}{kind[0]}"))
    print(f"µs per call, 1-rank gloo, median of {args.reps} interleaved runs (each the median of 7 "
          f"blocks of {args.ops})")
    print(f"{'':20}{'plain':>9}{'python':>9}{'added':>9}{'native':>9}{'added':>9}")
    summary = []
    for kind in KINDS:
        m = {p: statistics.median(res[kind, p]) for p in PATHS}
        print(f"{kind:20}{m['plain']:9.2f}{m['python']:9.2f}{m['python'] - m['plain']:+9.2f}"
              f"{m['native']:9.2f}{m['native'] - m['plain']:+9.2f}")
        print(f"  runs: " + "; ".join(f"{p} " + " ".join(f"{v:.1f}" for v in res[kind, p]) for p in PATHS))
        summary.append(f"{kind} python {m['python'] - m['plain']:+.1f} µs, native {m['native'] - m['plain']:+.1f} µs")
    print("summary: commprof adds " + "; ".join(summary) + " (target <= 5 µs per op)")


if __name__ == "__main__":
    main()
