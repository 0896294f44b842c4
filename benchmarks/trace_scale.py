"""Peak memory and time of reading one large PyTorch-profiler (Kineto) trace, against its size.

Writes a Kineto-shaped trace of --events events (default 1,000,000) and reads it with
`commprof.format.kineto.read_trace` in a fresh child process, which reports its peak RSS (VmHWM),
its RSS before reading (the interpreter with numpy and pandas imported), the CPU and wall time.
Per kernel launched the trace holds --cpu-ops CPU ops (`aten::*`, not kept by commprof), the
runtime launch, its two `ac2g` flow events and the kernel (every 25th a memcpy, every 50th an NCCL
kernel with collective args); a `ProfilerStep#N` span per 2,000 events.

    python benchmarks/trace_scale.py                      # 1e6 events, 3 CPU ops per kernel
    python benchmarks/trace_scale.py --events 200000 --cpu-ops 1 --gzip

The acceptance (issue 26): the peak RSS of the child stays within 2x the trace's size (of its
JSON: a .json.gz file is compared uncompressed).
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ("void at::native::vectorized_elementwise_kernel<4, at::native::AUnaryFunctor<float, "
          "float, float, at::native::MulFunctor<float> > >(int)")
NCCL = "ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
CPU_OPS = ("aten::linear", "aten::addmm", "aten::t", "aten::transpose", "aten::as_strided")


def write_trace(path: Path, n_events: int, cpu_ops: int) -> int:
    """Write the trace event by event (constant memory); returns the number of events."""
    per_kernel = cpu_ops + 4
    opener = gzip.open if path.name.endswith(".gz") else open
    n, corr, t = 0, 1, 1_000_000.0
    with opener(path, "wt") as f:
        f.write('{"schemaVersion": 1, "distributedInfo": {"backend": "nccl", "rank": 0, '
                '"world_size": 8}, "deviceProperties": [{"id": 0, "name": "NVIDIA H100"}], '
                '"traceEvents": [\n')
        step, step_start, first = 0, t, True
        while n + per_kernel <= n_events:
            evs = []
            for i in range(cpu_ops):
                evs.append({"ph": "X", "cat": "cpu_op", "name": CPU_OPS[i % len(CPU_OPS)],
                            "pid": 1, "tid": 1, "ts": t + i * 0.5, "dur": 12.345 - i,
                            "args": {"External id": corr, "Sequence number": corr, "Fwd thread id": 0}})
            comm = corr % 50 == 0
            stream = 13 if comm else 7
            args = {"External id": corr, "queued": 0, "device": 0, "context": 1, "stream": stream,
                    "correlation": corr, "registers per thread": 32, "shared memory": 0,
                    "grid": [80, 1, 1], "block": [256, 1, 1]}
            if comm:
                args.update({"Collective name": "allreduce", "In msg nelems": 1 << 20,
                             "Out msg nelems": 1 << 20, "Group size": 8, "dtype": "Float",
                             "Process Group Name": "0"})
            k0 = t + 30.25
            evs += [{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
                     "ts": t + 2.5, "dur": 4.25, "args": {"External id": corr, "cbid": 211,
                                                          "correlation": corr}},
                    {"ph": "s", "id": corr, "pid": 1, "tid": 1, "ts": t + 2.5, "cat": "ac2g",
                     "name": "ac2g"},
                    {"ph": "X", "cat": "kernel" if corr % 25 else "gpu_memcpy",
                     "name": NCCL if comm else KERNEL, "pid": 0, "tid": stream, "ts": k0,
                     "dur": 200.0 if comm else 7.125, "args": args},
                    {"ph": "f", "id": corr, "pid": 0, "tid": stream, "ts": k0, "cat": "ac2g",
                     "name": "ac2g", "bp": "e"}]
            for ev in evs:
                f.write(("" if first else ",\n") + json.dumps(ev))
                first = False
            n += len(evs)
            corr += 1
            t += 15.0
            if n // 2000 > step:
                f.write(",\n" + json.dumps({"ph": "X", "cat": "user_annotation",
                                            "name": f"ProfilerStep#{step}", "pid": 1, "tid": 1,
                                            "ts": step_start, "dur": t - step_start, "args": {}}))
                n, step, step_start = n + 1, step + 1, t
        f.write('\n], "traceName": "trace_scale", "displayTimeUnit": "ms", '
                '"baseTimeNanoseconds": 1700000000000000000}\n')
    return n


def _vm(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measure(path: str) -> dict:
    """In the child: read the trace once; RSS before and peak, CPU and wall seconds."""
    import numpy  # noqa: F401 - imported before the baseline, as read_trace needs them
    import pandas  # noqa: F401

    from commprof.format import kineto
    base = _vm("VmRSS")
    t, c = time.perf_counter(), time.process_time()
    trace = kineto.read_trace(path)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"baseline_rss": base, "peak_rss": _vm("VmHWM"), "wall_s": wall, "cpu_s": cpu,
            "gpu_rows": len(trace.gpu), "launch_rows": len(trace.launches),
            "json_bytes": trace.json_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--cpu-ops", type=int, default=3, help="CPU ops per kernel (not kept)")
    ap.add_argument("--gzip", action="store_true", help="write the trace as .json.gz")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(measure(a.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("rank-0.json.gz" if a.gzip else "rank-0.json")
        n = write_trace(path, a.events, a.cpu_ops)
        size = path.stat().st_size
        out = subprocess.run([sys.executable, __file__, "--child", str(path)], check=True,
                             capture_output=True, text=True, cwd=ROOT)
        m = json.loads(out.stdout.strip().splitlines()[-1])
    kept = m["gpu_rows"]
    growth = m["peak_rss"] - m["baseline_rss"]
    print(f"trace: {n:,} events, {size / 1e6:.1f} MB on disk, {m['json_bytes'] / 1e6:.1f} MB of JSON, "
          f"{kept:,} GPU ops kept, {a.cpu_ops} CPU ops per kernel")
    print(f"read_trace: {m['wall_s']:.1f} s wall, {m['cpu_s']:.1f} s CPU "
          f"({m['json_bytes'] / 1e6 / m['cpu_s']:.1f} MB/s of JSON per CPU second)")
    print(f"peak RSS {m['peak_rss'] / 1e6:.0f} MB = {m['peak_rss'] / m['json_bytes']:.2f}x the JSON "
          f"(interpreter with numpy+pandas before reading: {m['baseline_rss'] / 1e6:.0f} MB; "
          f"growth {growth / 1e6:.0f} MB = {growth / n:.0f} B per event, "
          f"{growth / max(kept, 1):.0f} B per GPU op kept)")
    print("within 2x the JSON's size:", "yes" if m["peak_rss"] <= 2 * m["json_bytes"] else "NO")


if __name__ == "__main__":
    main()
