"""What GPU windows cost the job, measured the way the capture measures it (docs/performance.md).

Without a GPU this runs the mechanism with the test hook ``COMMPROF_GPU_ACTIVITY=cpu`` (Kineto's
CPU activity instead of CUDA's) on the demo's DDP job (2 ranks, gloo): ``commprof run
--gpu-windows STEPS/EVERY@AFTER``, then reads every window's ``cost_ns`` from the captures (start =
Kineto prepare + enable, sync = the device sync before stopping (0 here), stop = disable,
export = the opt-in JSON, convert = Kineto events -> GPU records, on the flusher thread) and the
step times inside windows against the others.  Prints one table and a ``summary:`` line.

    python benchmarks/gpu_window_cost.py --steps 60 --windows 3/10@5 [--trace]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from commprof.analysis.host.load import load_run, open_run
from commprof.analysis.host.steps import step_windows

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "commprof" / "examples" / "demo_train.py"


def run(out: Path, steps: int, windows: str, trace: bool) -> None:
    cmd = [sys.executable, "-m", "commprof", "run", "--quiet", "--sample-hz", "0", "--out", str(out),
           "--gpu-windows", windows, *(["--gpu-trace"] if trace else []), "--",
           sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(DEMO), "--steps", str(steps)]
    env = dict(os.environ, COMMPROF_GPU_ACTIVITY="cpu")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        sys.exit(f"job failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--windows", default="3/10@5")
    ap.add_argument("--trace", action="store_true", help="also keep Kineto's JSON (--gpu-trace)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        run(out, args.steps, args.windows, args.trace)
        rows = []
        for rd in open_run(out).iter_ranks():
            w = rd.gpu_windows
            for rec in w[w["status"] == "recorded"].to_dict("records"):
                rows.append((rd.rank, rec["window"], rec["records"], rec["cost_ns"]))
        data = load_run(out)
        from commprof.format.reader import read_capture
        from commprof.format.layout import capture_paths
        phases = []
        for path in capture_paths(out):
            for e in read_capture(path).events:
                if e.get("type") == "gpu_window":
                    phases.append((e["window"], e["cost_ns"], e["stats"]["records"]))
        steps = step_windows(data.marks, data.spans)
        g = data.gpu_activity
        in_window = set(zip(g["rank"], g["step"]))
        steps["ms"] = (steps["t_end"] - steps["t_start"]) / 1e6
        steps["in_window"] = [(r, s) in in_window for r, s in zip(steps["rank"], steps["step"])]
        measured = steps[steps["step"] >= 2]
    print(f"{'window':>6} {'records':>8} {'start ms':>9} {'sync ms':>8} {'stop ms':>8} {'export ms':>10} "
          f"{'convert ms':>11} {'total ms':>9}")
    for win, cost, n in sorted(phases, key=lambda x: x[0]):
        c = {k: v / 1e6 for k, v in cost.items()}
        print(f"{win:>6} {n:>8} {c['start_ns']:>9.2f} {c['sync_ns']:>8.3f} {c['stop_ns']:>8.2f} "
              f"{c['export_ns']:>10.2f} {c['convert_ns']:>11.2f} {sum(c.values()):>9.2f}")
    later = [sum(c.values()) / 1e6 for w, c, _ in phases if w > 0]
    first = [sum(c.values()) / 1e6 for w, c, _ in phases if w == 0]
    per_record = [c["convert_ns"] / n / 1e3 for _, c, n in phases if n]
    inside = measured[measured["in_window"]]["ms"].median()
    outside = measured[~measured["in_window"]]["ms"].median()
    print(f"step time (median, ms): inside windows {inside:.1f}, outside {outside:.1f}")
    print(f"summary: first window {np.median(first):.1f} ms per rank, later windows "
          f"{np.median(later):.1f} ms (median), conversion {np.median(per_record):.2f} us per "
          f"record; steps inside windows {inside / outside:.2f}x the others")


if __name__ == "__main__":
    main()
