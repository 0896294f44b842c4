"""Host time commprof adds per communication call: tiny all_reduces and small isend/irecv pairs.

* all_reduce: a loop of --ops blocking all_reduces of 1 float on a 1-rank gloo group (the
  collective itself is cheap and noise-free, so the difference is the capture's own cost);
* isend/irecv: --ops pairs of 16-float async isend (rank 0) / irecv (rank 1), each waited, on
  2 ranks under torchrun.
Each runs plain, under `commprof run --capture python` and under `commprof run --capture native`
(the C++ kernel, built once before the first repetition), interleaved, --reps times; medians are
printed, and each path's own recording time per call as the capture reports it (``self_cost``:
measured inside the kernel with the clock, the re-dispatch excluded; medians over repetitions,
rank 0).

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


PATHS = ("plain", "python", "native")


def run(kind: str, script: Path, ops: int, port: int, path: str, tmp: Path, tag: str) -> tuple:
    """(µs per op, commprof's own ns per call on rank 0 or None) of one run."""
    if kind == "all_reduce":
        cmd = [sys.executable, str(script), str(ops), str(port)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
               "--master-addr=127.0.0.1", f"--master-port={port}", str(script), str(ops)]
    out_dir = tmp / tag
    if path != "plain":
        cmd = [sys.executable, "-m", "commprof", "run", "-q", "--capture", path, "--out",
               str(out_dir), "--"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    us = float(next(l for l in out.splitlines() if l.startswith("RESULT")).split()[1])
    return us, (self_ns_per_call(out_dir, path) if path != "plain" else None)


def self_ns_per_call(run_dir: Path, path: str) -> float | None:
    from commprof.format.reader import capture_paths, read_capture
    caps = sorted((read_capture(p) for p in capture_paths(run_dir)), key=lambda c: c.rank)
    if not caps:
        return None
    events = caps[0].events
    ran = [e.get("path") for e in events if e.get("event") == "capture_path"]
    if ran != [path]:
        raise SystemExit(f"asked for the {path} path, the capture ran {ran}")
    cost = [e for e in events if e.get("type") == "self_cost"]
    return cost[-1]["record_ns"] / max(cost[-1]["calls"], 1) if cost else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    from commprof.cli.native import resolve
    built = resolve()  # build before timing anything (what `commprof run` would do first)
    if not built.get("ok"):
        raise SystemExit(f"native capture unavailable: {built.get('why')}")
    res = {(k, p): [] for k in ("all_reduce", "isend/irecv") for p in PATHS}
    own = {(k, p): [] for k in ("all_reduce", "isend/irecv") for p in PATHS[1:]}
    port = 29500
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        scripts = {"all_reduce": tmp / "allreduce.py", "isend/irecv": tmp / "p2p.py"}
        scripts["all_reduce"].write_text(ALLREDUCE)
        scripts["isend/irecv"].write_text(P2P)
        for i in range(args.reps):
            for kind in scripts:
                order = PATHS if i % 2 == 0 else PATHS[::-1]
                for path in order:
                    port += 1
                    us, ns = run(kind, scripts[kind], args.ops, port, path, tmp,
                                 f"{kind.replace('/', '_')}-{path}-{i}")
                    res[(kind, path)].append(us)
                    if ns is not None:
                        own[(kind, path)].append(ns)
    med = statistics.median
    print(f"µs per op, median of {args.reps} interleaved repetitions ({args.ops} ops each)")
    print(f"{'':14s}{'plain':>9s}{'python':>9s}{'added':>9s}{'native':>9s}{'added':>9s}"
          f"{'own/call py':>13s}{'own/call C++':>14s}")
    lines = []
    for kind in ("all_reduce", "isend/irecv"):
        plain, py, nat = (med(res[(kind, p)]) for p in PATHS)
        own_py, own_nat = (med(own[(kind, p)]) / 1e3 for p in PATHS[1:])
        print(f"{kind:14s}{plain:9.2f}{py:9.2f}{py - plain:+9.2f}{nat:9.2f}{nat - plain:+9.2f}"
              f"{own_py:11.2f}µs{own_nat:12.2f}µs")
        lines.append(f"{kind} python +{py - plain:.1f} µs, native {nat - plain:+.1f} µs "
                     f"(own {own_nat:.2f} µs/call)")
    for kind in ("all_reduce", "isend/irecv"):
        print(f"  {kind} runs: " + "; ".join(f"{p} " + " ".join(f"{x:.1f}" for x in res[(kind, p)])
                                              for p in PATHS))
    print("summary: commprof adds " + ", ".join(lines) + " (target <= 5 µs per op)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
