"""What the assembler's checked parse costs: ``Report.from_dict`` inside
``commprof.analysis.outcome.assemble.assemble`` (every value of the report checked against the typed
model as it is assembled) against the whole ``assemble`` and the whole ``commprof report``.

For each source, --reps times, the sources interleaved (machine-load drifts spread over all):

  in-process   summarize (load + analyse), assemble (of which: from_dict, the checked parse), the
               JSON renderer; wall and CPU time (this process's and its finished children's) of each
  command      ``python -m commprof report SOURCE -f json`` in a fresh process: wall and CPU time
               (user + system of the child); with --before CHECKOUT also the same command of that
               checkout (e.g. the code before the typed result, whose builder returned a dict and
               checked nothing), interleaved with this one

Medians are printed, with the parse's share of assemble and of the command (CPU).  With --widen
N..., also ``Report.from_dict`` of the demo's golden document (tests/golden/reports/demo.json) with
its rank rows and per-step rows repeated N times: CPU ms and MB of JSON per CPU second.

    python benchmarks/assemble_cost.py --reps 5 tests/golden/demo_run \\
        ../shared/gpu_traces/param_dlrm_v100_8ranks [--before /path/to/old/checkout]
    python benchmarks/assemble_cost.py --reps 5 --widen 1 64 1024
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    """Wall and CPU seconds (:func:`cpu_seconds`) of a block, added to ``into[name]``."""

    def __init__(self, into: dict, name: str):
        self.into, self.name = into, name

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def __exit__(self, *exc):
        self.into.setdefault(self.name, []).append(
            (time.perf_counter() - self.wall, cpu_seconds() - self.cpu))


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (a reduction's worker pool)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def in_process(source: str, warmup: int, into: dict) -> None:
    from commprof.analysis.outcome import assemble as assemble_mod
    from commprof.analysis.result.model import Report
    from commprof.cli.report import summarize_run
    from commprof.report.renderers import renderers

    original = Report.__dict__["from_dict"]
    parse_times: list = []

    def timed_from_dict(cls, doc, path="<report>"):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return original.__func__(cls, doc, path)
        finally:
            parse_times.append((time.perf_counter() - wall, time.process_time() - cpu))
    with Clock(into, "summarize"):
        summary = summarize_run(source, warmup)
    Report.from_dict = classmethod(timed_from_dict)
    try:
        with Clock(into, "assemble"):
            report = assemble_mod.assemble(summary)
    finally:
        Report.from_dict = original
    assert len(parse_times) == 1, parse_times
    into.setdefault("from_dict", []).append(parse_times[0])
    with Clock(into, "render json"):
        renderers()["json"].render(report)


def command(source: str, checkout: Path, into: dict, name: str) -> None:
    """``python -m commprof report SOURCE -f json`` of ``checkout`` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "commprof", "report", source, "-f", "json"],
                          capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{checkout}: commprof report {source}: exit {proc.returncode}: {proc.stderr}")
    json.loads(proc.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    into.setdefault(name, []).append((wall, cpu))


def widened(times: int) -> tuple[float, float]:
    """(MB of JSON, median CPU seconds of ``Report.from_dict``) of the demo's golden document with
    its rank rows and per-step rows repeated ``times`` times."""
    from commprof.analysis.result.model import Report
    doc = json.loads((ROOT / "tests" / "golden" / "reports" / "demo.json").read_text())
    doc["run"]["commprof_version"] = "0"  # the golden copies leave it out
    ranks = doc["ranks"]
    doc["ranks"] = [dict(ranks[i % len(ranks)], rank=i) for i in range(len(ranks) * times)]
    doc["steps"]["per_step"] = doc["steps"]["per_step"] * times
    cpu = []
    for _ in range(5):
        start = time.process_time()
        Report.from_dict(doc)
        cpu.append(time.process_time() - start)
    return len(json.dumps(doc)) / 1e6, statistics.median(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="*")
    ap.add_argument("--widen", nargs="+", type=int, default=[], metavar="N")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--before", type=Path, help="another checkout: its `commprof report` too")
    args = ap.parse_args()
    results: dict[str, dict] = {s: {} for s in args.sources}
    for rep in range(args.reps if args.sources else 0):
        for source in args.sources:
            runs = [lambda s=source: in_process(s, args.warmup, results[s]),
                    lambda s=source: command(s, ROOT, results[s], "command")]
            if args.before:
                runs.append(lambda s=source: command(s, args.before, results[s], "command (before)"))
            for run in (runs if rep % 2 == 0 else runs[::-1]):  # alternate the order too
                run()
        print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)
    for times in args.widen:
        mb, cpu = widened(times)
        print(f"from_dict, demo document x{times}: {mb:.2f} MB JSON, {cpu * 1e3:.1f} CPU ms, "
              f"{mb / cpu:.1f} MB/s")
    for source, res in results.items():
        print(f"\n{source}  (median of {args.reps}; wall ms / CPU ms)")
        med = {k: (statistics.median(w for w, _ in v) * 1e3, statistics.median(c for _, c in v) * 1e3)
               for k, v in res.items()}
        for name, (wall, cpu) in med.items():
            print(f"  {name:<18} {wall:9.1f} {cpu:9.1f}")
        parse = med["from_dict"][1]
        print(f"  from_dict share of assemble (CPU): {parse / med['assemble'][1]:.1%}; "
              f"of the command (CPU): {parse / med['command'][1]:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
