"""How big are captures on disk, and how much memory does capture add to a rank?

(i)  Bytes on disk per collective record.  benchmarks/jobs/tiny_collectives.py on 2 ranks under
     `commprof run`: --size-allreduce blocking all_reduces of one float32, then --size-p2p rounds
     of isend + irecv (both waited; 2 records per round per rank).  The capture files' total size
     divided by the number of COLL records (read with commprof.format.reader.read_capture).
     The bytes are also split by frame kind (walking the frames with schema.FRAME_HEADER) and
     attributed to each operation: its COLL records plus the DONE and WAIT records that carry
     its record id (frame headers, header, MARK and JSON frames are the remainder).
(ii) Peak RSS added per rank.  The same job with only all_reduces, at two sizes (--collectives,
     default 100000 and 500000), plain and under `commprof run`, interleaved (plain n1,
     commprof n1, plain n2, commprof n2, ... for --reps rounds).  Each rank reports its own
     ru_maxrss at the end of the job (before destroy_process_group) and RSS samples taken every
     n/10 calls (their slope over the second half of the run is a second, in-run estimate of
     per-call growth).  Added = commprof − plain, per rank; the per-collective slope is
     (added(n2) − added(n1)) / (n2 − n1), and "added at 1M" is extrapolated from it when
     1,000,000 is not one of the sizes.

A 2-rank tiny all_reduce took ~225 µs plain and ~300 µs under commprof on a 2-core machine, so
1,000,000 of them take ~4 min plain + ~5 min captured: the defaults (~5.5 min in all) keep the
script under 10 minutes; `--collectives 200000 1000000 --skip-size` measures 1M directly (~11 min).

    python benchmarks/capture_size_memory.py
    python benchmarks/capture_size_memory.py --collectives 200000 1000000
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from commprof.format import reader, schema

HERE = Path(__file__).resolve().parent
JOB = HERE / "jobs" / "tiny_collectives.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(tmp: Path, tag: str, allreduce: int, p2p: int, under: bool, timeout: float) -> dict:
    """Run the job once; returns {"ranks": [per-rank report], "run_dir": Path|None, "wall": s}."""
    report = tmp / f"{tag}.report"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--max-restarts", "0",
           str(JOB), "--allreduce", str(allreduce), "--p2p", str(p2p), "--report", str(report)]
    run_dir = tmp / f"{tag}.run" if under else None
    if under:
        cmd = [sys.executable, "-m", "commprof", "run", "-q", "--out", str(run_dir), "--"] + cmd
    env = {k: v for k, v in os.environ.items() if k != "COMMPROF_RUN_DIR"}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"job {tag} failed (exit {p.returncode}):\n{' '.join(cmd)}\n{p.stderr[-3000:]}")
    ranks = [json.loads(Path(f"{report}.rank{r}").read_text()) for r in (0, 1)]
    return {"ranks": ranks, "run_dir": run_dir, "wall": wall}


def frame_bytes(path: Path) -> tuple[int, dict[int, int], dict[int, int]]:
    """(header bytes, bytes per frame kind incl. frame headers, frames per kind)."""
    data = path.read_bytes()
    _, _, hlen = schema.HEADER_PREFIX.unpack_from(data, 0)
    pos = schema.HEADER_PREFIX.size + hlen + 4
    region = json.loads(data[schema.HEADER_PREFIX.size:pos - 4]).get(schema.REGION_KEY)
    if region:  # a record region: the header page, then chunks whose zero tails are skipped
        pos = region["start"]
    header = pos
    size: dict[int, int] = {}
    count: dict[int, int] = {}
    fh = schema.FRAME_HEADER
    while pos + fh.size <= len(data):
        kind, length, _ = fh.unpack_from(data, pos)
        if region and kind == 0:
            pos = region["start"] + ((pos - region["start"]) // region["chunk"] + 1) * region["chunk"]
            continue
        size[kind] = size.get(kind, 0) + fh.size + length
        count[kind] = count.get(kind, 0) + 1
        pos += fh.size + length
    return header, size, count


KIND_LABEL = {schema.KIND_COLL: "COLL", schema.KIND_DONE: "DONE", schema.KIND_WAIT: "WAIT",
              schema.KIND_MARK: "MARK", schema.KIND_SPAN: "SPAN", schema.KIND_JSON: "JSON"}


def part_size(tmp: Path, args) -> str:
    print(f"(i) bytes on disk per record: {args.size_allreduce} blocking all_reduce + "
          f"{args.size_p2p} isend/irecv rounds per rank, 2 ranks, under commprof run", flush=True)
    res = run_job(tmp, "size", args.size_allreduce, args.size_p2p, True, args.timeout)
    paths = reader.capture_paths(res["run_dir"])
    total = sum(p.stat().st_size for p in paths)
    n_coll = 0
    head_b = 0
    kind_b: dict[int, int] = {}
    kind_n: dict[int, int] = {}
    rec_n: dict[str, int] = {}
    per_op: dict[str, list[int]] = {}  # op -> [coll, done, wait]
    for path in paths:
        cap = reader.read_capture(path)
        if cap.damage:
            print(f"  warning: {path.name}: {cap.damage}")
        coll = cap.arrays["coll"]
        n_coll += len(coll)
        for name, arr in cap.arrays.items():
            rec_n[name] = rec_n.get(name, 0) + len(arr)
        op_of = dict(zip(coll["id"].tolist(), coll["op"].tolist()))
        for name, col in (("coll", 0), ("done", 1), ("wait", 2)):
            ids = cap.arrays[name]["id"]
            ops = np.array([op_of.get(i, -1) for i in ids.tolist()])
            for code, n in zip(*np.unique(ops, return_counts=True)):
                op = schema.OPS[code] if code >= 0 else "(unmatched)"
                per_op.setdefault(op, [0, 0, 0])[col] += int(n)
        h, kb, kn = frame_bytes(path)
        head_b += h
        for k in kb:
            kind_b[k] = kind_b.get(k, 0) + kb[k]
            kind_n[k] = kind_n.get(k, 0) + kn[k]
    per_rec = total / n_coll
    item = {name: reader.DTYPES[kind].itemsize for kind, name in reader.KIND_NAMES.items()}
    print(f"  job took {res['wall']:.1f} s; {len(paths)} capture files, {total:,} bytes, "
          f"{n_coll:,} COLL records -> {per_rec:.1f} bytes per COLL record")
    print(f"  {'frame kind':10s}{'records':>12s}{'frames':>8s}{'bytes':>14s}{'bytes/COLL':>12s}")
    print(f"  {'(header)':10s}{'':>12s}{len(paths):8d}{head_b:14,d}{head_b / n_coll:12.2f}")
    for k in sorted(kind_b):
        name = KIND_LABEL.get(k, str(k))
        recs = rec_n.get(name.lower(), "")
        recs = f"{recs:,}" if recs != "" else ""
        print(f"  {name:10s}{recs:>12s}{kind_n[k]:8d}{kind_b[k]:14,d}{kind_b[k] / n_coll:12.2f}")
    print(f"  {'total':10s}{'':>12s}{'':>8s}{total:14,d}{per_rec:12.2f}")
    print(f"  per operation (record payloads only: COLL {item['coll']} B, DONE {item['done']} B, "
          f"WAIT {item['wait']} B each)")
    print(f"  {'op':14s}{'COLL':>10s}{'DONE':>10s}{'WAIT':>10s}{'bytes/COLL':>12s}")
    op_parts = []
    for op, (c, d, w) in sorted(per_op.items(), key=lambda kv: -kv[1][0]):
        b = c * item["coll"] + d * item["done"] + w * item["wait"]
        bpc = f"{b / c:12.1f}" if c else f"{'-':>12s}"
        print(f"  {op:14s}{c:10,d}{d:10,d}{w:10,d}{bpc}")
        if c >= 1000:
            op_parts.append(f"{op} {b / c:.0f}")
    return f"{per_rec:.1f} bytes on disk per COLL record ({', '.join(op_parts)} B of records each)"


def part_memory(tmp: Path, args) -> str:
    sizes = args.collectives
    print(f"\n(ii) peak RSS per rank: blocking all_reduces of one float32 on 2 ranks, sizes "
          f"{', '.join(f'{n:,}' for n in sizes)}, plain vs commprof run, {args.reps} interleaved "
          f"round(s)", flush=True)
    # maxrss[(n, under)] -> list over reps of [rank0, rank1] KiB
    maxrss: dict[tuple[int, bool], list[list[int]]] = {}
    per_call: dict[tuple[int, bool], list[float]] = {}
    samples: dict[tuple[int, bool], list] = {}
    files: dict[int, list[int]] = {}
    for rep in range(args.reps):
        for n in sizes:
            for under in (False, True):
                res = run_job(tmp, f"mem{rep}n{n}u{int(under)}", n, 0, under, args.timeout)
                ranks = res["ranks"]
                if args.json_out:
                    with open(args.json_out, "a") as fh:
                        for r in ranks:
                            fh.write(json.dumps(dict(r, commprof=under)) + "\n")
                maxrss.setdefault((n, under), []).append([r["maxrss_kib"] for r in ranks])
                per_call.setdefault((n, under), []).append(
                    statistics.mean(r["t_allreduce"] for r in ranks) / n * 1e6)
                samples.setdefault((n, under), []).append([r["samples"] for r in ranks])
                extra = ""
                if under:
                    caps = reader.capture_paths(res["run_dir"])
                    files.setdefault(n, []).append(sum(p.stat().st_size for p in caps))
                    extra = f", captures {files[n][-1] / 1e6:.1f} MB"
                    for p in caps:
                        p.unlink()  # up to ~150 MB per 1M-call run: do not let them pile up
                print(f"  round {rep} n={n:>9,} {'commprof' if under else 'plain   '}: "
                      f"maxrss {ranks[0]['maxrss_kib'] / 1024:7.1f} / "
                      f"{ranks[1]['maxrss_kib'] / 1024:7.1f} MiB (rank 0 / 1), "
                      f"{per_call[(n, under)][-1]:.0f} µs per call, run {res['wall']:.0f} s{extra}",
                      flush=True)

    def med(n, under, rank):
        return statistics.median(v[rank] for v in maxrss[(n, under)])

    print(f"\n  {'collectives':>12s}{'rank':>5s}{'plain MiB':>11s}{'commprof MiB':>14s}"
          f"{'added MiB':>11s}{'  RSS growth in the 2nd half of the run (B/call)':>48s}")
    added: dict[int, list[float]] = {}
    for n in sizes:
        for rank in (0, 1):
            p, c = med(n, False, rank), med(n, True, rank)
            added.setdefault(n, []).append((c - p) * 1024)  # bytes
            growth = []
            for under in (False, True):
                vals = []
                for rep_samples in samples[(n, under)]:
                    s = rep_samples[rank]
                    (i0, r0), (i1, r1) = s[len(s) // 2], s[-1]  # second half: buffers are warm
                    vals.append((r1 - r0) / (i1 - i0) if i1 > i0 else 0.0)
                growth.append(statistics.median(vals))
            print(f"  {n:12,d}{rank:5d}{p / 1024:11.1f}{c / 1024:14.1f}{(c - p) / 1024:11.2f}"
                  f"{f'plain {growth[0]:6.2f}, commprof {growth[1]:6.2f}':>48s}")
    for n in sizes:
        print(f"  n={n:,}: µs per all_reduce plain {statistics.median(per_call[(n, False)]):.0f}, "
              f"commprof {statistics.median(per_call[(n, True)]):.0f}; capture size "
              f"{statistics.median(files[n]) / 1e6:.1f} MB for 2 ranks")
    n1, n2 = sizes[0], sizes[-1]
    slopes = [(added[n2][r] - added[n1][r]) / (n2 - n1) for r in (0, 1)]
    at_1m = [added[n2][r] + slopes[r] * (1_000_000 - n2) for r in (0, 1)]
    how = "measured" if n2 == 1_000_000 else f"extrapolated from {n1:,} and {n2:,}"
    print(f"  added-RSS slope between {n1:,} and {n2:,} calls: "
          f"{slopes[0]:.2f} / {slopes[1]:.2f} bytes per collective (rank 0 / 1)")
    print(f"  added peak RSS at 1,000,000 collectives ({how}): "
          f"{at_1m[0] / 2**20:.1f} / {at_1m[1] / 2**20:.1f} MiB (rank 0 / 1)")
    return (f"commprof adds {max(added[n2]) / 2**20:.1f} MiB peak RSS per rank at {n2:,} "
            f"collectives (worst rank; {added[n1][0] / 2**20:.1f}/{added[n1][1] / 2**20:.1f} MiB at "
            f"{n1:,}), slope {max(slopes):.2f} B per collective, {max(at_1m) / 2**20:.1f} MiB at 1M "
            f"({how})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-allreduce", type=int, default=20000,
                    help="(i) blocking all_reduces per rank (default 20000)")
    ap.add_argument("--size-p2p", type=int, default=20000,
                    help="(i) isend/irecv rounds per rank (default 20000)")
    ap.add_argument("--collectives", type=int, nargs=2, default=[100000, 500000],
                    metavar=("N1", "N2"), help="(ii) the two job sizes (default 100000 500000)")
    ap.add_argument("--reps", type=int, default=1, help="(ii) interleaved rounds (default 1)")
    ap.add_argument("--skip-size", action="store_true", help="skip part (i)")
    ap.add_argument("--skip-memory", action="store_true", help="skip part (ii)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per job run")
    ap.add_argument("--json-out", metavar="FILE",
                    help="(ii) append every rank's raw report (RSS samples included) to FILE")
    args = ap.parse_args()
    args.collectives = sorted(args.collectives)
    if args.collectives[0] == args.collectives[1]:
        ap.error("--collectives needs two different sizes")
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    parts = []
    with tempfile.TemporaryDirectory(prefix="commprof-size-mem-") as d:
        tmp = Path(d)
        if not args.skip_size:
            parts.append(part_size(tmp, args))
        if not args.skip_memory:
            parts.append(part_memory(tmp, args))
    print(f"\n{time.perf_counter() - t0:.0f} s in all; load average {load0:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end ({os.cpu_count()} CPUs)")
    print("summary: " + "; ".join(parts))


if __name__ == "__main__":
    main()
