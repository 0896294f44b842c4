"""The cost per call of a whole ``commprof run``, timed by the job, against the report's own number.

A 1-rank gloo job times one block of --ops tiny blocking all_reduces after a warm-up, by wall
clock, by its main thread's CPU time (``time.thread_time_ns``) and by the whole process's CPU
time (``time.process_time_ns``: gloo's threads, commprof's flusher and callbacks included).  It
runs plain and under ``commprof run`` in several configurations that turn one part off at a time,
interleaved --reps times (the order rotates each repetition), so a load drift on this shared
machine lands on every configuration alike.  Each configuration's cost is the median over
repetitions of (its run - the same repetition's plain run); CPU time is what the load of other
processes moves least.

  plain        the job alone
  plain+fr     the job alone with the Flight Recorder on (``TORCH_FR_BUFFER_SIZE=2000``, which
               ``commprof run`` sets)
  run          ``commprof run --capture native`` as a user runs it (sampler at 10 Hz, FR on)
  run-nosamp   the same, ``--sample-hz 0`` (no link sampler in the launcher)
  run-nofr     the same, ``--no-gpu-timing`` (no Flight Recorder)
  run-off      ``run``, the job turns the kernel off (``set_enabled(False)``: the kernel stays
               registered, so the dispatcher still boxes each call into it) and restores torch's
               own ``Work.wait``: what remains is the registration's dispatch hop and the rest of
               the run (bootstrap, threads, launcher)

The report's self-reported cost per call (``overhead``: ``record_us_per_call`` +
``dispatch_us_per_call_estimate``) is read from each ``run`` capture and printed beside them.

``--inside-reps N`` first runs one ``commprof run`` job that times N interleaved rounds of blocks
in three states -- the kernel and the native ``Work.wait`` on, the kernel on with torch's own
``Work.wait``, both off -- in one process (the same threads, bootstrap and launcher in every
block, so only the kernel differs), with the kernel's own time per call (the counter the report
sums) read around each block: "CPU not in it" is the main-thread CPU the kernel adds that its own
clock does not see (summary.py's ``DISPATCH_NS_NATIVE_*`` constants).

    python benchmarks/run_cost.py --ops 3000 --reps 12 --inside-reps 31
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from native_states import free_port  # benchmarks/native_states.py

JOB = textwrap.dedent("""
    import os, sys, time, torch, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    n = int(sys.argv[2]); x = torch.ones(1)
    for _ in range(500):
        dist.all_reduce(x)
    if os.environ.get("BENCH_KERNEL") == "off":
        nat = sys.modules.get("commprof_native")
        if nat is None:
            sys.exit("not under commprof run --capture native")
        nat.set_enabled(False)
        w = torch.distributed.Work
        w.wait = getattr(w.wait, "__commprof_original__", w.wait)
    w0, t0, p0 = time.perf_counter_ns(), time.thread_time_ns(), time.process_time_ns()
    for _ in range(n):
        dist.all_reduce(x)
    w1, t1, p1 = time.perf_counter_ns(), time.thread_time_ns(), time.process_time_ns()
    print(f"RESULT {(w1 - w0) / n / 1e3:.4f} {(t1 - t0) / n / 1e3:.4f} {(p1 - p0) / n / 1e3:.4f}")
    dist.destroy_process_group()
""")

INSIDE = textwrap.dedent("""
    import os, sys, time, statistics, torch, torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    n, reps = int(sys.argv[2]), int(sys.argv[3])
    x = torch.ones(1)
    from commprof.capture import agent
    hooks, rec = agent._agent.collectives, agent._agent.rec
    nat, W = hooks.native, torch.distributed.Work
    native_wait = W.wait
    torch_wait = getattr(native_wait, "__commprof_original__", None)
    if torch_wait is None:
        sys.exit("not under commprof run --capture native")
    def own_ns():  # the kernel's cumulative own time (what the report sums), records moved as a flush does
        return nat.drain(rec.coll.append, rec.done.append, rec.wait.append)[2]
    def block(state):
        W.wait = native_wait if state == "on" else torch_wait
        nat.set_enabled(state != "off")
        s0 = own_ns()
        w0, t0 = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(n):
            dist.all_reduce(x)
        w1, t1 = time.perf_counter_ns(), time.thread_time_ns()
        return (w1 - w0) / n / 1e3, (t1 - t0) / n / 1e3, (own_ns() - s0) / n / 1e3
    for _ in range(500):
        dist.all_reduce(x)
    states = ["on", "kernel", "off"]  # kernel: the kernel on, torch's own Work.wait
    res = {k: [] for k in states}
    for i in range(reps):
        for k in states[i % 3:] + states[:i % 3]:
            res[k].append(block(k))
    W.wait, _ = native_wait, nat.set_enabled(True)
    for k in states:
        print("RESULT " + k + " " + " ".join(f"{v[0]:.4f},{v[1]:.4f},{v[2]:.4f}" for v in res[k]))
    dist.destroy_process_group()
""")

CONFIGS = {
    "plain": (None, {}),
    "plain+fr": (None, {"TORCH_FR_BUFFER_SIZE": "2000"}),
    "run": ([], {}),
    "run-nosamp": (["--sample-hz", "0"], {}),
    "run-nofr": (["--no-gpu-timing"], {}),
    "run-off": ([], {"BENCH_KERNEL": "off"}),
}
METRICS = ("wall", "thread CPU", "process CPU")


def run_one(job: Path, config: str, ops: int, out_dir: Path, pin: str | None = None
            ) -> tuple[list[float], float | None]:
    """([wall, main-thread CPU, process CPU] µs per call, the report's own µs per call or None).
    ``pin``: a CPU list for ``taskset -c`` (the job's threads only, not the launcher's)."""
    flags, extra = CONFIGS[config]
    env = {k: v for k, v in os.environ.items()
           if k not in ("TORCH_FR_BUFFER_SIZE", "TORCH_NCCL_TRACE_BUFFER_SIZE")}
    env.update(extra)
    cmd = [sys.executable, str(job), str(free_port()), str(ops)]
    if pin is not None:
        cmd = ["taskset", "-c", pin] + cmd
    if flags is not None:
        cmd = [sys.executable, "-m", "commprof", "run", "-q", "--capture", "native", *flags,
               "--out", str(out_dir), "--"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"{config}: the job failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    own = self_reported_us(out_dir) if flags is not None and "BENCH_KERNEL" not in extra else None
    return [float(v) for v in line.split()[1:]], own


def inside(ops: int, reps: int, pin: str | None) -> dict:
    """One ``commprof run`` job that times interleaved blocks with the kernel and the native
    ``Work.wait`` on and off: (on - off) per pair, and the kernel's own time per call in the
    ``on`` blocks (the number the report sums)."""
    with tempfile.TemporaryDirectory(prefix="commprof-runcost-") as d:
        job = Path(d) / "inside.py"
        job.write_text(INSIDE)
        cmd = [sys.executable, str(job), str(free_port()), str(ops), str(reps)]
        cmd = (["taskset", "-c", pin] if pin else []) + cmd
        proc = subprocess.run([sys.executable, "-m", "commprof", "run", "-q", "--capture", "native",
                               "--out", f"{d}/run", "--"] + cmd, capture_output=True, text=True, timeout=900)
    rows = {l.split()[1]: [tuple(map(float, v.split(","))) for v in l.split()[2:]]
            for l in proc.stdout.splitlines() if l.startswith("RESULT ")}
    if set(rows) != {"on", "kernel", "off"}:
        sys.exit(f"the inside job failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    med = statistics.median
    pairs = list(zip(rows["on"], rows["off"]))
    out = {"wall": med(a[0] - b[0] for a, b in pairs), "thread": med(a[1] - b[1] for a, b in pairs),
           "own": med(a[2] for a, _ in pairs), "off_wall": med(b[0] for _, b in pairs),
           "off_thread": med(b[1] for _, b in pairs),
           "kernel_thread": med(a[1] - b[1] for a, b in zip(rows["kernel"], rows["off"])),
           "kernel_own": med(a[2] for a in rows["kernel"])}
    print(f"inside one commprof run, {reps} interleaved pairs of {ops}-call blocks, kernel + native "
          f"Work.wait on vs off: added wall {out['wall']:+.2f} µs (off {out['off_wall']:.2f}), main-thread "
          f"CPU {out['thread']:+.2f} µs (off {out['off_thread']:.2f}); the kernel's own time "
          f"{out['own']:.2f} µs per call; CPU not in it {out['thread'] - out['own']:+.2f} µs. The kernel "
          f"alone (torch's Work.wait): CPU {out['kernel_thread']:+.2f} µs, own {out['kernel_own']:.2f} µs")
    return out


def self_reported_us(run_dir: Path) -> float | None:
    """The report's own cost per call (``overhead``) of that run."""
    from commprof.analysis.host.load import load_run
    from commprof.analysis.outcome.summary import summarize
    o = summarize(load_run(run_dir)).overhead
    if not o.get("calls"):
        return None
    return o["record_us_per_call"] + o["dispatch_us_per_call_estimate"]


def fast_placement(walls: dict[str, list[float]]) -> str:
    """The wall time of one process is bimodal here (where the scheduler puts the caller and
    gloo's thread: ~16 or ~50 µs per call, for a whole run): the medians of each configuration's
    runs within 1.5x of the fastest plain run, and how many there were."""
    limit = 1.5 * min(walls["plain"])
    fast = {c: [w for w in ws if w <= limit] for c, ws in walls.items()}
    base = statistics.median(fast["plain"])
    return "wall, fast placement only (runs <= 1.5x the fastest plain): " + ", ".join(
        f"{c} {statistics.median(ws):.2f} ({len(ws)} runs{'' if c == 'plain' else f', {statistics.median(ws) - base:+.2f}'})"
        for c, ws in fast.items() if ws)


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ops", type=int, default=5000, help="all_reduces timed per run")
    ap.add_argument("--reps", type=int, default=15, help="interleaved repetitions")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, plain first")
    ap.add_argument("--inside-reps", type=int, default=0,
                    help="also time N interleaved on/off block pairs inside one commprof run")
    ap.add_argument("--pin", default=None, help="run the job (not the launcher) on these CPUs "
                    "(taskset -c LIST): one CPU puts gloo's thread and the caller on one core")
    args = ap.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    if configs[0] != "plain" or any(c not in CONFIGS for c in configs):
        sys.exit(f"--configs: plain first, then any of {', '.join(CONFIGS)}")
    from commprof.cli.native import resolve
    if not resolve().get("ok"):
        sys.exit("native capture unavailable")
    if args.inside_reps:
        inside(args.ops, args.inside_reps, args.pin)
    res = {c: [] for c in configs}
    own: list[float] = []
    loads = [load()]
    with tempfile.TemporaryDirectory(prefix="commprof-runcost-") as d:
        job = Path(d) / "job.py"
        job.write_text(JOB)
        for i in range(args.reps):
            order = configs[i % len(configs):] + configs[:i % len(configs)]
            for c in order:
                values, mine = run_one(job, c, args.ops, Path(d) / f"{c}-{i}", args.pin)
                res[c].append(values)
                if mine is not None and c == "run":
                    own.append(mine)
            loads.append(load())
    report(res, own, args, loads)


def report(res: dict, own: list[float], args, loads: list[str]) -> None:
    med = statistics.median
    print(f"µs per tiny blocking all_reduce (1-rank gloo), {args.reps} interleaved repetitions of "
          f"{args.ops} calls{', job pinned to CPU ' + args.pin if args.pin else ''}; load average "
          f"(1/5/15 min) {loads[0]} at start, {loads[-1]} at end")
    print(f"{'config':12s}" + "".join(f"{m:>14s}{'added':>9s}{'[q1, q3]':>16s}" for m in METRICS))
    plain = res["plain"]
    added = {}
    for c, runs in res.items():
        cells = ""
        for k, _ in enumerate(METRICS):
            diffs = [r[k] - p[k] for r, p in zip(runs, plain)]
            q = statistics.quantiles(diffs, n=4) if len(diffs) > 1 else [diffs[0]] * 3
            added[(c, k)] = med(diffs)
            cells += (f"{med(r[k] for r in runs):14.2f}" + (f"{med(diffs):+9.2f}[{q[0]:+6.2f},{q[2]:+6.2f}]"
                      if c != "plain" else f"{'':9s}{'':16s}"))
        print(f"{c:12s}{cells}")
    for c, runs in res.items():
        print(f"  {c} wall: " + " ".join(f"{r[0]:.1f}" for r in runs))
    print(fast_placement({c: [r[0] for r in runs] for c, runs in res.items()}))
    if own:
        print(f"self-reported (report's overhead: recording + dispatch estimate), run: median "
              f"{med(own):.2f} µs per call [{min(own):.2f}-{max(own):.2f}]")
    if "run" in res and own:
        print(f"summary: commprof run adds {added[('run', 0)]:+.2f} µs wall, "
              f"{added[('run', 1)]:+.2f} µs main-thread CPU, {added[('run', 2)]:+.2f} µs process CPU "
              f"per call; the report says {med(own):.2f} µs; wall - self-reported = "
              f"{added[('run', 0)] - med(own):+.2f} µs")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
