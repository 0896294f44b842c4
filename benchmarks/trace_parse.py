"""How fast commprof reads PyTorch-profiler (Kineto) traces: MB/s of uncompressed JSON.

Times `commprof.format.kineto.read_trace` (gunzip + json + frames) and the GPU-timeline analysis
(`commprof.analysis.gpu.gpu_timeline.analyze`) on the real traces of ../shared/gpu_traces/ (when
present) and on synthetic Kineto-shaped traces of growing size (per step: CPU ops, runtime launches
with ac2g flows, compute kernels on one stream, NCCL kernels with collective args on another,
memcpy/memset, ProfilerStep annotations).  Each figure is the median of --reps runs; the share of
the time spent in `json.loads` alone is printed beside it, and the rate per CPU second (less
sensitive to other load on the machine).  Peak RSS is the measuring child's (VmHWM), per trace.

    python benchmarks/trace_parse.py                 # real traces + 20k, 200k, 1M events
    python benchmarks/trace_parse.py --events 2000000 --reps 3
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "gpu_traces"


def synthetic(n_events: int, seed: int = 0) -> dict:
    """A Kineto-shaped trace of about ``n_events`` events."""
    rng = random.Random(seed)
    ev, corr, t = [], 1, 1_000_000.0
    per_step = 2000
    steps = max(1, n_events // per_step)
    for s in range(steps):
        t0 = t
        for i in range(per_step // 5):  # 5 events per launch: cpu_op, runtime, s, f, kernel
            comm = i % 50 == 49
            ev.append({"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1,
                       "ts": t, "dur": 12.345, "args": {"External id": corr, "Sequence number": i}})
            ev.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1,
                       "tid": 1, "ts": t + 1.5, "dur": 4.25, "args": {"External id": corr,
                                                                     "cbid": 211, "correlation": corr}})
            ev.append({"ph": "s", "id": corr, "pid": 1, "tid": 1, "ts": t + 1.5, "cat": "ac2g",
                       "name": "ac2g"})
            k0 = t + 30 + rng.random() * 10
            args = {"External id": corr, "queued": 0, "device": 0, "context": 1,
                    "stream": 13 if comm else 7, "correlation": corr, "registers per thread": 32,
                    "shared memory": 0, "grid": [80, 1, 1], "block": [256, 1, 1]}
            if comm:
                args.update({"Collective name": "allreduce", "In msg nelems": 1 << 20,
                             "Out msg nelems": 1 << 20, "Group size": 8, "dtype": "Float",
                             "Process Group Name": "0"})
            name = ("ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
                    if comm else "void at::native::vectorized_elementwise_kernel<4, at::native::"
                    "AUnaryFunctor<float, float, float, at::native::MulFunctor<float> > >(int)")
            ev.append({"ph": "X", "cat": "kernel" if i % 25 else "gpu_memcpy", "name": name,
                       "pid": 0, "tid": args["stream"], "ts": k0, "dur": 200.0 if comm else 7.125,
                       "args": args})
            ev.append({"ph": "f", "id": corr, "pid": 0, "tid": args["stream"], "ts": k0,
                       "cat": "ac2g", "name": "ac2g", "bp": "e"})
            corr += 1
            t += 15.0
        ev.append({"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{s}", "pid": 1,
                   "tid": 1, "ts": t0 - 0.5, "dur": t - t0 + 1.0, "args": {}})
    return {"schemaVersion": 1, "distributedInfo": {"backend": "nccl", "rank": 0, "world_size": 8},
            "baseTimeNanoseconds": 1_700_000_000_000_000_000, "traceEvents": ev}


def measure(path: str, reps: int) -> dict:
    """Run in a child: median times of read_trace, json.loads alone, and analyze."""
    from commprof.analysis.gpu import gpu_timeline
    from commprof.format import kineto

    raw = Path(path).read_bytes()
    js = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    read, cpu, parse, analyze = [], [], [], []
    for _ in range(reps):
        t = time.perf_counter()
        json.loads(js)
        parse.append(time.perf_counter() - t)
        t, c = time.perf_counter(), time.process_time()
        trace = kineto.read_trace(path, rank=0)
        read.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        t = time.perf_counter()
        gpu_timeline.analyze(trace)
        analyze.append(time.perf_counter() - t)
    return {"mb": len(js) / 1e6, "read_s": statistics.median(read), "cpu_s": statistics.median(cpu),
            "json_s": statistics.median(parse), "analyze_s": statistics.median(analyze),
            "gpu_ops": len(trace.gpu), "rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process image's peak RSS (VmHWM: ru_maxrss would include the parent's before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, nargs="*", default=[20_000, 200_000, 1_000_000])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--write", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.write:  # in a child, so that the parent stays small
        with gzip.open(a.write, "wt", compresslevel=1) as f:
            json.dump(synthetic(a.events[0]), f)
        return
    if a.child:
        print(json.dumps(measure(a.child, a.reps)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(p.name, p) for p in sorted(SHARED.glob("*.json*"))] if SHARED.is_dir() else []
        for n in a.events:
            p = Path(tmp) / f"synthetic_{n}.json.gz"
            subprocess.run([sys.executable, __file__, "--write", str(p), "--events", str(n)],
                           check=True, cwd=ROOT)
            cases.append((f"synthetic {n:,} events", p))
        print(f"{'trace':36} {'JSON MB':>8} {'GPU ops':>8} {'read s':>8} {'MB/s':>7} {'MB/s CPU':>8} "
              f"{'json share':>10} {'analyze s':>9} {'peak RSS MB':>11}")
        rates, cpu_rates = [], []
        for label, path in cases:
            out = subprocess.run([sys.executable, __file__, "--child", str(path), "--reps", str(a.reps)],
                                 check=True, capture_output=True, text=True, cwd=ROOT)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            rate = m["mb"] / m["read_s"]
            rates.append(rate)
            cpu_rates.append(m["mb"] / m["cpu_s"])
            print(f"{label:36} {m['mb']:8.1f} {m['gpu_ops']:8d} {m['read_s']:8.3f} {rate:7.1f} "
                  f"{cpu_rates[-1]:8.1f} {m['json_s'] / m['read_s']:10.0%} {m['analyze_s']:9.3f} "
                  f"{m['rss_mb']:11.0f}")
        print(f"summary: read_trace {min(rates):.1f}–{max(rates):.1f} MB/s of uncompressed JSON "
              f"(median {statistics.median(rates):.1f}; per CPU second "
              f"{statistics.median(cpu_rates):.1f}); reps={a.reps}")


if __name__ == "__main__":
    main()
