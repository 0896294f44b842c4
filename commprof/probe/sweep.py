"""The probe worker: ``torchrun … -m commprof.probe.sweep [options]`` on every rank.

For each op and message size S (nccl-tests' S: the all_reduce/broadcast tensor, the gathered
output of all_gather, the full input of reduce_scatter and all_to_all, the message of sendrecv):
one timed warm-up call sizes the iteration count to ``--budget`` seconds (all ranks agree on the
slowest estimate), then ``warmup`` untimed and ``iters`` timed iterations, each started right after
a barrier.  An iteration's time is the slowest rank's; the result row gives the median and p99
over iterations, algbw = S / median and busbw = algbw × nccl-tests' factor.  Small-message latency:
the median time of the smallest all_reduce, and half the median round trip of a ping-pong between
ranks 0 and 1 at the smallest size.  Rank 0 writes the ``commprof.probe/1`` JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all", "sendrecv")
SCHEMA = "commprof.probe/1"


def bus_factor(op: str, n: int) -> float:
    """nccl-tests PERFORMANCE.md (the same table as commprof.analysis.measures.collectives)."""
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    return 1.0


def _args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m commprof.probe.sweep")
    ap.add_argument("--ops", default="all_reduce,all_gather,reduce_scatter,broadcast,all_to_all,sendrecv")
    ap.add_argument("--sizes", default="8B:64MiB")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds per (op, size), at most")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap.parse_args(argv)


def _route_warnings(say) -> None:
    """Warnings raised in this worker are commprof's business, not the user's: torch deprecating
    an API the sweep calls is dropped; any other warning becomes one ``say`` line, once."""
    import warnings
    seen = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = (str(message).strip().splitlines() or [""])[0]
        if (category, text) not in seen:
            seen.add((category, text))
            say(f"warning: {category.__name__}: {text}")

    warnings.showwarning = show
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)


def _collective(dist, name: str, deprecated: str):
    """``dist.NAME`` where this torch has it (2.13 renamed the tensor collectives), else the
    older ``dist.DEPRECATED``."""
    return getattr(dist, name, None) or getattr(dist, deprecated)


class Probe:
    def __init__(self, torch, dist, device, sizes_budget: float):
        self.torch, self.dist, self.device = torch, dist, device
        self.rank, self.n = dist.get_rank(), dist.get_world_size()
        self.budget = sizes_budget
        self.cuda = device.type == "cuda"

    def _sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def _buffers(self, op: str, size: int):
        """(callable doing one op, S actually moved) or None when size is too small for op."""
        torch, dist, n, r = self.torch, self.dist, self.n, self.rank
        count = max(size // 4, 1)
        if op in ("all_gather", "reduce_scatter", "all_to_all"):
            count -= count % n
            if count == 0:
                return None
        f = dict(dtype=torch.float32, device=self.device)
        if op == "all_reduce":
            x = torch.ones(count, **f)
            return (lambda: dist.all_reduce(x)), count * 4
        if op == "broadcast":
            x = torch.ones(count, **f)
            return (lambda: dist.broadcast(x, 0)), count * 4
        if op == "all_gather":
            out, inp = torch.empty(count, **f), torch.ones(count // n, **f)
            gather = _collective(dist, "all_gather_single", "all_gather_into_tensor")
            return (lambda: gather(out, inp)), count * 4
        if op == "reduce_scatter":
            inp, out = torch.ones(count, **f), torch.empty(count // n, **f)
            scatter = _collective(dist, "reduce_scatter_single", "reduce_scatter_tensor")
            return (lambda: scatter(out, inp)), count * 4
        if op == "all_to_all":
            inp, out = torch.ones(count, **f), torch.empty(count, **f)
            return (lambda: dist.all_to_all_single(out, inp)), count * 4
        if op == "sendrecv":
            if n < 2:
                return None
            x, y = torch.ones(count, **f), torch.empty(count, **f)

            def shift():
                reqs = [dist.isend(x, (r + 1) % n), dist.irecv(y, (r - 1) % n)]
                for q in reqs:
                    q.wait()
            return shift, count * 4
        raise ValueError(op)

    def _time(self, fn) -> float:
        self.dist.barrier()
        self._sync()
        t0 = time.perf_counter()
        fn()
        self._sync()
        return time.perf_counter() - t0

    def _slowest(self, values: list[float]) -> list[float]:
        t = self.torch.tensor(values, dtype=self.torch.float64, device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return t.cpu().tolist()

    def measure(self, op: str, size: int, iters: int, warmup: int) -> dict | None:
        made = self._buffers(op, size)
        if made is None:
            return None
        fn, nbytes = made
        estimate = self._slowest([self._time(fn)])[0]
        k = max(3, min(iters, int(self.budget / max(estimate, 1e-9))))
        w = min(warmup, max(1, k // 4))
        for _ in range(w):
            self._time(fn)
        times = self._slowest([self._time(fn) for _ in range(k)])
        med = statistics.median(times)
        p99 = sorted(times)[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
        algbw = nbytes / med / 1e9 if med > 0 else None
        factor = bus_factor(op, self.n)
        return {"op": op, "size_bytes": nbytes, "count": nbytes // 4, "dtype": "float32",
                "iters": k, "warmup": w, "time_median_s": med, "time_p99_s": p99,
                "algbw_gbps": algbw, "busbw_gbps": algbw * factor if algbw else None,
                "bus_factor": factor}

    def pingpong_us(self, size: int, iters: int) -> float | None:
        """Half the median round trip between ranks 0 and 1 (µs), or None on one rank."""
        if self.n < 2:
            return None
        torch, dist = self.torch, self.dist
        x = torch.ones(max(size // 4, 1), dtype=torch.float32, device=self.device)
        rtts = []
        for i in range(iters + 3):
            dist.barrier()
            t0 = time.perf_counter()
            if self.rank == 0:
                dist.send(x, 1)
                dist.recv(x, 1)
            elif self.rank == 1:
                dist.recv(x, 0)
                dist.send(x, 0)
            self._sync()
            if i >= 3:
                rtts.append(time.perf_counter() - t0)
        rtt = self._slowest([statistics.median(rtts)])[0] if rtts else None
        return rtt / 2 * 1e6 if rtt else None


def main(argv=None) -> int:
    args = _args(argv)
    # Rank 0 speaks for the sweep, in commprof's own `commprof:` lines (the README's promise).
    speaks = os.environ.get("RANK", "0") == "0" and not args.quiet
    say = (lambda msg: print(f"commprof: probe {msg}", file=sys.stderr, flush=True)) \
        if speaks else (lambda msg: None)
    _route_warnings(say)
    import torch
    import torch.distributed as dist

    from commprof.probe.sizes import parse_sizes
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    sizes = parse_sizes(args.sizes)
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend)
    started = time.time_ns()
    probe = Probe(torch, dist, device, args.budget)
    hosts = [None] * probe.n
    dist.all_gather_object(hosts, socket.gethostname())
    results, errors = [], []
    if probe.rank != 0:
        say = (lambda msg: None)
    total = len(ops) * len(sizes)
    done = 0
    for op in ops:
        for size in sizes:
            done += 1
            try:
                row = probe.measure(op, size, args.iters, args.warmup)
            except RuntimeError as exc:  # an op this backend lacks: recorded, the sweep goes on
                errors.append({"op": op, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
                say(f"[{done}/{total}] {op}: not measured ({errors[-1]['error']})")
                done += len(sizes) - sizes.index(size) - 1
                break
            if row is None:
                continue
            results.append(row)
            say(f"[{done}/{total}] {op} {row['size_bytes']} B: {row['time_median_s'] * 1e6:.1f} µs, "
                f"busbw {row['busbw_gbps']:.3g} GB/s")
    smallest = [r for r in results if r["op"] == "all_reduce"]
    latency = {"all_reduce": round(smallest[0]["time_median_s"] * 1e6, 2) if smallest else None,
               "sendrecv": None}
    one_way = probe.pingpong_us(sizes[0], max(10, min(args.iters, 50)))
    latency["sendrecv"] = round(one_way, 2) if one_way else None
    if probe.rank == 0:
        doc = {"schema": SCHEMA, "backend": backend, "world_size": probe.n,
               "nodes": len(set(hosts)), "hosts": sorted(set(hosts)), "started_wall_ns": started,
               "duration_s": (time.time_ns() - started) / 1e9, "sizes": sizes, "ops": ops,
               "torch_version": torch.__version__, "latency_us": latency, "results": results,
               "errors": errors}
        tmp = args.out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, args.out)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
