"""How `commprof report` scales: time and peak memory on large synthetic runs.

Writes a synthetic run directory through commprof's real writer (CaptureWriter + framed batches,
as the capture agent writes them): R ranks x S steps x K collectives per step (a DDP/FSDP-like
mix: all_reduce in backward, all_gather, reduce_scatter, with completions, waits, optimizer
marks and backward spans), then runs `commprof report --format json` on it in a child process
and reports wall time and the child's peak RSS.

    python benchmarks/report_scale.py                      # 64 x 2000 x 80 = 10.24 M records
    python benchmarks/report_scale.py --sizes 8x2000x80 16x2000x80 32x2000x80 64x2000x80
    python benchmarks/report_scale.py --sizes 1024x100x40  # many ranks, fewer steps
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from commprof.format import reader, schema
from commprof.format.writer import CaptureWriter, encode_frame, encode_json
from commprof.launch import rundir

BATCH = 8192  # records per frame, like a busy flusher
MS = 1_000_000


def rank_arrays(rank: int, steps: int, k: int, rng: np.random.Generator) -> dict:
    """COLL/DONE/WAIT/MARK/SPAN arrays of one synthetic rank."""
    step_ns = 100 * MS
    n = steps * k
    coll = np.zeros(n, reader.DTYPES[schema.KIND_COLL])
    step = np.repeat(np.arange(steps), k)
    j = np.tile(np.arange(k), steps)
    t0 = step * step_ns + 10 * MS
    ops = np.where(j < k * 3 // 4, schema.OP_INDEX["all_reduce"],
                   np.where(j % 2 == 0, schema.OP_INDEX["all_gather"], schema.OP_INDEX["reduce_scatter"]))
    size = np.where(ops == schema.OP_INDEX["all_reduce"], 4 << 20, 1 << 20).astype("int64")
    issue = t0 + j * (80 * MS // k) + rng.integers(0, 100_000, n)
    coll["id"] = np.arange(n)
    coll["op"] = ops
    coll["group"] = 0
    coll["seq"] = np.arange(n)
    coll["dtype"] = schema.DTYPE_INDEX["float32"]
    coll["flags"] = schema.FLAG_HAS_FUTURE | np.where(j < k * 3 // 4, schema.FLAG_IN_BACKWARD, 0)
    coll["peer"] = -1
    coll["in_bytes"] = size
    coll["out_bytes"] = np.where(ops == schema.OP_INDEX["reduce_scatter"], size // 8, size)
    coll["in_numel"], coll["out_numel"] = coll["in_bytes"] // 4, coll["out_bytes"] // 4
    coll["thread"] = 0x7F0000001000
    coll["t_issue"] = issue
    coll["t_return"] = issue + 30_000
    done = np.zeros(n, reader.DTYPES[schema.KIND_DONE])
    done["id"], done["t_done"], done["source"] = coll["id"], issue + rng.integers(500_000, 2 * MS, n), 1
    waited = j % 8 == 7
    wait = np.zeros(int(waited.sum()), reader.DTYPES[schema.KIND_WAIT])
    wait["id"], wait["thread"] = coll["id"][waited], 0x7F0000001000
    wait["t_start"], wait["t_end"] = issue[waited] + 100_000, done["t_done"][waited] + 20_000
    wait["source"] = schema.WAIT_WORK
    mark = np.zeros(steps + 4, reader.DTYPES[schema.KIND_MARK])
    mark["kind"][:steps] = schema.MARK_STEP_OPTIMIZER
    mark["t"][:steps] = (np.arange(steps) + 1) * step_ns
    mark["kind"][steps:] = [schema.MARK_START, schema.MARK_PG_INIT, schema.MARK_PG_DESTROY,
                            schema.MARK_EXIT]
    mark["t"][steps:] = [0, 1, steps * step_ns + 1, steps * step_ns + 2]
    span = np.zeros(steps, reader.DTYPES[schema.KIND_SPAN])
    span["kind"], span["thread"] = schema.SPAN_BACKWARD, 0x7F0000001000
    span["t_start"] = np.arange(steps) * step_ns + 10 * MS
    span["t_end"] = np.arange(steps) * step_ns + 95 * MS
    return {schema.KIND_COLL: coll, schema.KIND_DONE: done, schema.KIND_WAIT: wait,
            schema.KIND_MARK: mark, schema.KIND_SPAN: span}


def write_run(run_dir: Path, ranks: int, steps: int, k: int) -> int:
    """The synthetic run, written through CaptureWriter; returns its size in bytes."""
    (run_dir / "ranks").mkdir(parents=True)
    rundir.write_manifest(run_dir, {"schema": rundir.MANIFEST_SCHEMA, "status": "finished",
                                    "command": ["synthetic", f"{ranks}x{steps}x{k}"], "exit_code": 0,
                                    "start_wall_ns": 0, "end_wall_ns": steps * 100 * MS})
    rng = np.random.default_rng(0)
    total = 0
    for r in range(ranks):
        header = {"rank": r, "world_size": ranks, "host": f"node{r // 8}", "pid": 1000 + r,
                  "restart": 0, "clock": {"wall_ns": 0, "mono_ns": 0}}
        w = CaptureWriter(str(run_dir / "ranks" / f"rank{r:05d}.a0.p{1000 + r}.cpf"), header)
        w.write(encode_json({"type": "group", "id": 0, "name": "0", "desc": "default_pg",
                             "size": ranks, "rank": r, "backend": "gloo",
                             "ranks": list(range(ranks))}))
        for kind, arr in rank_arrays(r, steps, k, rng).items():
            for i in range(0, len(arr), BATCH):
                w.write(encode_frame(kind, arr[i:i + BATCH].tobytes()))
        w.close({"reason": "exit", "records": steps * k})
        total += w.bytes_written
    return total


def measure_report(run_dir: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `commprof report --format json` on run_dir."""
    out = run_dir / "report.json"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "commprof", "report", str(run_dir), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"commprof report failed: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["64x2000x80"], help="RANKSxSTEPSxOPS_PER_STEP")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic run directories")
    args = ap.parse_args()
    rows = []
    base = Path(tempfile.mkdtemp(prefix="commprof-scale-"))
    try:
        for spec in args.sizes:
            ranks, steps, k = map(int, spec.split("x"))
            run_dir = base / spec
            t0 = time.perf_counter()
            size = write_run(run_dir, ranks, steps, k)
            gen = time.perf_counter() - t0
            secs, rss = measure_report(run_dir)
            rows.append((spec, ranks * steps * k, size, gen, secs, rss))
            print(f"{spec}: {ranks * steps * k / 1e6:.2f} M records, {size / 1e6:.0f} MB on disk "
                  f"(written in {gen:.1f} s); report {secs:.1f} s, peak RSS {rss:.0f} MB", flush=True)
            if not args.keep:
                shutil.rmtree(run_dir)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n{'size':>14s} {'records':>10s} {'disk MB':>8s} {'report s':>9s} {'peak MB':>8s} "
          f"{'µs/record':>9s}")
    for spec, n, size, gen, secs, rss in rows:
        print(f"{spec:>14s} {n:>10,d} {size / 1e6:8.0f} {secs:9.1f} {rss:8.0f} {secs / n * 1e6:9.2f}")
    spec, n, size, gen, secs, rss = rows[-1]
    print(f"summary: {spec} ({n / 1e6:.2f} M records): report in {secs:.1f} s (target <= 30 s), "
          f"peak RSS {rss / 1024:.2f} GB (target <= 2 GB)")


if __name__ == "__main__":
    main()
