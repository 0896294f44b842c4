"""What `commprof run --live` and `--prometheus` cost the launcher: CPU seconds per second of job.

Everything runs in the `commprof run` process: each second the live monitor tails what the
workers appended, takes a snapshot (the report's functions on a bounded buffer), and redraws the
panel and/or renders the Prometheus text.  This writes R synthetic captures growing in real time
(a DDP-like step every STEP_MS per rank: two async all_reduces inside a backward span, a wait, a
broadcast; flushed once a second as the workers do) and drives the monitor as the supervisor
does (a tick every second; the monitor refreshes at most once a second, and less often when a
refresh costs more than 10% of a core: CPU_BUDGET in commprof/live/monitor.py).  It measures
the monitor's CPU time (this thread, while ticking) per second of run, and how often it could
refresh, for three configurations: the panel only (rendered to a throw-away
terminal), the exporter only (HTTP scrape once a second + textfile), and both.

    python benchmarks/live_cost.py --ranks 2 --seconds 30
    python benchmarks/live_cost.py --ranks 64 --seconds 30
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from commprof.format import layout, reader, schema
from commprof.format.writer import CaptureWriter, encode_batch, encode_json
from commprof.live.exporter import Metrics
from commprof.live.monitor import LiveMonitor

MS = 1_000_000


class FakeRank:
    """One rank's capture, written one flush (second) at a time on the real clock."""

    def __init__(self, run: Path, rank: int, world: int, step_ms: int, t0: int):
        path = layout.ranks_dir(run) / layout.capture_name(rank, 0, 100 + rank)
        self.w = CaptureWriter(str(path), {"rank": rank, "world_size": world, "host": "bench",
                                           "pid": 100 + rank, "restart": 0,
                                           "clock": {"wall_ns": 0, "mono_ns": 0}})
        self.w.write(encode_json({"type": "group", "id": 0, "name": "0", "desc": "default_pg",
                                  "size": world, "rank": rank, "backend": "gloo",
                                  "ranks": list(range(world))}))
        self.w.write(encode_batch(schema.KIND_MARK, [(schema.MARK_PG_INIT, t0, 0)]))
        self.rank, self.step_ns, self.t = rank, step_ms * MS, t0
        self.id = self.seq = 0
        self.rng = np.random.default_rng(rank)

    def flush_until(self, t_end: int) -> None:
        coll, done, wait, mark, span = [], [], [], [], []
        while self.t + self.step_ns <= t_end:
            t = self.t
            span.append((schema.SPAN_BACKWARD, 1, t + self.step_ns // 10, t + self.step_ns * 6 // 10))
            for j, off in enumerate((2, 4)):
                issue = t + self.step_ns * off // 10
                coll.append((self.id, schema.OP_INDEX["all_reduce"], 0, self.seq, 0,
                             schema.FLAG_HAS_FUTURE | schema.FLAG_IN_BACKWARD, -1, 1 << 18, 1 << 20,
                             1 << 18, 1 << 20, 1, issue, issue + MS))
                done.append((self.id, issue + self.step_ns * 3 // 10, schema.DONE_FUTURE))
                self.id += 1
                self.seq += 1
            wait.append((self.id - 1, 1, t + self.step_ns * 6 // 10, t + self.step_ns * 65 // 100,
                         schema.WAIT_WORK))
            issue = t + self.step_ns * 7 // 10 + int(self.rng.integers(0, MS))
            coll.append((self.id, schema.OP_INDEX["broadcast"], 0, self.seq, 0, schema.FLAG_HAS_FUTURE,
                         -1, 1024, 4096, 1024, 4096, 1, issue, issue + MS))
            done.append((self.id, issue + 2 * MS, schema.DONE_FUTURE))
            self.id += 1
            self.seq += 1
            self.t += self.step_ns
            mark.append((schema.MARK_STEP_OPTIMIZER, self.t, 0))
        frames = [encode_batch(k, rows) for k, rows in ((schema.KIND_COLL, coll), (schema.KIND_DONE, done),
                                                        (schema.KIND_WAIT, wait), (schema.KIND_MARK, mark),
                                                        (schema.KIND_SPAN, span)) if rows]
        frames.append(encode_json({"type": "self_cost", "calls": self.id, "record_ns": self.id * 20_000}))
        self.w.write(b"".join(frames))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def measure(ranks: int, seconds: float, step_ms: int, live: bool, export: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        layout.ranks_dir(run).mkdir()
        t0 = time.perf_counter_ns()
        fakes = [FakeRank(run, r, ranks, step_ms, t0) for r in range(ranks)]
        metrics, port = None, None
        if export:
            import socket
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            metrics = Metrics("bench", host="bench")
            metrics.serve("127.0.0.1", port, str(port))
        mon = LiveMonitor(run, say=lambda m: None, live=live, metrics=metrics,
                          textfile=run / "commprof.prom" if export else None,
                          stream=Terminal() if live else io.StringIO())
        cpu = 0.0
        start = time.monotonic()
        next_tick = start + 1.0
        while time.monotonic() - start < seconds:
            time.sleep(max(0.0, next_tick - time.monotonic()))
            next_tick += 1.0
            now = time.perf_counter_ns()
            for f in fakes:
                f.flush_until(now)
            c0 = time.thread_time()
            mon.tick()
            if export:  # a scraper once a second (its serving thread's time is counted too)
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
            cpu += time.thread_time() - c0
        if export:
            metrics.close()
        mon.stop_panel()
        states = mon.agg.states.values()
        buffered = sum(len(s.buf["coll"]) for s in states)
        calls = sum(sum(s.totals().calls.values()) for s in states)
    elapsed = time.monotonic() - start
    print(f"  ranks={ranks} live={live} export={export}: {cpu:.2f} CPU s over {elapsed:.0f} s, "
          f"{mon.refreshes} refreshes ({calls} calls seen, {buffered} buffered at the end)",
          file=sys.stderr)
    return cpu / elapsed, elapsed / max(mon.refreshes, 1), cpu / max(mon.refreshes, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--step-ms", type=int, default=100, help="step time of every synthetic rank")
    args = ap.parse_args()
    print(f"ranks={args.ranks}, {1000 / args.step_ms:.0f} steps/s x 3 calls per step per rank, "
          f"{args.seconds:.0f} s each")
    for name, live, export in (("--live (panel)", True, False), ("--prometheus + textfile", False, True),
                               ("both", True, True)):
        frac, every, per = measure(args.ranks, args.seconds, args.step_ms, live, export)
        print(f"{name:26s} {frac * 100:5.1f}% of one core ({frac * 1000:.0f} ms CPU per s); "
              f"a refresh every {every:.1f} s, {per * 1000:.0f} ms CPU each")


if __name__ == "__main__":
    main()
