"""How `commprof report` scales: time and peak memory on large synthetic runs.

Writes a synthetic run directory through commprof's real writer (CaptureWriter + framed batches,
as the capture agent writes them): R ranks x S steps x K collectives per step (a DDP/FSDP-like
mix: all_reduce in backward, all_gather, reduce_scatter, with completions, waits, optimizer
marks and backward spans), then runs `commprof report --format json` on it in a child process
and reports wall time and the child's peak RSS.

    python benchmarks/report_scale.py                      # 64 x 2000 x 80 = 10.24 M records
    python benchmarks/report_scale.py --sizes 8x2000x80 16x2000x80 32x2000x80 64x2000x80
    python benchmarks/report_scale.py --sizes 1024x100x40  # many ranks, fewer steps
    python benchmarks/report_scale.py --sizes 10240x200x40 --jobs 1 2 --dir /tmp/scale  # 82 M records
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


def write_node_summaries(run_dir: Path, ranks: int, per_node: int = 8) -> tuple[float, float, int]:
    """What `commprof run` does at job end on each node (host ``node<N>``: ``per_node`` ranks),
    one node after another on one core: (median seconds per node, max seconds, bytes written)."""
    from commprof.analysis.scale.node_summary import write_node_summary
    secs, size = [], 0
    by_node: dict[int, list[Path]] = {}
    for r in range(ranks):  # the names write_run gives
        by_node.setdefault(r // per_node, []).append(run_dir / "ranks" / f"rank{r:05d}.a0.p{1000 + r}.cpf")
    for node, paths in by_node.items():
        w = write_node_summary(run_dir, host=f"node{node}", pid=node, jobs=1, paths=paths)
        secs.append(w.seconds)
        size += w.bytes
    return float(np.median(secs)), float(max(secs)), size


def measure_report(run_dir: Path, jobs: int | None = None, *extra: str) -> tuple[float, float, float]:
    """(wall seconds, peak RSS of the largest process in MB, peak RSS of the report process and
    its workers together in MB, sampled every 50 ms) of `commprof report -o report.json`."""
    import psutil
    out = run_dir / "report.json"
    cmd = [sys.executable, "-m", "commprof", "report", str(run_dir), "-o", str(out)]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    cmd += list(extra)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    tree_peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
        except psutil.Error:
            rss = 0  # a worker ended between listing and reading: the next sample counts
        tree_peak = max(tree_peak, rss)
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"commprof report failed: {proc.stderr.read().decode()}")
    largest = usage.ru_maxrss / 1024  # the largest of the report process and its workers
    return elapsed, largest, max(tree_peak / 2**20, largest)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["64x2000x80"], help="RANKSxSTEPSxOPS_PER_STEP")
    ap.add_argument("--jobs", nargs="+", type=int, default=[None],
                    help="report with each of these --jobs (default: commprof's own default)")
    ap.add_argument("--dir", help="write the runs here and keep them (reused when already there)")
    ap.add_argument("--node-summaries", action="store_true",
                    help="also write each node's summary (8 ranks a node), as `commprof run` does at "
                         "job end, time it, and report from the summaries as well as from the captures")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic run directories")
    args = ap.parse_args()
    rows = []
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="commprof-scale-"))
    keep = args.keep or bool(args.dir)
    try:
        for spec in args.sizes:
            ranks, steps, k = map(int, spec.split("x"))
            run_dir = base / spec
            t0 = time.perf_counter()
            if (run_dir / "manifest.json").exists():
                size, gen = sum(p.stat().st_size for p in (run_dir / "ranks").iterdir()), 0.0
            else:
                size = write_run(run_dir, ranks, steps, k)
                gen = time.perf_counter() - t0
            sources = ["captures"]
            if args.node_summaries:
                med, worst, sbytes = write_node_summaries(run_dir, ranks)
                print(f"{spec}: node summaries written, {med:.2f} s per node of 8 ranks on one core "
                      f"(median; max {worst:.2f} s), {sbytes / 1e6:.0f} MB in all", flush=True)
                sources.append("summaries")
            for source in sources:
                for jobs in args.jobs:
                    extra = ["--from-captures"] if source == "captures" else []
                    secs, own, tree = measure_report(run_dir, jobs, *extra)
                    rows.append((f"{spec} {source}", jobs, ranks * steps * k, size, secs, own, tree))
                    print(f"{spec} from {source}, --jobs {jobs or 'default'}: {ranks * steps * k / 1e6:.2f} "
                          f"M records, {size / 1e6:.0f} MB of captures (written in {gen:.1f} s); report "
                          f"{secs:.1f} s, peak RSS {own:.0f} MB (with workers {tree:.0f} MB)", flush=True)
            if not keep:
                shutil.rmtree(run_dir)
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n{'size':>23s} {'jobs':>7s} {'records':>11s} {'disk MB':>8s} {'report s':>9s} {'peak MB':>8s} "
          f"{'+workers':>8s} {'µs/record':>9s}")
    for spec, jobs, n, size, secs, own, tree in rows:
        print(f"{spec:>23s} {str(jobs or 'default'):>7s} {n:>11,d} {size / 1e6:8.0f} {secs:9.1f} {own:8.0f} "
              f"{tree:8.0f} {secs / n * 1e6:9.2f}")
    one = {spec: secs for spec, jobs, n, size, secs, own, tree in rows if jobs == 1}
    for spec, jobs, n, size, secs, own, tree in rows:
        if jobs and jobs > 1 and spec in one:
            print(f"speed-up of --jobs {jobs} on {spec}: {one[spec] / secs:.2f}x")
    spec, jobs, n, size, secs, own, tree = rows[-1]
    print(f"summary: {spec} ({n / 1e6:.2f} M records, --jobs {jobs or 'default'}): report in {secs:.1f} s, "
          f"peak RSS {tree / 1024:.2f} GB with its workers (target <= 2 GB)")


if __name__ == "__main__":
    main()
