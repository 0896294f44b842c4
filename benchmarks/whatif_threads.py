"""Why the what-if under-projected compression: intra-op threads oversubscribing the cores.

The DDP demo on the 2-"node" shaped veth lab (tests/netlab, needs root), ms per step as the job
itself prints it (no commprof), for the baseline (200 Mbit/s), the link at 400 Mbit/s, the fp16
compression hook and 4-step accumulation (per micro-batch), with OMP_NUM_THREADS unset (torch's
default: one thread per core, 2 per rank on a 2-core machine) and set to 1.

    python3 benchmarks/whatif_threads.py
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from netlab import Lab, netlab_available  # noqa: E402

DEMO = ROOT / "commprof" / "examples" / "demo_train.py"
STEPS = 50


def ms_per_step(rate: int, *args: str, threads: str | None) -> float:
    env = {"OMP_NUM_THREADS": threads} if threads else None
    with Lab(rate_mbit=rate) as lab:
        a, b = lab.torchrun_pair([str(DEMO), "--steps", str(STEPS), "--width", "512", *args],
                                 cwd="/tmp", timeout=300, env_a=env, env_b=env)
    seconds = float(re.findall(r"in ([\d.]+) s", a.stdout + b.stdout)[0])
    return seconds / STEPS * 1e3


def main() -> None:
    why = netlab_available()
    if why:
        sys.exit(f"whatif_threads: {why}")
    # the demo sets OMP_NUM_THREADS=1 itself unless the environment says otherwise: "2" here
    # stands for torch's default on this 2-core machine (what the demo ran with before)
    for threads in ("2", "1"):
        base = ms_per_step(200, threads=threads)
        rows = [base, ms_per_step(400, threads=threads),
                ms_per_step(200, "--compress", "fp16", threads=threads),
                ms_per_step(200, "--accumulate", "4", threads=threads) / 4]
        print(f"OMP_NUM_THREADS={threads}: base {rows[0]:.1f}, 400 Mbit/s {rows[1]:.1f}, "
              f"fp16 hook {rows[2]:.1f}, accumulate 4 {rows[3]:.1f} ms per (micro-)step", flush=True)


if __name__ == "__main__":
    main()
