"""CPU cost of the real node sampler (commprof.sampling) at 10 Hz and 100 Hz, % of one core.

Runs :class:`commprof.sampling.sampler.NodeSampler` with the default sources (every NIC via
psutil, InfiniBand sysfs, NVML where present, TCP RTT via `ss` once a second) for ``--seconds``,
with this process standing in for the job (it holds a few TCP connections that carry traffic, so
the TCP source has sockets to look up).  Cost = the sampler thread's CPU time + its `ss` children's,
÷ wall time — the same figure the report shows (`links.sampler[].cpu_fraction_of_core`).  Also
prints this process's total CPU over the same time, as a cross-check.

    python benchmarks/sampler_cost.py --seconds 10
"""
from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time

from commprof.analysis.host.links import read_node_samples
from commprof.sampling.sampler import NodeSampler, default_sources


def traffic(stop: threading.Event) -> None:
    """Three loopback connections exchanging 64 kB every 50 ms (a stand-in job's sockets)."""
    server = socket.create_server(("127.0.0.1", 0))
    pairs = []
    for _ in range(3):
        c = socket.create_connection(server.getsockname())
        s, _ = server.accept()
        pairs.append((c, s))
    buf = b"x" * 65536
    while not stop.wait(0.05):
        for c, s in pairs:
            c.sendall(buf)
            got = 0
            while got < len(buf):
                got += len(s.recv(len(buf) - got))
    for c, s in pairs:
        c.close()
        s.close()
    server.close()


def measure(hz: float, seconds: float) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        sampler = NodeSampler(tmp, default_sources(job_pids=lambda: [os.getpid()]), hz=hz)
        cpu0 = time.process_time()
        sampler.start()
        time.sleep(seconds)
        sampler.stop()
        total = (time.process_time() - cpu0) / seconds
        node = read_node_samples(sampler.path)
        return node.cost["cpu_ns"] / node.cost["wall_ns"], total, node.cost["ticks"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--hz", type=float, nargs="+", default=[10.0, 100.0])
    args = ap.parse_args()
    stop = threading.Event()
    t = threading.Thread(target=traffic, args=(stop,), daemon=True)
    t.start()
    try:
        for hz in args.hz:
            own, total, ticks = measure(hz, args.seconds)
            print(f"{hz:g} Hz: sampler {own * 100:.2f}% of one core ({ticks} ticks in "
                  f"{args.seconds:g} s); whole process incl. the traffic thread {total * 100:.2f}%")
    finally:
        stop.set()
        t.join()


if __name__ == "__main__":
    main()
