"""What `commprof run --hang-timeout` costs the supervisor: CPU per record it tails and tracks.

The watch runs in the `commprof run` process (nothing is added to the workers).  Each tick it
reads what the workers appended (CaptureTail) and feeds it to HangTracker.  This writes R capture
files of N records each (COLL + DONE in frames of BATCH, a few left pending, as a busy flusher
writes them) in T slices, ticking the watch after each slice, and prints the CPU time per record
and the share of one core at a given record rate.

    python benchmarks/hang_watch_cost.py                       # 8 ranks x 250k records, 50 ticks
    python benchmarks/hang_watch_cost.py --ranks 64 --records 50000
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from commprof.format import reader, schema
from commprof.format.writer import CaptureWriter, encode_frame, encode_json
from commprof.launch.hangwatch import HangWatch


def frames(rank: int, first: int, n: int, batch: int) -> list[bytes]:
    out = []
    for lo in range(first, first + n, batch):
        ids = np.arange(lo, min(lo + batch, first + n))
        coll = np.zeros(len(ids), dtype=reader.DTYPES[schema.KIND_COLL])
        coll["id"] = ids
        coll["op"] = schema.OP_INDEX["all_reduce"]
        coll["seq"] = ids
        coll["in_bytes"] = coll["out_bytes"] = 4 << 20
        coll["t_issue"] = coll["t_return"] = time.perf_counter_ns()
        done = np.zeros(len(ids), dtype=reader.DTYPES[schema.KIND_DONE])
        done["id"] = ids
        out += [encode_frame(schema.KIND_COLL, coll.tobytes()),
                encode_frame(schema.KIND_DONE, done[: max(len(ids) - 3, 0)].tobytes()),
                encode_frame(schema.KIND_DONE, done[max(len(ids) - 3, 0):].tobytes())]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--records", type=int, default=250_000, help="per rank")
    ap.add_argument("--ticks", type=int, default=50)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--rate", type=float, default=10_000, help="records/s per rank, for the share line")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        (run / "ranks").mkdir()
        writers = []
        for r in range(args.ranks):
            w = CaptureWriter(str(run / "ranks" / f"rank{r:05d}.a0.p{r}.cpf"),
                              {"rank": r, "world_size": args.ranks, "host": "bench", "pid": r})
            w.write(encode_json({"type": "group", "id": 0, "name": "0", "size": args.ranks,
                                 "ranks": list(range(args.ranks))}))
            writers.append(w)
        watch = HangWatch(run, timeout_s=3600, kill=False, say=print)
        per_tick = args.records // args.ticks
        cpu = 0.0
        for t in range(args.ticks):
            for r, w in enumerate(writers):
                w.write(b"".join(frames(r, t * per_tick, per_tick, args.batch)))
            t0 = time.process_time()
            watch.tick()
            cpu += time.process_time() - t0
        for w in writers:
            w.close({"reason": "exit"})
        total = per_tick * args.ticks * args.ranks
        pending = sum(len(s.pending) for s in watch.tracker.ranks.values())
        per_record = cpu / total
        print(f"ranks={args.ranks} records={total} ticks={args.ticks}: watch CPU {cpu:.2f} s = "
              f"{per_record * 1e9:.0f} ns/record (pending tracked at the end: {pending})")
        print(f"at {args.rate:.0f} records/s per rank x {args.ranks} ranks: "
              f"{per_record * args.rate * args.ranks * 100:.2f}% of one core")


if __name__ == "__main__":
    main()
